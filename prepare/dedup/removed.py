"""What a build removed, and which inputs are read again when the kept twin of a removed document goes.
A removed document is recorded with its input (position, kind, split, size, twin or tasks): `prepare info`
adds these up, and a later build reconsiders it when its twin is no longer kept."""

import collections

from prepare.dedup.methods import KINDS


class Removed:
    """Documents, tokens and bytes removed by a build so far, by kind (in the order first removed), the
    contaminated documents by task, the filtered ones by rule and by language, and the addresses redacted in the
    documents read: the manifest's `removed`."""

    def __init__(self):
        self.kinds, self.tasks = {}, collections.Counter()
        self.rules, self.languages, self.redactions = {}, {}, collections.Counter()

    def add(self, kind, documents, tokens, size, tasks=(), rule=None, language=None):
        for table, key in ((self.kinds, kind), (self.rules, rule), (self.languages, language)):
            if key is not None:
                tally(table, key, documents, tokens, size)
        self.tasks.update(tasks)

    def redacted(self, counts, kinds):
        """Addresses redacted in documents read: `counts` (documents, kinds)."""
        self.redactions.update(dict(zip(kinds, map(int, counts.sum(axis=0)))))

    def merge(self, kinds, tasks, by=None):
        """Add the totals of another build's (a cluster task's) `kinds` and `tasks`, and `by` (its to_json's
        rules, languages and redacted)."""
        self.tasks.update(tasks)
        for table, given in ((self.kinds, kinds), (self.rules, (by or {}).get("rules", {})),
                             (self.languages, (by or {}).get("languages", {}))):
            for key, totals in given.items():
                tally(table, key, totals["documents"], totals["tokens"], totals["bytes"])
        self.redactions.update((by or {}).get("redacted", {}))

    def documents(self, kind):
        return self.kinds.get(kind, {}).get("documents", 0)

    def to_json(self):
        by = {"rules": self.rules, "languages": self.languages, "redacted": self.redactions}
        return {**{k: dict(v) for k, v in self.kinds.items()}, "tasks": dict(sorted(self.tasks.items())),
                **{k: dict(sorted(v.items())) for k, v in by.items() if v}}


def tally(table, key, documents, tokens, size):
    """Add documents, tokens and bytes to table[key]'s totals."""
    totals = table.setdefault(key, {"documents": 0, "tokens": 0, "bytes": 0})
    totals["documents"] += documents
    totals["tokens"] += int(tokens)
    totals["bytes"] += int(size)


def removed_totals(records):
    """What the records' removed documents add up to, as Removed.to_json gives it: {kind: {documents, tokens,
    bytes}} (every kind), {task: documents}, and where documents were filtered or redacted, the totals by rule
    and by language and the addresses redacted."""
    removed = Removed()
    for kind in KINDS:
        removed.add(kind, 0, 0, 0)
    for record in records:
        for doc in record.get("dedup", {}).get("removed", []):
            removed.add(doc["kind"], 1, doc["tokens"], doc["bytes"], doc.get("tasks", []), doc.get("rule"),
                        doc.get("language"))
        removed.redactions.update(record.get("dedup", {}).get("redacted", {}))
    return removed.to_json()


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
