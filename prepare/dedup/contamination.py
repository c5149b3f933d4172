"""Decontamination (`--decontaminate`): a document that shares a word 13-gram (GPT-3's test) with an item of a
downstream task is dropped, so that the task's scores measure what a model learned, not what it read."""

import numpy as np

from prepare.dedup.hashing import LONGEST_NGRAM, lowered_bytes, ngram_hashes, word_hashes

CONTAMINATION_WORDS = LONGEST_NGRAM


class Contamination:
    """The 13-grams of every item of some tasks: a sorted array of their hashes, each with a bitmask of the
    tasks it occurs in."""

    def __init__(self, tasks):
        self.names = list(tasks)
        grams = [ngram_hashes(word_hashes(lowered_bytes(text)), CONTAMINATION_WORDS)
                 for texts in tasks.values() for text in texts]
        task_of_item = [k for k, texts in enumerate(tasks.values()) for _ in texts]
        owners = [np.full(len(g), 1 << k, np.int64) for g, k in zip(grams, task_of_item)]
        grams = np.concatenate(grams) if grams else np.empty(0, np.uint64)
        owners = np.concatenate(owners) if owners else np.empty(0, np.int64)
        order = np.argsort(grams, kind="stable")
        grams, owners = grams[order], owners[order]
        self.grams, starts = np.unique(grams, return_index=True)
        self.masks = np.bitwise_or.reduceat(owners, starts) if len(starts) else owners

    def mask_of(self, text):
        """The bitmask of the tasks a document (a hashing.Text) shares a 13-gram with."""
        grams = ngram_hashes(text.words, CONTAMINATION_WORDS)
        if not len(grams) or not len(self.grams):
            return 0
        at = np.minimum(np.searchsorted(self.grams, grams), len(self.grams) - 1)
        hit = self.grams[at] == grams
        return int(np.bitwise_or.reduce(self.masks[at[hit]])) if hit.any() else 0

    def tasks_of(self, mask):
        return [name for k, name in enumerate(self.names) if mask >> k & 1]


def drop_contaminated(contamination, features, ids, positions, candidates):
    """The screen of --decontaminate: each of the `candidates` that shares a 13-gram with a task, and its tasks."""
    for d in np.flatnonzero(candidates & (features.contaminated != 0)):
        yield d, "contaminated", {"tasks": contamination.tasks_of(int(features.contaminated[d]))}


def load_contamination(suites):
    """The Contamination of the suites named (hellaswag, core), read from the files `train score` uses (its
    cache; downloaded there the first time, as `train score` does)."""
    from prepare.evals import item_texts

    return Contamination({name: texts for suite in suites for name, texts in item_texts(suite).items()})
