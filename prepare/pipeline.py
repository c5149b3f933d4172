"""The tokenize pipeline of a build: worker processes read the inputs (small files whole, by the batch;
a large file's or a dataset's documents are read by the main process and sent in batches), tokenize the
documents and assign each to train or val; the main process appends the tokens to the builder's token files,
records each finished input, and commits every --commit-every at an input's end."""

import collections
import dataclasses
import errno
import functools
import hashlib
import multiprocessing
import sys
import time

import numpy as np
from tqdm import tqdm

from prepare import dedup, format as fmt
from prepare.plan import CAPPED_KINDS, BuildError
from prepare.readers import iter_documents
from prepare.readers.base import Part, SourceError, SourceStats
from prepare.sources import identify, prefix_sha256
from prepare.tokenizer import encode_to_numpy, eot_token, load_encoding, part_cut

BATCH_CHARS = 1 << 20  # text sent to a worker at once: large enough to amortise the hand-over
WORKER_READS = 4 << 20  # files up to this size are read by the worker that tokenizes them


def is_val(text_bytes, val_fraction):
    """A document's split, by a hash of its UTF-8 bytes: stable whatever else is in the corpus."""
    return hash_is_val(hashlib.blake2b(text_bytes, digest_size=8), val_fraction)


def hash_is_val(digest, val_fraction):
    """is_val by the hash of a document's bytes, which a document read in Parts updates as it streams."""
    return int.from_bytes(digest.digest(), "little") < val_fraction * 2**64


@dataclasses.dataclass
class Batch:
    """What a worker is sent: documents the main process read (`texts`, each of input `owners[k]`), or
    small file inputs to read itself (`inputs`, (index, entry) pairs), or the error that ended the reading
    after the documents here. `reading`: the input being read when it was sent; all before it are read whole."""

    reading: int
    texts: list = dataclasses.field(default_factory=list)
    owners: list = dataclasses.field(default_factory=list)
    inputs: list = dataclasses.field(default_factory=list)
    error: SourceError | None = None
    # A text that is a Part of a long document (sources.Part): whether it continues the one before (then it has
    # no end-of-text of its own), and whether the document goes on after it. Empty: no Parts.
    continued: list = dataclasses.field(default_factory=list)
    more: list = dataclasses.field(default_factory=list)

    def add(self, text, owner):
        part = isinstance(text, Part)
        if part or self.continued:
            self.continued += [False] * (len(self.texts) - len(self.continued))
            self.more += [False] * (len(self.texts) - len(self.more))
            self.continued.append(part and text.continued)
            self.more.append(part and text.more)
        self.texts.append(str(text) if part else text)
        self.owners.append(owner)


@dataclasses.dataclass
class Tokenized:
    """A batch's documents tokenized: end-of-text then each document's ids, concatenated; each document's
    length, split and input; the UTF-8 bytes read; for each input the worker read, (its content identity,
    its SourceStats, the sha256 of the bytes before its last document, its warnings); under --dedup or
    --decontaminate, each document's Features."""

    reading: int
    tokens: np.ndarray
    lengths: np.ndarray
    val: np.ndarray
    owners: np.ndarray
    size: int
    read: dict
    error: SourceError | None
    continued: np.ndarray  # as in Batch, for every document
    more: np.ndarray
    features: dedup.Features | None = None


# Worker processes: each loads the encoding once (a forked worker inherits the main process's), then
# reads and tokenizes batches.
_worker = {}


def init_worker(encoding_name, dtype, opts):
    encoding = load_encoding(encoding_name)
    _worker.update(encoding=encoding, eot=np.array([eot_token(encoding)], np.uint32), dtype=dtype, opts=opts)


def read_inputs(batch):
    """The documents of a batch's own inputs, read here: (texts, owners, read, reading, error)."""
    texts, owners, read = [], [], {}
    for index, entry in batch.inputs:
        stats, warnings, before = SourceStats(), [], len(texts)
        try:
            sha = identify(entry)
            for text in iter_documents(entry, _worker["opts"], stats, warnings.append):
                texts.append(text)
                owners.append(index)
            prefix = prefix_sha256(entry, stats.last_document_at) if stats.last_document_at is not None else None
        except SourceError as error:
            del texts[before:], owners[before:]
            return texts, owners, read, index, error
        read[index] = (sha, stats, prefix, warnings)
    return texts, owners, read, batch.reading, None


