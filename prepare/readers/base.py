"""What every reader shares: the error a bad input raises, opening regular files only, the counts an input's
reading keeps (a SourceStats, passed in), UTF-8 decoding that counts what it replaces, a record's text field,
and the Part a long text document comes in."""

import codecs
import os
import stat


class SourceError(Exception):
    """Bad input named by the message; prepare stops and leaves the output as it was."""


class SourceStats:
    """What one input yielded besides documents: skipped empties, bad records, replaced bytes, and where its
    last document starts (byte offset) when the format allows reading on from there."""

    def __init__(self):
        self.empty = 0
        self.bad_records = 0
        self.invalid_utf8 = 0
        self.binary = False
        self.last_document_at = None


class Part(str):
    """A piece of a document too long to hold whole (a one-document text file): it continues the Part before
    it if `continued`, and the document goes on in the next one while `more`. Whether the document is empty
    is known at its end, by its reader."""

    def __new__(cls, text, continued, more):
        part = super().__new__(cls, text)
        part.continued, part.more = continued, more
        return part


def special_kind(mode):
    """What a file that is not a regular file is (reading a FIFO, socket or device could block or never end)."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a file"


def open_regular(path):
    """A regular file (or a symlink to one) opened for reading in binary; a SourceError for anything else. The
    open itself cannot block: a FIFO is opened non-blocking, then refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SourceError(f"{path}: not a regular file ({special_kind(mode)}); prepare reads regular files only")
    return os.fdopen(fd, "rb")


class Utf8Decoder:
    """UTF-8 in pieces (an incomplete character at a piece's end waits for the next): under --strict invalid
    bytes raise UnicodeDecodeError; otherwise each invalid sequence becomes one U+FFFD, as errors="replace"
    makes it, and its bytes are counted in `stats.invalid_utf8`."""

    def __init__(self, stats, strict):
        self.stats, self.strict, self.pending = stats, strict, b""

    def decode(self, data, final=False):
        data = self.pending + data
        try:
            text, used = codecs.utf_8_decode(data, "strict", final)
        except UnicodeDecodeError:
            if self.strict:
                raise
            text, used = self.replaced(memoryview(data), final)
        self.pending = data[used:]
        return text

    def replaced(self, data, final):
        """(text, bytes used) of `data`, each invalid sequence replaced and counted."""
        pieces, at = [], 0
        while True:
            try:
                text, used = codecs.utf_8_decode(data[at:], "strict", final)
            except UnicodeDecodeError as e:
                pieces += [codecs.utf_8_decode(data[at : at + e.start], "strict", True)[0], "\ufffd"]
                self.stats.invalid_utf8 += e.end - e.start
                at += e.end
                continue
            return "".join(pieces) + text, at + used


def warn_invalid_utf8(path, stats, warn):
    if stats.invalid_utf8:
        warn(f"{path}: {stats.invalid_utf8} bytes of invalid UTF-8 replaced with U+FFFD (--strict to fail instead)")


def record_text(record, field, where, opts, stats):
    """The text field of one record, or None (counted) for a bad record under --skip-bad-records."""
    if isinstance(record, dict) and isinstance(record.get(field), str):
        return record[field]
    if not isinstance(record, dict):
        problem = f"record is a {type(record).__name__}, not an object"
    elif field not in record:
        problem = f"no field {field!r} (fields: {', '.join(map(str, record)) or 'none'}); choose one with --text-field"
    else:
        problem = f"field {field!r} is {type(record[field]).__name__}, not a string"
    if opts["skip_bad_records"]:
        stats.bad_records += 1
        return None
    raise SourceError(f"{where}: {problem} (--skip-bad-records to skip such records)")
