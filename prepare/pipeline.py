"""The tokenize pipeline of a build, input by input: the inputs read into batches (prepare/reading.py) go through
the workers (prepare/workers.py) and come back tokenized, in order; the documents that the cap and the screens
leave are written into the builder's token files, each input is recorded as it ends (with the encoder that wrote
it), and a commit is made every --commit-every at an input's end, so that committed files hold whole inputs."""

import collections
import dataclasses
import errno
import sys
import time

import numpy as np
from tqdm import tqdm

from prepare import filtering, format as fmt
from prepare.cap import TokenCap
from prepare.dedup.methods import METHODS
from prepare.dedup.removed import Removed
from prepare.plan import BuildError
from prepare.reading import Reader, identified, warn
from prepare.records import Ledger, ensure_val
from prepare.tokenizer import described, encoder_for, load_encoding
from prepare.workers import ordered_map, tokenize_batch

SKIPPED = ("empty_documents", "bad_records", "binary_files", "not_regular_files", "invalid_utf8_bytes")


@dataclasses.dataclass
class Summary:
    """A build's counts, and the line it ends with."""

    inputs: int = 0
    kept: int = 0
    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    commits: int = 0
    encoder: str = ""  # the encoder's name and version, and why tiktoken encodes if gigatoken was asked for
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    removed: Removed = dataclasses.field(default_factory=Removed)  # documents screened out, by kind

    def line(self, data_dir, manifest, seconds):
        skipped = ", ".join(f"{self.skipped[k]} {k.replace('_', ' ')}" for k in SKIPPED)
        duplicates = " and ".join(f"{self.removed.documents(m)} {m}" for m in METHODS)
        removed = (f"removed {duplicates} duplicates, {self.removed.documents('contaminated')} contaminated; "
                   if manifest.options.get("dedup") or manifest.options.get("decontaminate") else "")
        if filtering.filters(manifest.options):
            removed = f"filtered {self.removed.documents('filtered')}; " + removed
        return (
            f"{data_dir}: tokenized {self.inputs} inputs ({self.kept} unchanged): {self.documents} documents, "
            f"{self.tokens} tokens in {seconds:.1f} s ({self.text_bytes / 1e6 / seconds:.2f} MB/s, "
            f"{self.tokens / seconds:,.0f} tokens/s, {self.encoder}), {self.commits} commits; skipped {skipped}; "
            f"{removed}"
            f"dataset now generation {manifest.generation}, train {manifest.tokens('train')} / val "
            f"{manifest.tokens('val')} tokens"
        )


def tokenize_inputs(builder, work, kept, opts, workers, val_fallback=True):
    """Tokenize `work` into the builder's writers, committing every --commit-every seconds between inputs.
    `val_fallback`: give a corpus with no val document one (records.ensure_val). Returns the Summary."""
    return Pipeline(builder, work, kept, opts).run(workers, val_fallback)


def picked(tokens, lengths, docs):
    """The tokens of the documents that the mask `docs` picks (each `lengths` long), in order: each run of picked
    documents sliced (a mask over every token, which numpy copies through, took 8% of a fast build)."""
    if docs.all():
        return tokens
    ends = np.cumsum(lengths)
    runs = np.flatnonzero(np.diff(np.concatenate(([False], docs, [False])).view(np.int8)))  # first, last+1 picked
    return np.concatenate([tokens[: 0], *(tokens[ends[a] - lengths[a] : ends[b - 1]] for a, b in runs.reshape(-1, 2))])


