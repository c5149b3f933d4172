"""Token files being written: one split's documents appended into new files of at most --shard-tokens
tokens, whole documents only, each made durable and renamed into place when it closes. A file's checksum and
largest id are taken of its bytes as they are written (read back only when a document was taken back)."""

import contextlib
import hashlib
import os

import numpy as np

from prepare import format as fmt


class FileWriter:
    """Writes one split's documents into new token files of at most `file_tokens` tokens, whole documents
    only, and says where each input's documents went."""

    def __init__(self, data_dir, split, run_id, file_tokens, dtype):
        self.data_dir, self.split, self.run_id = data_dir, split, run_id
        self.file_tokens, self.dtype = file_tokens, np.dtype(dtype)
        self.index, self.file, self.closed = 0, None, []  # closed: TokenFiles made durable since the last take

    def _open(self):
        self.name = fmt.token_file_name(self.split, self.run_id, self.index)
        self.tmp = fmt.token_path(self.data_dir, self.name) + fmt.TMP_SUFFIX
        self.file = open(self.tmp, "wb")
        self.tokens = 0
        self.last_doc = None  # (start, length, owner) for pop_last_document
        self.digest, self.max_token = hashlib.sha256(), 0  # of the bytes written (no digest: some were taken back)

    def _write(self, tokens):
        with fmt.naming(self.tmp):
            self.file.write(tokens.data)
        if self.digest is not None and len(tokens):
            self.digest.update(tokens.data)
            self.max_token = max(self.max_token, int(tokens.max()))

    def append(self, tokens, lengths, owners):
        """Write documents; returns the ranges they fill: [(owner, file, start, end)], one per run of the
        same owner in one file."""
        ranges = []
        ends = np.cumsum(lengths)
        doc, pos = 0, 0
        while doc < len(lengths):
            if self.file is None:
                self._open()
            fits = int(np.searchsorted(ends[doc:] - pos, self.file_tokens - self.tokens, side="right"))
            if fits == 0 and self.tokens:
                self.close()
                continue
            fits = max(fits, 1)  # a document longer than a file gets a file of its own
            end = int(ends[doc + fits - 1])
            self._write(tokens[pos:end])
            at = self.tokens
            for d in range(doc, doc + fits):
                owner, length = int(owners[d]), int(lengths[d])
                if ranges and ranges[-1][0] == owner and ranges[-1][1] == self.name and ranges[-1][3] == at:
                    ranges[-1][3] = at + length
                else:
                    ranges.append([owner, self.name, at, at + length])
                at += length
            self.tokens = at
            last = doc + fits - 1
            self.last_doc = (at - int(lengths[last]), int(lengths[last]), int(owners[last]))
            doc, pos = doc + fits, end
        return ranges

    def pop_last_document(self, keep=0):
        """Take back the last document written to the open file, but for its first `keep` tokens, which stay:
        (tokens taken, owner, file, start of the document), or None."""
        if self.file is None or self.last_doc is None:
            return None
        start, length, owner = self.last_doc
        self.file.flush()
        at = (start + keep) * self.dtype.itemsize
        tokens = np.fromfile(self.tmp, self.dtype, count=length - keep, offset=at)
        self.file.truncate(at)
        self.file.seek(at)
        self.digest = None
        self.tokens -= length - keep
        self.last_doc = (start, keep, owner) if keep else None
        return tokens, owner, self.name, start

    # A document written in parts as they are tokenized, its length and split known at its end: it gets a file
    # of its own, which stays this writer's open file, or becomes the other split's.

    def begin_document(self):
        if self.file is not None and self.tokens:
            self.close()
        if self.file is None:
            self._open()

    def write_part(self, tokens):
        self._write(tokens)
        self.tokens += len(tokens)

    def drop_document(self):
        self.file.truncate(0)
        self.file.seek(0)
        self.tokens, self.digest, self.max_token = 0, hashlib.sha256(), 0

    def end_document(self, writer, owner):
        """The document ends, in `writer` (this one, or the other split's). Returns (file, start, end)."""
        length = self.tokens
        if writer is not self:
            handle, tmp, digest, max_token = self.file, self.tmp, self.digest, self.max_token
            self.file, self.tokens = None, 0  # its name was never published: this writer's next file takes it again
            if writer.file is not None:
                writer.close()
            writer.name = fmt.token_file_name(writer.split, writer.run_id, writer.index)
            writer.tmp = fmt.token_path(writer.data_dir, writer.name) + fmt.TMP_SUFFIX
            os.rename(tmp, writer.tmp)
            writer.file, writer.tokens, writer.digest, writer.max_token = handle, length, digest, max_token
        writer.last_doc = (0, length, owner)
        return writer.name, 0, length

    def close(self):
        """Make the open file durable and visible under its final name."""
        with fmt.naming(self.tmp):
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        self.file = None
        if not self.tokens:
            os.remove(self.tmp)
            return
        digest, max_token = self.digest, self.max_token
        if digest is None:  # a document was taken back: read once more, in bounded chunks (not mapped: a huge file)
            digest, max_token = hashlib.sha256(), 0
            with open(self.tmp, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    max_token = max(max_token, int(np.frombuffer(chunk, self.dtype).max()))
        self.closed.append(fmt.TokenFile(self.name, self.split, self.tokens, digest.hexdigest(), max_token))
        os.replace(self.tmp, fmt.token_path(self.data_dir, self.name))
        self.index += 1

    def take_closed(self):
        """Close the open file and hand over every file closed since the last call."""
        if self.file is not None:
            self.close()
        closed, self.closed = self.closed, []
        return closed

    def discard(self):
        """Remove the open file and every closed file not yet handed over: they are named by no manifest."""
        if self.file is not None:
            with contextlib.suppress(OSError):  # its buffer cannot be written (a full disk): the file goes anyway
                self.file.close()
            os.remove(self.tmp)
            self.file = None
        for f in self.closed:
            os.remove(fmt.token_path(self.data_dir, f.name))
        self.closed = []
