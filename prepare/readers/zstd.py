"""zstd-compressed JSONL (.jsonl.zst, .ndjson.zst) and text (any other .zst), as Dolma, RedPajama and the Pile
ship: decompressed as they are read, then read as the uncompressed format is. A compressed file that changed is
read again from its start, as a .jsonl.gz is: where its old records end is a place in the decompressed bytes,
reached only by decompressing all that comes before, so no resume offset is recorded."""

import io

import zstandard

from prepare.readers import jsonl, text
from prepare.readers.base import SourceError, open_regular

READ = 1 << 20  # compressed bytes read at a time


def read(path, opts, stats, warn, start=0, cut=None):
    try:
        with open_regular(path) as raw, io.BufferedReader(Decompressed(raw), READ) as f:
            if path.lower().endswith((".jsonl.zst", ".ndjson.zst")):
                yield from jsonl.records(f, path, opts, stats, warn, resumable=False)
            else:
                yield from text.documents(f, path, opts, stats, warn, cut)
    except (OSError, EOFError, zstandard.ZstdError) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None


class Decompressed(io.RawIOBase):
    """The bytes of every zstd frame of the file `compressed`, in turn. A file that ends inside a frame is an
    EOFError, as a truncated .gz is (zstandard's own stream reader ends there silently)."""

    def __init__(self, compressed):
        self.compressed, self.frame, self.out, self.at = compressed, None, memoryview(b""), 0

    def readable(self):
        return True

    def readinto(self, buffer):
        while self.at == len(self.out):
            data = self.compressed.read(READ)
            if not data:
                if self.frame is not None and not self.frame.eof:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return 0
            self.out, self.at = memoryview(self.decompress(data)), 0
        size = min(len(buffer), len(self.out) - self.at)
        buffer[:size] = self.out[self.at : self.at + size]
        self.at += size
        return size

    def decompress(self, data):
        out = []
        while data:
            if self.frame is None or self.frame.eof:
                self.frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(self.frame.decompress(data))
            data = self.frame.unused_data if self.frame.eof else b""
        return b"".join(out)