def tokenize_batch(batch):
    if batch.inputs:
        texts, owners, read, reading, error = read_inputs(batch)
    else:
        texts, owners, read, reading, error = batch.texts, batch.owners, {}, batch.reading, batch.error
    encoding, eot, dtype = _worker["encoding"], _worker["eot"], _worker["dtype"]
    pieces, lengths, val = [eot[:0]], np.empty(len(texts), np.int64), np.zeros(len(texts), bool)
    continued = np.zeros(len(texts), bool) if batch.inputs or not batch.continued else np.array(batch.continued)
    more = np.zeros(len(texts), bool) if batch.inputs or not batch.more else np.array(batch.more)
    sizes = np.empty(len(texts), np.int64)
    for i, text in enumerate(texts):
        ids = encode_to_numpy(encoding, text)
        pieces += (ids,) if continued[i] else (eot, ids)
        lengths[i] = len(ids) + (not continued[i])
        text_bytes = text.encode("utf-8", "surrogatepass")
        if not (continued[i] or more[i]):  # a Part's document is given its split where it ends (Pipeline.batches)
            val[i] = is_val(text_bytes, _worker["opts"]["val_fraction"])
        sizes[i] = len(text_bytes)
    tokens = np.concatenate(pieces)
    if len(tokens) and tokens.max() > np.iinfo(dtype).max:
        raise BuildError(f"token id {tokens.max()} does not fit {dtype}; the encoding's n_vocab is wrong")
    opts = _worker["opts"]
    features = dedup.features(texts, sizes, opts) if opts.get("dedup") or opts.get("contamination") else None
    return Tokenized(reading, tokens.astype(dtype), lengths, val, np.array(owners, np.int64), int(sizes.sum()), read, error, continued,
                     more, features)


