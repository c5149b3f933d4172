"""--dedup across a cluster job's tasks. Each task compares its documents with the dataset's only, and hands the
commit where each one it kept went with its features (its placements); the commit compares them with each other
in input order and drops, as one build would, those that repeat a document kept before them, in another task or
the same one."""

import os

import numpy as np

from prepare import format as fmt
from prepare.dedup.removed import stamp_of
from prepare.records import ranges_without
from prepare.screening import Features

SUFFIX = ".dedup.npz"  # beside task-<i>.json: the features of its placements, one array each


def write_placements(result_path, placements):
    """A task's placements (documents, features by name): the features in task-<i>.dedup.npz, the rest returned
    for its result: [input id, position, split, file, start, end, bytes] each. None without --dedup."""
    if placements is None:
        return None
    documents, features = placements
    path = result_path[: -len(".json")] + SUFFIX
    with open(path + fmt.TMP_SUFFIX, "wb") as f:
        np.savez(f, **features)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + fmt.TMP_SUFFIX, path)
    return {"file": os.path.basename(path), "documents": documents}


def read_placements(job, results):
    """Every task's placements, in input order: (documents, Features)."""
    documents, chunks = [], []
    for r in results:
        if r.get("placements"):
            with np.load(os.path.join(job, r["placements"]["file"])) as arrays:
                chunks.append({k: arrays[k] for k in arrays.files})
            documents += r["placements"]["documents"]
    if not documents:
        return [], None
    order = sorted(range(len(documents)), key=lambda k: (documents[k][0], documents[k][1]))
    arrays = {k: np.concatenate([c[k] for c in chunks])[order] for k in chunks[0]}
    sizes = np.array([documents[k][6] for k in order], np.int64)
    return [documents[k] for k in order], Features(arrays.pop("exact"), arrays, np.zeros(len(order), np.int64), sizes)


def resolve_duplicates(job, builder, results):
    """Drop the documents of the tasks that repeat one kept earlier in input order: their ranges are retired and
    their inputs' records say why. The kept ones become the commit's index part."""
    documents, features = read_placements(job, results)
    if not documents:
        return
    screening = builder.screening
    stamps = [stamp_of(builder.sources[d[0]]) for d in documents]
    ids, positions = [d[0] for d in documents], [d[1] for d in documents]
    for doc, found in zip(documents, screening.index.decide(features, ids, positions, stamps)):
        if found is None:
            continue
        source_id, position, split, file, start, end, size = doc
        kind, twin, jaccard = found
        record = builder.sources[source_id]
        removed = {"at": position, "kind": kind, "split": split, "tokens": end - start, "bytes": size, "twin": twin,
                   "jaccard": round(jaccard, 4)}
        record = {**record, "documents": {**record["documents"], split: record["documents"][split] - 1},
                  "tokens": {**record["tokens"], split: record["tokens"][split] - (end - start)},
                  "ranges": ranges_without(record["ranges"], [split, file, start, end]),
                  "dedup": {**record["dedup"], "removed": sorted(record["dedup"]["removed"] + [removed],
                                                                 key=lambda d: d["at"])}}
        builder.record(record)
        builder.retire_ranges([[split, file, start, end]])
        screening.removed.add(kind, 1, end - start, size)
