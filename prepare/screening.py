"""Screening: the documents a build drops before writing them, and why. The screens run in order, each on the
documents the ones before it kept: the filters (filtering.py: language ID and rules), then decontamination
(dedup/contamination.py), then duplicates (dedup/index.py); docs/filters.md says why in this order. The workers
compute what they need of each document (its Features); the main process decides in input order, since a
duplicate is one of a document kept before it. A dropped document is recorded with its input.

A new screen is a function in a module of its own, like `drop_contaminated`, yielding the documents it drops with
their kind and reason, and one line in `Screening`."""

import dataclasses
import functools

import numpy as np

from prepare import filtering
from prepare.dedup.contamination import drop_contaminated
from prepare.dedup.hashing import Text, exact_key
from prepare.dedup.index import Index, drop_duplicates
from prepare.dedup.methods import COMPARISONS, METHODS
from prepare.dedup.removed import Removed
from prepare.plan import BuildError


@dataclasses.dataclass
class Features:
    """What the main process needs of a batch's documents to screen them: exact keys (n, 2), each dedup method's
    feature (n, its width; n, 0 where the build does not use it), a bitmask of the tasks each shares a 13-gram
    with, UTF-8 sizes (of the text as written: redacted), and the filters' Verdicts (None without them)."""

    exact: np.ndarray
    values: dict
    contaminated: np.ndarray
    sizes: np.ndarray
    verdicts: filtering.Verdicts | None = None

    def select(self, docs):
        return Features(self.exact[docs], {k: v[docs] for k, v in self.values.items()}, self.contaminated[docs],
                        self.sizes[docs], None if self.verdicts is None else self.verdicts.select(docs))

    def arrays(self):
        """The features the index compares, by name: what a cluster task hands its commit."""
        return {"exact": self.exact, **self.values}


def features(texts, sizes, opts, verdicts=None):
    """Features of a batch's documents under the build's options (in a worker); `verdicts`: the filters'."""
    method, contamination = METHODS.get(opts.get("dedup")), opts.get("contamination")
    n = len(texts)
    exact = np.zeros((n, 2), np.uint64)
    values = {m.feature: np.zeros((n, m.width if m is method else 0), m.dtype) for m in COMPARISONS}
    contaminated = np.zeros(n, np.int64)
    dedup = opts.get("dedup")
    for i, text in enumerate(map(Text, texts) if dedup or contamination else ()):
        if dedup:
            exact[i] = exact_key(text.lowered)
        if method is not None:
            values[method.feature][i] = method.feature_of(text)
        if contamination:
            contaminated[i] = contamination.mask_of(text)
    return Features(exact, values, contaminated, np.asarray(sizes, np.int64), verdicts)


def screens(opts):
    """Whether a build screens documents before writing them (redaction too: its counts are screening's notes)."""
    return bool(opts.get("dedup") or opts.get("decontaminate") or filtering.active(opts))


def load_screens(opts):
    """The options with the task files of --decontaminate read (once, here: the workers get them), and the filter
    options checked (the language model loaded: forked workers inherit it)."""
    filtering.check(opts)
    if opts.get("decontaminate") and "contamination" not in opts:
        from prepare.dedup.contamination import load_contamination
        from prepare.evals import TaskError
        from prepare.evals.cache import FetchError

        try:
            opts = {**opts, "contamination": load_contamination(opts["decontaminate"])}
        except (TaskError, FetchError) as e:
            raise BuildError(f"--decontaminate: {e}") from None
    return opts


def open_index(data_dir, parts, sources, stamp, opts, own_lookup=True):
    """The index of kept documents the build's --dedup method compares with (parts: those in force)."""
    return Index(data_dir, parts, sources, stamp, METHODS.get(opts.get("dedup")), own_lookup)


class Screening:
    """What screening decided so far in one build: per input of its work (by position in it), the documents read
    and those removed; the totals removed (the manifest's `removed`); and, for a cluster task, where each document
    it kept was written, with its features (placements, for the commit to compare the tasks' documents)."""

    def __init__(self, opts, index, ids, stamp, placements=False):
        self.index, self.ids, self.stamp = index, ids, stamp
        self.contamination = opts.get("contamination")
        self.read = np.zeros(len(ids), np.int64)  # documents read of each input: the next one's position
        self.removed_of = [[] for _ in ids]
        self.removed = Removed()
        self.notes = filtering.Notes(opts, len(ids))  # languages and redactions, per input
        self.placed = ([], [features([], [], opts)]) if placements else None  # documents, their Features
        # The screens, in order; each gets (features, input ids, positions, candidates) of a batch's documents and
        # yields those it drops, with their kind and reason.
        self.screens = []
        if filtering.filters(opts):
            names, thresholds = filtering.rule_names(opts), filtering.thresholds_of(opts)
            self.screens.append(functools.partial(filtering.drop_filtered, names, thresholds))
        if self.contamination:
            self.screens.append(functools.partial(drop_contaminated, self.contamination))
        if opts.get("dedup"):
            self.screens.append(functools.partial(drop_duplicates, index))

    def screen(self, lengths, val, owners, features, eligible):
        """Which documents (of those `eligible`) every screen keeps; each dropped one is noted for its input's
        record: position, kind, split, size, and the screen's reason."""
        self.positions = np.empty(len(owners), np.int64)  # of the documents being written, for `place`
        for d, i in enumerate(owners):  # a document's position counts every document its input yielded
            self.positions[d], self.read[i] = self.read[i], self.read[i] + 1
        keep, ids = eligible.copy(), [self.ids[i] for i in owners]
        for screen in self.screens:  # each sees the documents the ones before it kept
            for d, kind, why in screen(features, ids, self.positions, keep):
                keep[d] = False
                self.note(owners[d], self.positions[d], kind, val[d], lengths[d], features.sizes[d], **why)
        if features is not None and features.verdicts is not None:
            self.notes.note(owners, features.verdicts)
            self.removed.redacted(features.verdicts.redacted, self.notes.kinds)
        return keep

    def note(self, i, position, kind, val, tokens, size, **why):
        self.removed_of[i].append({"at": int(position), "kind": kind, "split": "val" if val else "train",
                                   "tokens": int(tokens), "bytes": int(size), **why})
        self.removed.add(kind, 1, tokens, size, why.get("tasks", ()), why.get("rule"), why.get("language"))

    def record(self, i):
        """What an input's record keeps of its screening (its `dedup`): the documents read and removed, and, with
        language ID or redaction, each document's language and score and the addresses redacted."""
        return {"stamp": self.stamp, "read": int(self.read[i]), "removed": self.removed_of[i], **self.notes.record(i)}

    def place(self, placed, docs, split, lengths, owners, features):
        """Note where each document written went (`placed`: the writer's ranges of documents `docs`), for a cluster
        task's commit: [input id, position, split, file, start, end, bytes], and its features."""
        if self.placed is None:
            return
        documents, k = self.placed[0], 0
        for _, file, start, end in placed:
            at = start
            while at < end:
                d = docs[k]
                documents.append([self.ids[owners[d]], int(self.positions[d]), split, file, at, at + int(lengths[d]),
                                  int(features.sizes[d])])
                at += int(lengths[d])
                k += 1
        self.placed[1].append(features.select(docs))

    def placements(self):
        """(documents, their features as one array each) of a cluster task, or None without --dedup."""
        if self.placed is None:
            return None
        documents, chunks = self.placed
        names = chunks[0].arrays()
        return documents, {k: np.concatenate([c.arrays()[k] for c in chunks]) for k in names}