def ordered_map(function, batches, workers, initargs):
    """function(batch) for each batch, in order, with at most 2 batches per worker in flight."""
    if workers == 1:
        init_worker(*initargs)
        yield from map(function, batches)
        return
    with multiprocessing.get_context().Pool(workers, init_worker, initargs) as pool:
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(function, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


@dataclasses.dataclass
class Summary:
    inputs: int = 0
    kept: int = 0
    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    commits: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    removed: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # documents, by kind

    def line(self, data_dir, manifest, seconds):
        skipped = ", ".join(f"{self.skipped[k]} {k.replace('_', ' ')}" for k in ("empty_documents", "bad_records", "binary_files", "not_regular_files", "invalid_utf8_bytes"))
        return (
            f"{data_dir}: tokenized {self.inputs} inputs ({self.kept} unchanged): {self.documents} documents, "
            f"{self.tokens} tokens in {seconds:.1f} s ({self.text_bytes / 1e6 / seconds:.2f} MB/s, "
            f"{self.tokens / seconds:,.0f} tokens/s), {self.commits} commits; skipped {skipped}; "
            + (f"removed {self.removed['exact']} exact and {self.removed['near']} near duplicates, "
               f"{self.removed['contaminated']} contaminated; " if manifest.options.get("dedup") or manifest.options.get("decontaminate") else "") +
            f"dataset now generation {manifest.generation}, train {manifest.tokens('train')} / val {manifest.tokens('val')} tokens"
        )


def tokenize_inputs(builder, work, kept, opts, workers, val_fallback=True):
    """Tokenize `work` into the builder's writers, committing every --commit-every seconds between inputs.
    `val_fallback`: give a corpus with no val document one (see ensure_val). Returns the Summary."""
    return Pipeline(builder, work, kept, opts).run(workers, val_fallback)


class Pipeline:
    """One build's tokenizing, input by input: what has been read, written and recorded so far."""

    def __init__(self, builder, work, kept, opts):
        self.builder, self.work, self.opts = builder, work, opts
        self.summary = Summary(inputs=len(work), kept=len(kept))
        self.stats = [SourceStats() for _ in work]
        self.counts = np.zeros((len(work), 2, 2), np.int64)  # input, split, (documents, tokens)
        self.ranges = [[] for _ in work]
        self.tails = [None] * len(work)  # [split, file, start, end] of each input's last document
        self.prefixes = [None] * len(work)  # sha256 before the last document, where a worker read the input
        self.cap = opts["max_tokens"]
        self.group_tokens = collections.Counter()  # tokens taken from each capped Hugging Face dataset so far
        for record in kept.values():
            if record["kind"] in CAPPED_KINDS and record.get("max_tokens"):
                self.group_tokens[group_of(record)] += sum(record["tokens"].values())
        self.started, self.dropped = set(), set()  # Hub files begun, and those past the cap (not taken)
        self.recorded = 0  # inputs before this one are finished and recorded
        self.index = builder.index  # None without --dedup and --decontaminate
        self.read = np.zeros(len(work), np.int64)  # documents read of each input: the next one's position
        self.removed = [[] for _ in work]  # what was dropped of each input, and why
        self.last_commit = time.perf_counter()
        # A long document comes in Parts: cut where the tokens stay the same, hashed for its split as it is read,
        # its tokens written to a file of their own as they come (FileWriter.begin_document), the split and
        # whether it was empty decided at its end (`ends`, in reading order).
        # A build that screens (--dedup, --decontaminate) reads documents whole: their hashes are of all of them.
        self.cut = None if self.index is not None else functools.partial(part_cut, load_encoding(opts["encoding"])._pat_str)
        self.digest, self.blank, self.ends, self.streaming = None, True, collections.deque(), False

    def run(self, workers, val_fallback):
        try:
            return self.tokenize(workers, val_fallback)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # What the rest needs: the text left, at the tokens per byte of text so far.
            left = sum(w.entry.get("size", 0) - w.resume_at for w in self.work) - self.summary.text_bytes
            needed = max(left, 0) * self.summary.tokens / max(self.summary.text_bytes, 1) * np.dtype(self.builder.dtype).itemsize
            raise BuildError(f"{e.filename}: no space left on device; the build needs about {needed / 1e6:,.0f} MB more for "
                             f"its tokens ({fmt.free_bytes(self.builder.data_dir) / 1e6:,.0f} MB are free); the dataset is as "
                             f"it was at its last commit") from None

    def tokenize(self, workers, val_fallback):
        total = sum(w.entry.get("size", 0) - w.resume_at for w in self.work) or None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not sys.stderr.isatty(), leave=False)
        initargs = (self.opts["encoding"], self.builder.dtype, self.opts)
        for result in ordered_map(tokenize_batch, self.batches(), workers, initargs):
            for i, (sha, stats, prefix, warnings) in result.read.items():
                self.identified(i, sha)
                self.stats[i], self.prefixes[i] = stats, prefix
                for message in warnings:
                    warn(message)
            self.summary.text_bytes += result.size
            bar.update(result.size)
            if len(result.lengths):
                self.take(result.tokens, result.lengths, result.val, result.owners, result.reading, result.continued, result.more,
                          result.features)
            else:
                self.finish(result.reading)
                if self.commit_due() and result.error is None:
                    self.commit()
            if result.error is not None:  # bad input: commit the inputs before it if none of its documents are written
                if self.streaming:  # the parts of its document written so far go
                    self.builder.writers["train"].drop_document()
                    self.streaming = False
                if not self.counts[result.reading].any():
                    self.finish(result.reading)
                    self.commit()
                raise result.error
        moved = ensure_val(self.builder, self.work, self.counts, self.ranges, self.tails) if val_fallback else None
        self.finish(len(self.work))
        if moved is not None:
            self.builder.record(self.record_of(moved))
        bar.close()
        self.summary.commits = self.builder.commits + 1
        return self.summary

    def commit_due(self):
        return time.perf_counter() - self.last_commit >= self.opts["commit_every"]

    def identified(self, i, sha):
        if sha is not None:
            self.work[i].entry["sha256"] = sha

    def batches(self):
        """Batches in input order: small files are left to the workers to read, a batch of them at a time;
        other inputs' documents are read here. A batch ends at an input's end when a commit is due. Bad input
        ends the stream with a batch carrying the error after the documents of the inputs before it."""
        batch, size = Batch(0), 0
        for i, item in enumerate(self.work):
            worker_reads = item.entry["kind"] == "file" and item.entry["size"] <= WORKER_READS and not item.resume_at
            if (batch.texts or batch.inputs) and (self.commit_due() or bool(batch.inputs) != worker_reads):
                yield batch
                batch, size = Batch(i), 0
            batch.reading = i
            if worker_reads:
                batch.inputs.append((i, item.entry))
                batch.reading, size = i + 1, size + item.entry["size"]
                if size >= BATCH_CHARS:
                    yield batch
                    batch, size = Batch(i + 1), 0
                continue
            try:
                self.identified(i, identify(item.entry))
                for text in iter_documents(item.entry, self.opts, self.stats[i], warn, item.resume_at, self.cut):
                    if self.over_cap(i):
                        break
                    if isinstance(text, Part):
                        self.hash_part(text)
                    batch.add(text, i)
                    size += len(text)
                    if size >= BATCH_CHARS:
                        yield batch
                        batch, size = Batch(i), 0
            except SourceError as error:
                keep = [k for k, owner in enumerate(batch.owners) if owner < i]
                yield Batch(i, [batch.texts[k] for k in keep], [batch.owners[k] for k in keep], error=error,
                            continued=[batch.continued[k] for k in keep if k < len(batch.continued)],
                            more=[batch.more[k] for k in keep if k < len(batch.more)])
                return
            batch.reading = i + 1
        if batch.texts or batch.inputs:
            yield batch

    def hash_part(self, part):
        if not part.continued:
            self.digest, self.blank = hashlib.blake2b(digest_size=8), True
        self.digest.update(part.encode("utf-8", "surrogatepass"))
        self.blank = self.blank and not part.strip()
        if not part.more:
            self.ends.append((hash_is_val(self.digest, self.opts["val_fraction"]), self.blank))

    def over_cap(self, i):
        """Whether input i's capped dataset has its tokens (may lag the documents in flight; `write` decides
        exactly)."""
        entry = self.work[i].entry
        return bool(self.cap) and entry["kind"] in CAPPED_KINDS and self.group_tokens[group_of(entry)] >= self.cap

    def take(self, tokens, lengths, val, owners, reading, continued, more, features=None):
        """A tokenized batch: written, its finished inputs recorded, and a due commit made where one input ends
        and the next begins, so that committed files hold whole inputs."""
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
        self.finish(reading)
        if due and int(owners[-1]) < reading:  # the batch ended with an input
            self.commit()

    def write(self, tokens, lengths, val, owners, continued, more, features=None):
        """Append documents to the split's token files (those the cap, then dedup and decontamination leave),
        noting their ranges and counts. The Parts of a long document go to write_part (a build that screens
        reads every document whole, so they have no features)."""
        parts = continued | more
        if parts.any():
            starts = np.cumsum(lengths) - lengths
            for d in np.flatnonzero(parts):
                self.write_part(tokens[starts[d] : starts[d] + lengths[d]], int(owners[d]), continued[d], more[d])
            whole = ~parts
            tokens, lengths, val, owners = tokens[np.repeat(whole, lengths)], lengths[whole], val[whole], owners[whole]
        keep = self.within_cap(lengths, owners)
        if self.index is not None:
            keep &= self.screen(lengths, val, owners, features, keep)
        for split in fmt.SPLITS:
            docs = keep & (val if split == "val" else ~val)
            if not docs.any():
                continue
            placed = self.builder.writers[split].append(tokens[np.repeat(docs, lengths)], lengths[docs], owners[docs])
            if self.builder.placements is not None:
                self.place(placed, np.flatnonzero(docs), split, lengths, owners, features)
            for owner, file, start, end in placed:
                self.ranges[owner].append([split, file, start, end])
            split_index = fmt.SPLITS.index(split)
            np.add.at(self.counts[:, split_index, 0], owners[docs], 1)
            np.add.at(self.counts[:, split_index, 1], owners[docs], lengths[docs])
        for i in np.unique(owners[keep]):  # the last document of each input, which a grown input reads again
            d = np.flatnonzero((owners == i) & keep)[-1]
            split = "val" if val[d] else "train"
            file, end = next((r[1], r[3]) for r in reversed(self.ranges[i]) if r[0] == split)
            self.tails[i] = [split, file, end - int(lengths[d]), end]
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
        val, blank = self.ends.popleft()
        if blank:
            train.drop_document()
            self.stats[owner].empty += 1
            return
        split = "val" if val else "train"
        file, start, end = train.end_document(self.builder.writers[split], owner)
        self.ranges[owner].append([split, file, start, end])
        self.tails[owner] = [split, file, start, end]
        self.counts[owner, fmt.SPLITS.index(split)] += (1, end - start)
        self.summary.documents += 1
        self.summary.tokens += end - start

    def screen(self, lengths, val, owners, features, eligible):
        """Which documents (of those `eligible`) are neither contaminated nor duplicates of a kept document;
        each dropped one is noted with its input's record: position, kind, split, size, twin."""
        positions = np.empty(len(owners), np.int64)
        for d, i in enumerate(owners):  # a document's position counts every document its input yielded
            positions[d], self.read[i] = self.read[i], self.read[i] + 1
        self.positions = positions
        keep = np.ones(len(owners), bool)
        contamination = self.opts.get("contamination")
        clean = eligible & (features.contaminated == 0)
        for d in np.flatnonzero(eligible & ~clean):
            keep[d] = False
            self.note(owners[d], positions[d], "contaminated", val[d], lengths[d], features.sizes[d],
                      tasks=contamination.tasks_of(int(features.contaminated[d])))
        if self.opts.get("dedup"):
            docs = np.flatnonzero(clean)
            ids = [self.work[i].entry["id"] for i in owners[docs]]
            for d, found in zip(docs, self.index.decide(features.select(docs), ids, positions[docs])):
                if found is not None:
                    kind, twin, jaccard = found
                    keep[d] = False
                    self.note(owners[d], positions[d], kind, val[d], lengths[d], features.sizes[d], twin=twin, jaccard=round(jaccard, 4))
        return keep

    def place(self, placed, docs, split, lengths, owners, features):
        """Where each document written went, with its features, for a cluster task's commit to compare it
        with the other tasks' documents: (input id, position, split, file, start, end, exact, signature, bytes)."""
        k = 0
        for _, file, start, end in placed:
            at = start
            while at < end:
                d = docs[k]
                self.builder.placements.append((self.work[owners[d]].entry["id"], int(self.positions[d]), split, file, at,
                                                at + int(lengths[d]), features.exact[d], features.signatures[d], int(features.sizes[d])))
                at += int(lengths[d])
                k += 1

    def note(self, i, position, kind, val, tokens, size, **why):
        self.removed[i].append({"at": int(position), "kind": kind, "split": "val" if val else "train", "tokens": int(tokens),
                                "bytes": int(size), **why})
        self.summary.removed[kind] += 1
        totals = self.builder.removed_now.setdefault(kind, {"documents": 0, "tokens": 0, "bytes": 0})
        totals["documents"] += 1
        totals["tokens"] += int(tokens)
        totals["bytes"] += int(size)
        for task in why.get("tasks", ()):
            self.builder.removed_tasks[task] += 1

    def within_cap(self, lengths, owners):
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

    def finish(self, upto):
        """Record every input before `upto` not recorded yet."""
        while self.recorded < upto:
            i = self.recorded
            self.recorded += 1
            if i not in self.dropped:
                self.builder.record(self.record_of(i))
                stats = self.stats[i]
                self.summary.skipped.update(empty_documents=stats.empty, bad_records=stats.bad_records,
                                            binary_files=int(stats.binary), invalid_utf8_bytes=stats.invalid_utf8)

    def record_of(self, i):
        record = record_of(self.work[i], self.stats[i], self.counts[i], self.ranges[i], self.tails[i], self.prefixes[i])
        if self.index is not None:
            record["dedup"] = {"stamp": self.builder.run_id, "read": int(self.read[i]), "removed": self.removed[i]}
        return record

    def commit(self):
        self.builder.commit()
        self.last_commit = time.perf_counter()


