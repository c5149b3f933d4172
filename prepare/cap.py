"""--max-tokens: how many tokens a build takes from a Hugging Face dataset (Hub files or save_to_disk). A Hub
dataset's whole files are taken, in order, until their tokens reach the cap, so that a later build with more
files chosen the same way agrees; a save_to_disk dataset's documents are taken until the cap."""

import collections

import numpy as np

CAPPED_KINDS = ("hub_file", "disk")  # inputs --max-tokens applies to: Hugging Face datasets


def group_of(entry):
    """The Hugging Face dataset a capped input belongs to (a Hub dataset's files share one cap)."""
    return entry.get("group", entry["id"])


def beyond_cap(work, recorded):
    """`work` less the Hub files that follow a capped dataset's chosen files once those reach the cap: the
    files taken are the fewest, in order, whose tokens reach --max-tokens."""
    taken = collections.Counter()
    last = {}
    for record in recorded.values():
        if record["kind"] == "hub_file" and record.get("max_tokens"):
            taken[record["group"]] += sum(record["tokens"].values())
            last[record["group"]] = max(last.get(record["group"], ""), record["id"])
    return [w for w in work if not (w.entry["kind"] == "hub_file" and w.entry.get("max_tokens")
                                    and taken[w.entry["group"]] >= w.entry["max_tokens"]
                                    and w.entry["id"] > last[w.entry["group"]])]


class TokenCap:
    """The cap as a build's documents come: tokens taken from each capped dataset so far (its recorded inputs'
    too), and the Hub files begun and dropped (past the cap, not taken)."""

    def __init__(self, cap, work, kept):
        self.cap, self.work = cap, work
        self.group_tokens = collections.Counter()
        for record in kept.values():
            if record["kind"] in CAPPED_KINDS and record.get("max_tokens"):
                self.group_tokens[group_of(record)] += sum(record["tokens"].values())
        self.started, self.dropped = set(), set()

    def reached(self, i):
        """Whether input i's capped dataset has its tokens (may lag the documents in flight; `within` decides
        exactly)."""
        entry = self.work[i].entry
        return bool(self.cap) and entry["kind"] in CAPPED_KINDS and self.group_tokens[group_of(entry)] >= self.cap

    def within(self, lengths, owners):
        """Which documents --max-tokens leaves: a Hub dataset's whole files, in order, until its cap is
        reached; a save_to_disk dataset's documents until its cap."""
        keep = np.ones(len(owners), bool)
        if not self.cap:
            return keep
        for d, i in enumerate(owners):
            entry = self.work[i].entry
            if entry["kind"] not in CAPPED_KINDS:
                continue
            group = group_of(entry)
            if entry["kind"] == "hub_file":
                if i not in self.started and self.group_tokens[group] >= self.cap:
                    self.dropped.add(i)
                self.started.add(i)
                keep[d] = i not in self.dropped
            else:
                keep[d] = self.group_tokens[group] < self.cap
            self.group_tokens[group] += lengths[d] if keep[d] else 0
        return keep
