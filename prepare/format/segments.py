"""Source segments: the per-input records (identity, counts and the ranges of its documents), prepare's own
bookkeeping. A commit appends one immutable segment holding only the records it changed, so writing a manifest
costs what changed, not the size of the dataset; later records replace earlier ones."""

import json
import os

from prepare.format.durable import write_atomic
from prepare.format.layout import SOURCES, DatasetError
from prepare.format.manifest import Extent


def read_segment(data_dir, name):
    path = os.path.join(data_dir, SOURCES, name)
    try:
        with open(path) as f:
            return [json.loads(line) for line in f]
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"{path}: unreadable source segment ({e}); rebuild with --rebuild") from None


def write_segment(data_dir, name, records):
    """An immutable segment of source records (a record {"id": ..., "deleted": true} removes an input)."""
    os.makedirs(os.path.join(data_dir, SOURCES), exist_ok=True)
    path = os.path.join(data_dir, SOURCES, name)
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


def read_sources(data_dir, manifest):
    """id -> record of every live input: the segments in order, later records replacing earlier ones."""
    sources = {}
    for name, _ in manifest.segments if manifest else []:
        for record in read_segment(data_dir, name):
            if record.get("deleted"):
                sources.pop(record["id"], None)
            else:
                sources[record["id"]] = record
    return sources


def added_extents(data_dir, old, new, split="train"):
    """The token ranges of `split` that generation manifest `new` has and `old` had not (Extents in `new`'s
    files): every range of an input that is new or whose content changed, less the ranges it kept (a JSONL
    file that grew keeps its earlier records'). An unchanged input adds nothing, even if compaction moved it."""
    before, added = read_sources(data_dir, old), []
    for source_id, record in read_sources(data_dir, new).items():
        was = before.get(source_id)
        if was and all(was.get(k) == record.get(k) for k in ("sha256", "blob_id", "max_tokens")):
            continue
        kept = was["ranges"] if was else []
        added += [Extent(*r[1:]) for r in record["ranges"] if r[0] == split and r not in kept]
    return added
