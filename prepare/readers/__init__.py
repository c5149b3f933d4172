"""The documents each input yields, one file per format: a reader is a function
`read(path, opts, stats, warn, start=0, cut=None)` that yields the document strings of one file, counts in
`stats` (a SourceStats) what it skips, and raises SourceError on bad input. `start` is the byte offset to read
a grown file from (only a reader that records `stats.last_document_at` is given one); `cut` is where a long
document may be cut (text readers yield such a document in Parts).

A new format is one file here and one line in FORMATS.
"""

import contextlib
import hashlib
import io

from prepare.readers import bucket, hub, jsonl, parquet, save_to_disk, text, zstd
from prepare.readers.base import Part, SourceError, open_regular

# format (recorded with each input) -> (how a file's name ends, lowercased; its reader). A file that matches
# none of them is text.
FORMATS = {
    "jsonl": ((".jsonl", ".jsonl.gz", ".ndjson"), jsonl.read),
    "parquet": ((".parquet",), parquet.read),
    "zstd": ((".zst",), zstd.read),
    "text": ((), text.read),
}


def format_of(path):
    name = path.lower()
    return next((kind for kind, (endings, _) in FORMATS.items() if endings and name.endswith(endings)), "text")


def iter_documents(source, opts, stats, warn, start=0, cut=None):
    """Yield the document strings of one input (an identity dict of prepare/sources.py), skipping empty ones;
    raise SourceError on bad input."""
    with local_file(source) as path:
        if source["kind"] == "disk":  # a save_to_disk directory, not a file: one split of it
            docs = save_to_disk.read_split(path, source["split"], opts, stats)
        else:
            docs = FORMATS[source["format"]][1](path, opts, stats, warn, start, cut)
        yield from not_blank(docs, stats)


def hashed_text_file(source, opts, stats, warn):
    """(the sha256 of its bytes, its documents) of a local text file small enough to read whole, from one read
    of it: a worker that both hashes and reads a file it tokenizes reads it once (prepare/workers.py)."""
    try:
        with open_regular(source["path"]) as f:
            data = f.read()
    except OSError as e:
        raise SourceError(f"{source['path']}: cannot read ({e.strerror})") from None
    return hashlib.sha256(data).hexdigest(), not_blank(text.documents(io.BytesIO(data), source["path"], opts, stats,
                                                                          warn), stats)


def not_blank(docs, stats):
    """The documents that are not empty nor whitespace only (counted in `stats`)."""
    for doc in docs:
        if isinstance(doc, Part) or doc and not doc.isspace():  # strip() would copy the document
            yield doc
        else:
            stats.empty += 1


def local_file(source):
    """A context giving the local path an input is read from: its own, a Hub file's copy in Hugging Face's
    cache, or a bucket object's temporary copy (removed when done)."""
    if source["kind"] == "object":
        return bucket.local_copy(source)
    return contextlib.nullcontext(hub.local_copy(source) if source["kind"] == "hub_file" else source["path"])
