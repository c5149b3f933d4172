"""What a build removed, and which inputs are read again when the kept twin of a removed document goes.
A removed document is recorded with its input (position, kind, split, size, twin or tasks): `prepare info`
adds these up, and a later build reconsiders it when its twin is no longer kept."""

import collections

from prepare.dedup.methods import KINDS


class Removed:
    """Documents, tokens and bytes removed by a build so far, by kind (in the order first removed), and the
    contaminated documents by task: the manifest's `removed`."""

    def __init__(self):
        self.kinds, self.tasks = {}, collections.Counter()

    def add(self, kind, documents, tokens, size, tasks=()):
        totals = self.kinds.setdefault(kind, {"documents": 0, "tokens": 0, "bytes": 0})
        totals["documents"] += documents
        totals["tokens"] += int(tokens)
        totals["bytes"] += int(size)
        self.tasks.update(tasks)

    def merge(self, kinds, tasks):
        """Add the totals of another build's (a cluster task's) `kinds` and `tasks`."""
        for kind, totals in kinds.items():
            self.add(kind, totals["documents"], totals["tokens"], totals["bytes"])
        self.tasks.update(tasks)

    def documents(self, kind):
        return self.kinds.get(kind, {}).get("documents", 0)

    def to_json(self):
        return {**{k: dict(v) for k, v in self.kinds.items()}, "tasks": dict(sorted(self.tasks.items()))}


def removed_totals(records):
    """{kind: {documents, tokens, bytes}} and {task: documents} over the records' removed documents."""
    totals = {kind: {"documents": 0, "tokens": 0, "bytes": 0} for kind in KINDS}
    tasks = collections.Counter()
    for record in records:
        for doc in record.get("dedup", {}).get("removed", []):
            t = totals[doc["kind"]]
            t["documents"] += 1
            t["tokens"] += doc["tokens"]
            t["bytes"] += doc["bytes"]
            tasks.update(doc.get("tasks", []))
    return {**totals, "tasks": dict(sorted(tasks.items()))}


def stamp_of(record):
    """The stamp of the build that indexed an input's documents (None if not indexed)."""
    return (record or {}).get("dedup", {}).get("stamp")


def reconsidered(sources, retired):
    """Ids of inputs (of `sources`, not retired) with a document dropped as the twin of a document that is not
    kept any more: its input is in `retired` (changed or deleted by this build), or its record no longer
    carries the twin's stamp, or the twin was itself removed. Those inputs are read again: each of their
    documents is compared with what is kept now. Repeats until no more are found (a reconsidered input's
    documents may be twins too)."""
    retired, out = set(retired), []
    removed_at = {i: {d["at"] for d in r.get("dedup", {}).get("removed", [])} for i, r in sources.items()}
    while True:
        more = []
        for source_id, record in sources.items():
            if source_id in retired:
                continue
            for doc in record.get("dedup", {}).get("removed", []):
                twin = doc.get("twin")
                if twin is None:
                    continue
                twin_id, twin_stamp, twin_at = twin
                if twin_id in retired or stamp_of(sources.get(twin_id)) != twin_stamp or \
                        twin_at in removed_at.get(twin_id, ()):
                    more.append(source_id)
                    break
        if not more:
            return out
        out += more
        retired |= set(more)