class Pipeline:
    """One build's tokenizing, input by input: what has been read, written and recorded so far."""

    def __init__(self, builder, work, kept, opts):
        self.builder, self.work, self.opts = builder, work, opts
        # The encoder is chosen here, once, before the workers start (why tiktoken, if it must: in the summary line).
        self.encoder = encoder_for(load_encoding(opts["encoding"]), opts["encoder"])
        self.screening = builder.screening  # None without --dedup and --decontaminate
        removed = self.screening.removed if self.screening is not None else Removed()
        self.summary = Summary(inputs=len(work), kept=len(kept), encoder=described(self.encoder),
                               removed=removed)
        self.ledger = Ledger(work)
        self.cap = TokenCap(opts["max_tokens"], work, kept)
        self.recorded = 0  # inputs before this one are finished and recorded
        self.last_commit = time.perf_counter()
        # A build that screens (--dedup, --decontaminate) reads documents whole: their hashes are of all of them.
        self.reader = Reader(work, opts, self.ledger.stats, self.cap, self.commit_due, self.screening is not None)
        # A long document's Parts are written to a file of their own as they come (FileWriter.begin_document),
        # its split and whether it was blank decided at its end: `streaming` while one is being written.
        self.streaming = False

    def run(self, workers, val_fallback):
        try:
            return self.tokenize(workers, val_fallback)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # What the rest needs: the text left, at the tokens per byte of text so far.
            left = sum(w.entry.get("size", 0) - w.resume_at for w in self.work) - self.summary.text_bytes
            itemsize = np.dtype(self.builder.dtype).itemsize
            needed = max(left, 0) * self.summary.tokens / max(self.summary.text_bytes, 1) * itemsize
            raise BuildError(f"{e.filename}: no space left on device; the build needs about {needed / 1e6:,.0f} MB "
                             f"more for its tokens ({fmt.free_bytes(self.builder.data_dir) / 1e6:,.0f} MB are free); "
                             f"the dataset is as it was at its last commit") from None

    def tokenize(self, workers, val_fallback):
        total = sum(w.entry.get("size", 0) - w.resume_at for w in self.work) or None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not sys.stderr.isatty(),
                   leave=False)
        initargs = (self.opts["encoding"], self.builder.dtype, self.opts)
        batches = self.reader.batches()
        for result in ordered_map(tokenize_batch, batches, workers, initargs, self.encoder.threads):
            for i, (sha, stats, prefix, warnings) in result.read.items():
                identified(self.work[i], sha)
                self.ledger.stats[i], self.ledger.prefixes[i] = stats, prefix
                for message in warnings:
                    warn(message)
            self.summary.text_bytes += result.size
            bar.update(result.size)
            if len(result.lengths):
                self.take(result)
            else:
                self.finish(result.reading)
                if self.commit_due() and result.error is None:
                    self.commit()
            if result.error is not None:  # bad input: commit the inputs before it if none of its documents are written
                if self.streaming:  # the parts of its document written so far go
                    self.builder.writers["train"].drop_document()
                    self.streaming = False
                if not self.ledger.counts[result.reading].any():
                    self.finish(result.reading)
                    self.commit()
                raise result.error
        moved = ensure_val(self.builder, self.ledger) if val_fallback else None
        self.finish(len(self.work))
        if moved is not None:
            self.builder.record(self.record_of(moved))
        bar.close()
        self.summary.commits = self.builder.commits + 1
        return self.summary

    def commit_due(self):
        return time.perf_counter() - self.last_commit >= self.opts["commit_every"]

    def take(self, result):
        """A tokenized batch: written, its finished inputs recorded, and a due commit made where one input ends
        and the next begins, so that committed files hold whole inputs."""
        tokens, lengths, val, owners = result.tokens, result.lengths, result.val, result.owners
        continued, more, features = result.continued, result.more, result.features
        due = self.commit_due()
        boundaries = np.flatnonzero(np.diff(owners)) + 1
        if due and (len(boundaries) or self.recorded < int(owners[0])):
            cut = int(boundaries[0]) if len(boundaries) else 0
            offset = int(lengths[:cut].sum())
            self.write(tokens[:offset], lengths[:cut], val[:cut], owners[:cut], continued[:cut], more[:cut],
                       None if features is None else features.select(slice(0, cut)))
            self.finish(int(owners[cut]))
            self.commit()
            tokens, lengths, val, owners = tokens[offset:], lengths[cut:], val[cut:], owners[cut:]
            continued, more = continued[cut:], more[cut:]
            features = None if features is None else features.select(slice(cut, None))
            due = False
        self.write(tokens, lengths, val, owners, continued, more, features)
        self.finish(result.reading)
        if due and int(owners[-1]) < result.reading:  # the batch ended with an input
            self.commit()

    def write(self, tokens, lengths, val, owners, continued, more, features=None):
        """Append documents to the split's token files (those the cap, then the screens leave), noting their
        ranges and counts. The Parts of a long document go to write_part (a build that screens reads every
        document whole, so they have no features)."""
        parts = continued | more
        if parts.any():
            starts = np.cumsum(lengths) - lengths
            for d in np.flatnonzero(parts):
                self.write_part(tokens[starts[d] : starts[d] + lengths[d]], int(owners[d]), continued[d], more[d])
            whole = ~parts
            tokens, lengths, val, owners = picked(tokens, lengths, whole), lengths[whole], val[whole], owners[whole]
        keep = self.cap.within(lengths, owners)
        if self.screening is not None:
            keep = self.screening.screen(lengths, val, owners, features, keep)
        for split in fmt.SPLITS:
            docs = keep & (val if split == "val" else ~val)
            if not docs.any():
                continue
            placed = self.builder.writers[split].append(picked(tokens, lengths, docs), lengths[docs], owners[docs])
            if self.screening is not None:
                self.screening.place(placed, np.flatnonzero(docs), split, lengths, owners, features)
            self.ledger.wrote(split, placed, owners[docs], lengths[docs])
        self.ledger.last_documents(keep, val, owners, lengths)
        self.summary.documents += int(keep.sum())
        self.summary.tokens += int(lengths[keep].sum())

    def write_part(self, tokens, owner, continued, more):
        """A Part of a long document (only text files have them, never capped): into a file of its own in train,
        which moves to val if the document's hash says so, and goes if the document was empty."""
        train = self.builder.writers["train"]
        if not continued:
            train.begin_document()
            self.streaming = True
        train.write_part(tokens)
        if more:
            return
        self.streaming = False
        val, blank = self.reader.ends.popleft()
        if blank:
            train.drop_document()
            self.ledger.stats[owner].empty += 1
            return
        split = "val" if val else "train"
        file, start, end = train.end_document(self.builder.writers[split], owner)
        self.ledger.wrote_document(owner, split, file, start, end)
        self.summary.documents += 1
        self.summary.tokens += end - start

    def finish(self, upto):
        """Record every input before `upto` not recorded yet."""
        while self.recorded < upto:
            i = self.recorded
            self.recorded += 1
            if i not in self.cap.dropped:
                self.builder.record(self.record_of(i))
                stats = self.ledger.stats[i]
                self.summary.skipped.update(empty_documents=stats.empty, bad_records=stats.bad_records,
                                            binary_files=int(stats.binary), invalid_utf8_bytes=stats.invalid_utf8)

    def record_of(self, i):
        record = self.ledger.record(i)
        record["encoder"] = self.encoder.name  # which wrote its tokens: the ids are the same, whichever it was
        if self.screening is not None:
            record["dedup"] = self.screening.record(i)
        return record

    def commit(self):
        self.builder.commit()
        self.last_commit = time.perf_counter()