def warn(message):
    tqdm.write(f"warning: {message}", file=sys.stderr)


def group_of(entry):
    """The Hugging Face dataset a capped input belongs to (a Hub dataset's files share one cap)."""
    return entry.get("group", entry["id"])


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
        documents = {s: documents[s] + before["documents"][s] - (s == old_tail[0]) for s in fmt.SPLITS}
        tokens = {s: tokens[s] + before["tokens"][s] - (old_tail[3] - old_tail[2] if s == old_tail[0] else 0) for s in fmt.SPLITS}
        skipped = {k: v + before["skipped"][k] for k, v in skipped.items()}
        invalid += before["invalid_utf8_bytes"]
        all_ranges = ranges_without(before["ranges"], old_tail) + all_ranges
        tail = tail or old_tail
    record.update(documents=documents, tokens=tokens, skipped=skipped, ranges=all_ranges, invalid_utf8_bytes=invalid)
    if stats.last_document_at is not None and tail is not None:
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


def ensure_val(builder, work, counts, ranges, tails):
    """A tiny corpus whose documents all hashed to train still gets a val split: the last document written
    moves to val, or, for a one-document corpus, the last `val_fraction` of its tokens (only those are read:
    the document may be larger than memory). Returns the input whose document moved, or None."""
    m = builder.manifest
    if any(r["documents"]["val"] for r in builder.sources.values()) or counts[:, 1, 0].sum() or not counts[:, 0, 0].sum():
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
    ranges[owner] = ranges_without(ranges[owner], ["train", file, start + keep, start + length])
    counts[owner, 0] -= (0 if keep else 1, length - keep)
    if keep:  # the tail starts a document of its own in val
        tokens = np.concatenate([np.array([m.tokenizer.eot_token], tokens.dtype), tokens])
    for _, f, a, b in builder.writers["val"].append(tokens, np.array([len(tokens)]), np.array([owner])):
        ranges[owner].append(["val", f, a, b])
        tails[owner] = None if keep else ["val", f, a, b]
    counts[owner, 1] += (1, len(tokens))
    return owner
