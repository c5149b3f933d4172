"""The index of the documents a build keeps, which each new document is compared with (--dedup). Documents are
compared in input order (inputs sorted by identity, documents in file order) and the earlier copy stays, whatever
its split. The index is immutable parts in the dataset directory (index/, laid out as prepare/format/index_parts.py
says), named by each generation's manifest, and the rows kept since the build's last commit, in memory. A row is
live while its input's record carries the stamp of the build that indexed it: an input changed or deleted is out
of the index at once, and never matches its new version."""

import dataclasses

import numpy as np

from prepare import format as fmt
from prepare.dedup.methods import COMPARISONS
from prepare.dedup.removed import stamp_of

# A part's arrays, in the order they lie in its file: per row its input (an index into the part's inputs),
# position in the input and exact key (n, 2); each method's feature and lookup arrays (empty where the build does
# not use it); the exact keys' first halves sorted, with their rows.
ARRAYS = ("refs", "positions", "exact", *(a for m in COMPARISONS for a in (m.feature, *m.arrays)),
          "exact_sorted", "exact_rows")


@dataclasses.dataclass
class Part:
    """An index part, its arrays memory-mapped (a lookup reads the pages it touches)."""

    name: str
    inputs: list  # [input id, stamp] of its rows
    arrays: dict
    live: np.ndarray  # per input: still indexed (against the records in force)

    def live_rows(self, rows):
        return self.live[np.asarray(self.arrays["refs"])[rows]]


def open_part(data_dir, name, sources):
    inputs, arrays = fmt.open_index_part(data_dir, name, ARRAYS)
    return Part(name, inputs, arrays, np.array([stamp_of(sources.get(i)) == s for i, s in inputs], bool))


class Index:
    """The kept documents a build compares new ones with: the dataset's parts (live rows only) and those kept
    since the build began (in memory, until a commit writes them as a part). `method`: the --dedup method's
    comparison beyond the exact key (methods.py), or None."""

    def __init__(self, data_dir, parts, sources, stamp, method, own_lookup=True):
        self.data_dir, self.stamp, self.method, self.own_lookup = data_dir, stamp, method, own_lookup
        # Rows kept by this build not yet in a part: (input id, position, exact key, feature, stamp).
        self.rows, self.waiting, self.next_part = [], [], 0
        self.reopen(parts, sources)

    def reopen(self, parts, sources):
        """Look up the dataset's documents in `parts` (the index in force, with this build's committed rows), and
        keep in memory only the rows not in a part yet: memory holds what the build kept since its last commit."""
        self.parts = [open_part(self.data_dir, name, sources) for name, _ in parts]
        rows, self.rows, self.waiting = [self.rows[r] for r in self.waiting], [], []
        self.by_exact, self.memory = {}, self.method.memory() if self.method else None
        for row in rows:
            self.add(*row)

    def decide(self, feats, owners, positions, stamps=None):
        """For each document in order: None to keep it (it joins the index), or (kind, twin, jaccard), twin being
        [input id, stamp, position] of the kept copy. `stamps`: each document's, if not this build's."""
        values = feats.values[self.method.feature] if self.method else [None] * len(owners)
        keys = self.method.keys(values) if self.method else [None] * len(owners)
        twins = self.in_parts(feats.exact, values, keys)
        out = []
        for k in range(len(owners)):
            found = twins[k]
            if self.own_lookup:  # a cluster task leaves its own documents to the commit
                found = self.in_memory(found, feats.exact[k], values[k], keys[k])
                if found is None:
                    stamp = stamps[k] if stamps is not None else self.stamp
                    self.add(owners[k], positions[k], feats.exact[k], values[k], stamp, keys[k])
            out.append(found)
        return out

    def in_parts(self, exact, values, keys):
        """For each document, its best live twin in the dataset's parts, or None: an exact twin first."""
        found = [None] * len(exact)
        for part in self.parts:
            exact_in_part(part, exact, found)
            if self.method is None:
                continue
            for q, row, score in self.method.in_part(part, values, keys):
                if found[q] is None or found[q][0] == self.method.name:
                    ref = int(part.arrays["refs"][row])
                    twin = [*part.inputs[ref], int(part.arrays["positions"][row])]
                    found[q] = better(found[q], (self.method.name, twin, score), self.method.threshold)
        return found

    def in_memory(self, found, exact, value, keys):
        """`found` or a better twin among the rows this build kept and no part holds yet."""
        if found is None or found[0] != "exact":
            r = self.by_exact.get(exact.tobytes())
            if r is not None:
                return ("exact", self.twin(r), 1.0)
        if self.method is not None and (found is None or found[0] == self.method.name):
            for r, score in self.memory.find(value, keys):
                found = better(found, (self.method.name, self.twin(r), score), self.method.threshold)
        return found

    def twin(self, r):
        input_id, position, _, _, stamp = self.rows[r]
        return [input_id, stamp, position]

    def add(self, input_id, position, exact, value, stamp, keys=None):
        r = len(self.rows)
        self.rows.append((input_id, int(position), exact, value, stamp))
        self.waiting.append(r)
        self.by_exact.setdefault(exact.tobytes(), r)
        if self.method is not None:
            self.memory.add(r, value, self.method.keys(value[None])[0] if keys is None else keys)

    def commit(self, parts, finished, sources, run_id):
        """The index parts in force once the rows kept for the inputs `finished` (recorded by this commit) are a
        part of `parts`; rows of an input still being read wait for the next commit."""
        taken = [r for r in self.waiting if self.rows[r][0] in finished]
        if not taken:
            return parts
        self.waiting = [r for r in self.waiting if self.rows[r][0] not in finished]
        name = fmt.index_part_name(run_id, self.next_part)
        self.next_part += 1
        self.write_part(name, [self.rows[r] for r in taken])
        parts = self.merge(parts + [[name, len(taken)]], sources, run_id)
        self.reopen(parts, sources)
        return parts

    def write_part(self, name, rows):
        """An index part of `rows` ((input id, position, exact key, feature, stamp))."""
        inputs = list(dict.fromkeys((r[0], r[4]) for r in rows))
        ref = {i: k for k, i in enumerate(inputs)}
        refs = np.array([ref[r[0], r[4]] for r in rows], np.int32)
        positions = np.array([r[1] for r in rows], np.int64)
        exact = np.stack([r[2] for r in rows]).astype(np.uint64)
        values = {self.method.feature: np.stack([r[3] for r in rows])} if self.method else {}
        write_arrays(self.data_dir, name, [list(i) for i in inputs], refs, positions, exact, values)

    def merge(self, parts, sources, run_id):
        """Merge the two newest parts while the newer has as many rows as the older (a binary counter, as for
        source segments), keeping only live rows. Returns the parts."""
        parts = [list(p) for p in parts]
        while len(parts) >= 2 and parts[-1][1] >= parts[-2][1]:
            inputs, rows = [], {name: [] for name in ("refs", "positions", "exact", *(m.feature for m in COMPARISONS))}
            for name, _ in parts[-2:]:
                part = open_part(self.data_dir, name, sources)
                keep = part.live_rows(slice(None))
                remap = np.cumsum(part.live) - 1 + len(inputs)
                inputs += [p for p, alive in zip(part.inputs, part.live) if alive]
                for key, kept in rows.items():
                    kept.append(np.asarray(part.arrays[key])[keep])
                rows["refs"][-1] = remap[rows["refs"][-1]].astype(np.int32)
            rows = {key: np.concatenate(kept) for key, kept in rows.items()}
            name = fmt.index_part_name(run_id, self.next_part)
            self.next_part += 1
            values = {m.feature: rows[m.feature] for m in COMPARISONS}
            write_arrays(self.data_dir, name, inputs, rows["refs"], rows["positions"], rows["exact"], values)
            parts[-2:] = [[name, len(rows["positions"])]]
        return parts


