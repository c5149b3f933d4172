"""The documents each input yields, one file per format: a reader is a function
`read(path, opts, stats, warn, start=0, cut=None)` that yields the document strings of one file, counts in
`stats` (a SourceStats) what it skips, and raises SourceError on bad input. `start` is the byte offset to read
a grown file from (only a reader that records `stats.last_document_at` is given one); `cut` is where a long
document may be cut (text readers yield such a document in Parts).

A new format is one file here and one line in FORMATS.
"""

import contextlib

from prepare.readers import bucket, hub, jsonl, parquet, save_to_disk, text, zstd
from prepare.readers.base import Part

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
