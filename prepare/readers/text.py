"""Text files (plain text, markdown, code, anything not named as another format): one document per file, or
the pieces between separator lines (--doc-sep). A file with NUL bytes near its start is binary: skipped."""

import re

from prepare.readers.base import Part, SourceError, Utf8Decoder, open_regular, warn_invalid_utf8

TEXT_CHUNK = 4 << 20
PART_CHARS = 1 << 20  # a one-document text file is tokenized in parts of about this many characters (see Part)
BINARY_PROBE = 8192


def read(path, opts, stats, warn, start=0, cut=None):
    """The documents of a text file. `cut(text)`: where a long document may be cut (an index, or -1 for
    nowhere); given, a one-document file longer than PART_CHARS comes in Parts."""
    with open_regular(path) as f:
        yield from documents(f, path, opts, stats, warn, cut)


def documents(f, path, opts, stats, warn, cut=None):
    """The documents of the text in the binary stream `f` (a file, or one being decompressed) named `path`."""
    head = f.read(BINARY_PROBE)
    if b"\0" in head:
        stats.binary = True
        warn(f"{path}: binary file (NUL bytes), skipped")
        return
    texts = decoded(chunks(f, head), path, Utf8Decoder(stats, opts["strict"]))
    pattern = separator_pattern(opts["doc_sep"])
    yield from whole(texts, cut) if pattern is None else separated(texts, pattern)
    warn_invalid_utf8(path, stats, warn)


def chunks(f, head):
    """The bytes of `f` in TEXT_CHUNK pieces from its start, `head` (its first bytes) already read, then b""."""
    while True:
        if len(head) < TEXT_CHUNK:
            chunk, head = head + f.read(TEXT_CHUNK - len(head)), b""
        else:
            chunk, head = head[:TEXT_CHUNK], head[TEXT_CHUNK:]
        yield chunk
        if not chunk:
            return


def decoded(chunks, path, decoder):
    """(text, whether it is the last) of each chunk, decoded as UTF-8."""
    offset = 0
    for chunk in chunks:
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise SourceError(f"{path}: invalid UTF-8 at byte {offset + e.start} (--strict)") from None
        offset += len(chunk)
        yield text, not chunk


def whole(texts, cut):
    """The text as one document; given `cut`, a long one in Parts, each cut where `cut` allows."""
    pieces, parted = [], False
    for text, _ in texts:
        pieces.append(text)
        if cut and sum(map(len, pieces)) >= PART_CHARS:  # a long document: on in parts, where it may be cut
            pending = "".join(pieces)
            while len(pending) >= PART_CHARS and ((at := cut(pending[:PART_CHARS])) > 0 or (at := cut(pending)) > 0):
                yield Part(pending[:at], continued=parted, more=True)
                parted = True
                pending = pending[at:]
            pieces = [pending]
    yield Part("".join(pieces), continued=True, more=False) if parted else "".join(pieces)


def separated(texts, pattern):
    """The pieces of the text between separators. Only complete lines are split, so a separator is never cut
    by a chunk boundary."""
    carry = ""
    for text, last in texts:
        buffer = carry + text
        end = len(buffer) if last else buffer.rfind("\n") + 1
        pieces = pattern.split(buffer[:end])
        yield from (p.strip() for p in pieces[:-1])
        carry = pieces[-1] + buffer[end:]
    yield carry.strip()


def separator_pattern(doc_sep):
    """None: each file is one document. 'blank': split on blank lines. Else: split on lines equal to it."""
    if doc_sep is None:
        return None
    if doc_sep == "blank":
        return re.compile(r"\n(?:[ \t\r]*\n)+")
    return re.compile(r"(?:^|\n)[ \t]*" + re.escape(doc_sep) + r"[ \t\r]*(?:\n|$)", re.MULTILINE)