def drop_duplicates(index, features, ids, positions, candidates):
    """The screen of --dedup: each of the `candidates` that repeats a document kept before it, and its twin; the
    others join the index."""
    docs = np.flatnonzero(candidates)
    for d, found in zip(docs, index.decide(features.select(docs), [ids[d] for d in docs], positions[docs])):
        if found is not None:
            kind, twin, jaccard = found
            yield d, kind, {"twin": twin, "jaccard": round(jaccard, 4)}


def exact_in_part(part, exact, found):
    """Set found[k] to document k's first live exact twin in `part`, unless it has one already."""
    lo = np.searchsorted(part.arrays["exact_sorted"], exact[:, 0], "left")
    hi = np.searchsorted(part.arrays["exact_sorted"], exact[:, 0], "right")
    for k in np.flatnonzero(hi > lo):
        if found[k] is not None and found[k][0] == "exact":
            continue
        for row in part.arrays["exact_rows"][lo[k] : hi[k]]:
            ref = int(part.arrays["refs"][row])
            if part.live[ref] and (part.arrays["exact"][row] == exact[k]).all():
                found[k] = ("exact", [*part.inputs[ref], int(part.arrays["positions"][row])], 1.0)
                break


def write_arrays(data_dir, name, inputs, refs, positions, exact, values):
    """A part of these rows: `values` holds the feature of each method the build uses; the others are empty."""
    arrays = {"refs": refs, "positions": positions, "exact": exact}
    for method in COMPARISONS:
        feature = values.get(method.feature)
        arrays[method.feature] = np.zeros((len(refs), 0), method.dtype) if feature is None else feature
        arrays.update(method.part_arrays(arrays[method.feature]))
    order = np.argsort(exact[:, 0], kind="stable")
    arrays.update(exact_sorted=exact[order, 0], exact_rows=order)
    fmt.write_index_part(data_dir, name, inputs, arrays)


def better(found, candidate, threshold):
    """The twin a near duplicate is recorded with: the most similar kept document at or above the threshold,
    the first in (input id, position) order among equals (wherever it is indexed, so that a build killed and
    run again records the same twin)."""
    if candidate[2] < threshold:
        return found
    if found is None or (-candidate[2], candidate[1][0], candidate[1][2]) < (-found[2], found[1][0], found[1][2]):
        return candidate
    return found
