"""Per-input records: what a build wrote of each input it reads (documents and tokens per split, the ranges they
lie in, its last document), and the record made of it when the input ends: its identity, counts, where its
documents are and how a later build resumes it. A corpus whose documents all hashed to train gets its val here."""

import numpy as np

from prepare import format as fmt
from prepare.readers.base import SourceStats
from prepare.sources import prefix_sha256


class Ledger:
    """What a build wrote of each input of its work (by position in it), until the input is recorded."""

    def __init__(self, work):
        self.work = work
        self.stats = [SourceStats() for _ in work]
        self.counts = np.zeros((len(work), 2, 2), np.int64)  # input, split, (documents, tokens)
        self.ranges = [[] for _ in work]
        self.tails = [None] * len(work)  # [split, file, start, end] of each input's last document
        self.prefixes = [None] * len(work)  # sha256 before the last document, where a worker read the input

    def wrote(self, split, placed, owners, lengths):
        """Documents of inputs `owners` written to `split`, into the writer's ranges `placed`."""
        for owner, file, start, end in placed:
            self.ranges[owner].append([split, file, start, end])
        s = fmt.SPLITS.index(split)
        np.add.at(self.counts[:, s, 0], owners, 1)
        np.add.at(self.counts[:, s, 1], owners, lengths)

    def last_documents(self, written, val, owners, lengths):
        """Note each input's last document `written` (a mask), which a grown input reads again."""
        for i in np.unique(owners[written]):
            d = np.flatnonzero((owners == i) & written)[-1]
            split = "val" if val[d] else "train"
            file, end = next((r[1], r[3]) for r in reversed(self.ranges[i]) if r[0] == split)
            self.tails[i] = [split, file, end - int(lengths[d]), end]

    def wrote_document(self, owner, split, file, start, end):
        """A document written on its own (a long one, in parts), last of its input so far."""
        self.ranges[owner].append([split, file, start, end])
        self.tails[owner] = [split, file, start, end]
        self.counts[owner, fmt.SPLITS.index(split)] += (1, end - start)

    def record(self, i):
        return record_of(self.work[i], self.stats[i], self.counts[i], self.ranges[i], self.tails[i], self.prefixes[i])


def record_of(item, stats, counts, ranges, tail, prefix=None):
    """The manifest record of a finished input: identity, counts, where its documents are, how to resume it."""
    record = dict(item.entry)
    documents = {s: int(counts[i, 0]) for i, s in enumerate(fmt.SPLITS)}
    tokens = {s: int(counts[i, 1]) for i, s in enumerate(fmt.SPLITS)}
    skipped = {"empty_documents": stats.empty, "bad_records": stats.bad_records, "binary": stats.binary}
    invalid = stats.invalid_utf8
    all_ranges = [list(r) for r in ranges]
    before = item.before if item.resume_at else None
    if before:  # grown: the old documents, less the old last one, which was read again
        old_tail = before["tail"]
        old_tokens = old_tail[3] - old_tail[2]
        documents = {s: documents[s] + before["documents"][s] - (s == old_tail[0]) for s in fmt.SPLITS}
        tokens = {s: tokens[s] + before["tokens"][s] - (old_tokens if s == old_tail[0] else 0) for s in fmt.SPLITS}
        skipped = {k: v + before["skipped"][k] for k, v in skipped.items()}
        invalid += before["invalid_utf8_bytes"]
        all_ranges = ranges_without(before["ranges"], old_tail) + all_ranges
        tail = tail or old_tail
    record.update(documents=documents, tokens=tokens, skipped=skipped, ranges=all_ranges, invalid_utf8_bytes=invalid)
    if stats.last_document_at is not None and tail is not None and item.entry["kind"] == "file":
        # A later run that finds the bytes before the last document unchanged reads on from there.
        prefix = prefix or prefix_sha256(item.entry, stats.last_document_at)
        record.update(resume_at=stats.last_document_at, prefix_sha256=prefix, tail=tail)
    else:
        for key in ("resume_at", "prefix_sha256", "tail"):
            record.pop(key, None)
    return record


def ranges_without(ranges, cut):
    """`ranges` ([split, file, start, end]) less the tokens of `cut`."""
    out = []
    for split, file, start, end in ranges:
        if split != cut[0] or file != cut[1] or end <= cut[2] or start >= cut[3]:
            out.append([split, file, start, end])
            continue
        out += [[split, file, a, b] for a, b in ((start, cut[2]), (cut[3], end)) if a < b]
    return out


def ensure_val(builder, ledger):
    """A tiny corpus whose documents all hashed to train still gets a val split: the last document written
    moves to val, or, for a one-document corpus, the last `val_fraction` of its tokens (only those are read:
    the document may be larger than memory). Returns the input whose document moved, or None."""
    counts, work = ledger.counts, ledger.work
    if any(r["documents"]["val"] for r in builder.sources.values()) or counts[:, 1, 0].sum() or \
            not counts[:, 0, 0].sum():
        return None
    train = builder.writers["train"]
    if train.file is None or train.last_doc is None:
        return None
    start, length, owner = train.last_doc
    ours = {w.entry["id"] for w in work}
    others = sum(r["documents"]["train"] for i, r in builder.sources.items() if i not in ours)
    others += sum(w.before["documents"]["train"] for w in work if w.resume_at)  # a grown input's older records
    if others + counts[:, 0, 0].sum() - 1 >= 1:
        keep = 0
    else:
        keep = length - max(1, int(length * builder.opts["val_fraction"]))
        if keep < 2:  # too short to leave text on both sides
            return None
    tokens, owner, file, start = train.pop_last_document(keep)
    ledger.ranges[owner] = ranges_without(ledger.ranges[owner], ["train", file, start + keep, start + length])
    counts[owner, 0] -= (0 if keep else 1, length - keep)
    if keep:  # the tail starts a document of its own in val
        tokens = np.concatenate([np.array([builder.manifest.tokenizer.eot_token], tokens.dtype), tokens])
    for _, f, a, b in builder.writers["val"].append(tokens, np.array([len(tokens)]), np.array([owner])):
        ledger.ranges[owner].append(["val", f, a, b])
        ledger.tails[owner] = None if keep else ["val", f, a, b]
    counts[owner, 1] += (1, len(tokens))
    return owner
