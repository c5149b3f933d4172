"""Build or update a dataset directory, doing work in proportion to what changed, and committing as it goes.

One run, top to bottom:
1. take the directory's lock, read the manifest in force and the per-input records;
2. plan, input by input: unchanged inputs are left alone; new and changed inputs are tokenized; an input
   that only grew (a JSONL file with records appended) has only its new records tokenized; the documents of
   changed and deleted inputs are retired from the live extents, never rewritten;
3. the main process reads documents and sends batches of them to worker processes, which tokenize them and
   assign each document to train or val; the main process appends the tokens to new token files;
4. every `--commit-every` seconds, at the end of an input, and at the end of the run, the open files are
   made durable and a new generation is published (`commit`): a kill loses at most the work since then.
A crash at any point leaves the last published generation and every file it names intact.
"""

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

from prepare import format as fmt
from prepare.maintain import collect_garbage, compact, merge_segments, subtract
from prepare.sources import SourceError, SourceStats, content_hash, content_key, expand_source, iter_documents, prefix_sha256
from prepare.tokenizer import eot_token, load_encoding, ranks_hash

BATCH_CHARS = 1 << 20  # text sent to a worker at once: large enough to amortise the hand-over
SHAPING_OPTIONS = ("doc_sep", "text_field", "val_fraction")  # a change means the tokens are stale
CAPPED_KINDS = ("hub_file", "disk")  # inputs --max-tokens applies to: Hugging Face datasets


class BuildError(Exception):
    pass


def is_val(text, val_fraction):
    """A document's split, by a hash of its content: stable whatever else is in the corpus."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2**64


# Worker processes: each loads the encoding once, then tokenizes batches of documents.
_worker = {}


def init_worker(encoding_name, dtype, val_fraction):
    encoding = load_encoding(encoding_name)
    _worker.update(encoding=encoding, eot=np.array([eot_token(encoding)], np.uint32), dtype=dtype, val_fraction=val_fraction)


def tokenize_batch(texts):
    """Token ids of each document preceded by end-of-text, concatenated; per-document lengths and splits;
    the UTF-8 bytes of the batch (for the MB/s of the summary)."""
    encoding, eot = _worker["encoding"], _worker["eot"]
    pieces, lengths, val = [], np.empty(len(texts), np.int64), np.empty(len(texts), bool)
    size = 0
    for i, text in enumerate(texts):
        ids = encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        pieces += (eot, ids)
        lengths[i] = len(ids) + 1
        val[i] = is_val(text, _worker["val_fraction"])
        size += len(text.encode("utf-8", "surrogatepass"))
    tokens = np.concatenate(pieces)
    if tokens.max() > np.iinfo(_worker["dtype"]).max:
        raise BuildError(f"token id {tokens.max()} does not fit {_worker['dtype']}; the encoding's n_vocab is wrong")
    return tokens.astype(_worker["dtype"]), lengths, val, size


def ordered_map(function, batches, workers, initargs):
    """function(batch) for each batch, in order, with at most 2 batches per worker in flight. A batch of None
    passes through in its place as a result of None (how the reader reports an error after what it read)."""
    if workers == 1:
        init_worker(*initargs)
        yield from ((extra, None if batch is None else function(batch)) for extra, batch in batches)
        return
    with multiprocessing.get_context().Pool(workers, init_worker, initargs) as pool:
        pending = collections.deque()
        for extra, batch in batches:
            pending.append((extra, None if batch is None else pool.apply_async(function, (batch,))))
            if len(pending) >= 2 * workers:
                extra, result = pending.popleft()
                yield extra, result and result.get()
        while pending:
            extra, result = pending.popleft()
            yield extra, result and result.get()


class FileWriter:
    """Writes one split's documents into new token files of at most `file_tokens` tokens, whole documents
    only, and says where each input's documents went."""

    def __init__(self, data_dir, split, run_id, file_tokens, dtype):
        self.data_dir, self.split, self.run_id = data_dir, split, run_id
        self.file_tokens, self.dtype = file_tokens, np.dtype(dtype)
        self.index, self.file, self.closed = 0, None, []  # closed: TokenFiles made durable since the last take

    def _open(self):
        self.name = fmt.token_file_name(self.split, self.run_id, self.index)
        self.tmp = fmt.token_path(self.data_dir, self.name) + fmt.TMP_SUFFIX
        self.file = open(self.tmp, "wb")
        self.tokens = 0
        self.last_doc = None  # (start, length, owner) for pop_last_document

    def append(self, tokens, lengths, owners):
        """Write documents; returns the ranges they fill: [(owner, file, start, end)], one per run of the
        same owner in one file."""
        ranges = []
        ends = np.cumsum(lengths)
        doc, pos = 0, 0
        while doc < len(lengths):
            if self.file is None:
                self._open()
            fits = int(np.searchsorted(ends[doc:] - pos, self.file_tokens - self.tokens, side="right"))
            if fits == 0 and self.tokens:
                self.close()
                continue
            fits = max(fits, 1)  # a document longer than a file gets a file of its own
            end = int(ends[doc + fits - 1])
            self.file.write(tokens[pos:end].data)
            at = self.tokens
            for d in range(doc, doc + fits):
                owner, length = int(owners[d]), int(lengths[d])
                if ranges and ranges[-1][0] == owner and ranges[-1][1] == self.name and ranges[-1][3] == at:
                    ranges[-1][3] = at + length
                else:
                    ranges.append([owner, self.name, at, at + length])
                at += length
            self.tokens = at
            self.last_doc = (at - int(lengths[doc + fits - 1]), int(lengths[doc + fits - 1]), int(owners[doc + fits - 1]))
            doc, pos = doc + fits, end
        return ranges

    def pop_last_document(self):
        """Take back the last document written to the open file: (tokens, owner, file, start), or None."""
        if self.file is None or self.last_doc is None:
            return None
        start, length, owner = self.last_doc
        self.file.flush()
        tokens = np.fromfile(self.tmp, self.dtype, count=length, offset=start * self.dtype.itemsize)
        self.file.truncate(start * self.dtype.itemsize)
        self.file.seek(start * self.dtype.itemsize)
        self.tokens -= length
        self.last_doc = None
        return tokens, owner, self.name, start

    def close(self):
        """Make the open file durable and visible under its final name."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        if not self.tokens:
            os.remove(self.tmp)
            return
        max_token = int(np.memmap(self.tmp, self.dtype, mode="r").max())
        self.closed.append(fmt.TokenFile(self.name, self.split, self.tokens, fmt.sha256_file(self.tmp), max_token))
        os.replace(self.tmp, fmt.token_path(self.data_dir, self.name))
        self.index += 1

    def take_closed(self):
        """Close the open file and hand over every file closed since the last call."""
        if self.file is not None:
            self.close()
        closed, self.closed = self.closed, []
        return closed

    def discard(self):
        """Remove the open file and every closed file not yet handed over: they are named by no manifest."""
        if self.file is not None:
            self.file.close()
            os.remove(self.tmp)
            self.file = None
        for f in self.closed:
            os.remove(fmt.token_path(self.data_dir, f.name))
        self.closed = []


@contextlib.contextmanager
def dataset_lock(data_dir, wait):
    """Exclusive use of a dataset directory; a second prepare waits (--wait) or stops with a message."""
    with open(os.path.join(data_dir, fmt.LOCK), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise BuildError(f"{data_dir}: another prepare is writing this dataset; rerun later or pass --wait") from None
            print(f"waiting for another prepare to finish with {data_dir}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check_no_job(data_dir):
    """Refuse to publish beside a cluster job: its tasks planned against the generation in force, which a new
    generation would make uncommittable."""
    running = fmt.jobs(data_dir)
    if running:
        raise BuildError(f"{data_dir}: a cluster job is in progress ({', '.join(running)}); `python -m prepare commit {data_dir}` "
                         f"publishes it once its tasks are done, `python -m prepare abort {data_dir}` abandons it")


def check_output_dir(data_dir, rebuild):
    """Refuse a directory that holds anything but a gptmill dataset, so we never delete a user's files. A
    dataset of format version 1 is upgraded by --rebuild (its files are removed), else refused."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise BuildError(f"{data_dir}: exists and is not a directory")
    if os.path.isdir(data_dir):
        foreign = [n for n in sorted(os.listdir(data_dir)) if not fmt.is_ours(n)]
        if foreign:
            raise BuildError(f"{data_dir}: holds files that are not a gptmill dataset ({', '.join(foreign[:3])}); choose another --out")
        if os.path.exists(fmt.manifest_path(data_dir)):
            try:
                fmt.read_manifest(data_dir)
            except fmt.DatasetError:
                if not (rebuild and fmt.is_version_1(data_dir)):
                    raise
                for name in os.listdir(data_dir):
                    if fmt.V1_SHARD.match(name) or name == fmt.MANIFEST:
                        os.remove(os.path.join(data_dir, name))
    os.makedirs(os.path.join(data_dir, fmt.TOKENS), exist_ok=True)


def current_inputs(sources, opts):
    """The inputs the SOURCE arguments name now, by identity, each listed once. --max-tokens caps Hugging Face
    datasets only (Hub files or save_to_disk), and is part of their identity."""
    inputs = {}
    for source in sources:
        for entry in expand_source(source, opts["split"]):
            if entry["kind"] in CAPPED_KINDS:
                entry["max_tokens"] = opts["max_tokens"]
            inputs.setdefault(entry["id"], entry)
    return inputs


@dataclasses.dataclass
class Work:
    """One input to tokenize: from its start, or (`resume_at` > 0) from where a grown JSONL file's old
    records end."""

    entry: dict
    before: dict | None = None  # its record, if the input was prepared before
    resume_at: int = 0


def plan(old_sources, inputs, rebuild):
    """(records kept as they are, records refreshed (touched but identical), work, ids deleted)."""
    previous = {} if rebuild else old_sources
    kept, refreshed, work = {}, {}, []
    for source_id, entry in inputs.items():
        before = previous.get(source_id)
        same_cap = before is not None and before.get("max_tokens") == entry.get("max_tokens")
        if same_cap and entry["kind"] != "hub_file" and (before["size"], before["mtime_ns"]) == (entry["size"], entry["mtime_ns"]):
            kept[source_id] = before
            continue
        if same_cap and entry["kind"] == "hub_file" and before["blob_id"] == entry["blob_id"]:
            kept[source_id] = before
            continue
        key = content_key(entry)
        if key:
            entry[key] = content_hash(entry)
        if same_cap and key and before.get(key) == entry[key]:
            refreshed[source_id] = {**before, **entry}  # touched but identical: size and mtime only
        elif same_cap and before.get("resume_at") and entry["size"] > before["size"] and \
                prefix_sha256(entry, before["resume_at"]) == before["prefix_sha256"]:
            work.append(Work(entry, before, before["resume_at"]))
        else:
            work.append(Work(entry, before))
    deleted = sorted(set(old_sources) - set(inputs)) if not rebuild else sorted(old_sources)
    work.sort(key=lambda w: w.entry["id"])
    return kept, refreshed, beyond_cap(work, {**kept, **refreshed}), deleted


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
                                    and taken[w.entry["group"]] >= w.entry["max_tokens"] and w.entry["id"] > last[w.entry["group"]])]


class Builder:
    """One run's state between commits: the manifest being extended, records to write, ranges to retire."""

    def __init__(self, data_dir, old, old_sources, tokenizer, opts, rebuild):
        self.data_dir, self.opts = data_dir, opts
        self.sources = {} if rebuild else dict(old_sources)  # every live input's record, as of the next commit
        self.run_id = fmt.new_run_id()
        self.dtype = fmt.dtype_for_vocab(tokenizer.vocab_size)
        if old is None or rebuild:
            self.manifest = fmt.Manifest(
                generation=old.generation if old else 0, tokenizer=tokenizer, dtype=self.dtype,
                options={k: opts[k] for k in SHAPING_OPTIONS}, files={}, extents={s: [] for s in fmt.SPLITS},
                documents={s: 0 for s in fmt.SPLITS}, segments=[],
            )
        else:
            self.manifest = dataclasses.replace(old, extents=dict(old.extents), files=dict(old.files),
                                                documents=dict(old.documents), segments=list(old.segments))
        # A commit of task results writes no tokens of its own: its writers stay unopened.
        self.writers = {s: FileWriter(data_dir, s, self.run_id, opts.get("shard_tokens", 1), self.dtype) for s in fmt.SPLITS}
        self.records, self.retired, self.deleted = {}, [], []  # what the next commit writes
        self.segment_index, self.commits = 0, 0

    def stage(self, old_sources, refreshed, deleted, work, rebuild):
        """What the plan decided before any tokenizing: refreshed records, and the documents that deleted,
        changed and grown inputs retire."""
        for record in refreshed.values():
            self.record(record)
        if rebuild:  # a rebuild starts from no records and no extents
            return
        for source_id in deleted:
            self.retire(old_sources[source_id])
            self.deleted.append(source_id)
        for item in work:
            if item.before:  # changed: every document goes; grown: only the last one, which is read again
                self.retire(item.before, [item.before["tail"]] if item.resume_at else None)

    def retire(self, record, ranges=None):
        """Take an input's documents (or the given ranges of them) out of the live extents."""
        for split, file, start, end in record["ranges"] if ranges is None else ranges:
            self.retired.append((split, fmt.Extent(file, start, end)))
        if ranges is None:
            self.sources.pop(record["id"], None)

    def record(self, record):
        """An input finished (or refreshed): its record goes into the next commit."""
        self.records[record["id"]] = self.sources[record["id"]] = record

    def commit(self, extra_files=()):
        """Publish a new generation with every file closed and every input finished since the last one (and
        `extra_files`, written by tasks)."""
        new_files = [f for w in self.writers.values() for f in w.take_closed()] + list(extra_files)
        if not (new_files or self.records or self.retired or self.deleted):
            return
        fmt.fsync_dir(os.path.join(self.data_dir, fmt.TOKENS))
        m = self.manifest
        for f in new_files:
            m.files[f.name] = f
            m.extents[f.split] = m.extents[f.split] + [fmt.Extent(f.name, 0, f.tokens)]
        for split in fmt.SPLITS:
            m.extents[split] = subtract(m.extents[split], [e for s, e in self.retired if s == split])
        live = {e.file for s in fmt.SPLITS for e in m.extents[s]}
        m.files = {name: f for name, f in m.files.items() if name in live}
        m.documents = {s: sum(r["documents"][s] for r in self.sources.values()) for s in fmt.SPLITS}
        records = list(self.records.values()) + [{"id": i, "deleted": True} for i in self.deleted]
        name = fmt.segment_name(self.run_id, self.segment_index)
        fmt.write_segment(self.data_dir, name, records)
        m.segments, self.segment_index = merge_segments(self.data_dir, m.segments + [[name, len(records)]], self.run_id, self.segment_index + 1)
        m.generation += 1
        fmt.publish(self.data_dir, m)
        self.records, self.retired, self.deleted = {}, [], []
        self.commits += 1

    def discard(self):
        for writer in self.writers.values():
            writer.discard()


def open_build(data_dir, opts, rebuild):
    """(tokenizer, manifest in force or None, its input records), after checking the options match."""
    encoding = load_encoding(opts["encoding"])
    tokenizer = fmt.Tokenizer(encoding.name, ranks_hash(encoding), encoding.n_vocab, eot_token(encoding))
    old = fmt.read_manifest(data_dir) if os.path.exists(fmt.manifest_path(data_dir)) else None
    if old and not rebuild:
        wanted = {"encoding": encoding.name, **{k: opts[k] for k in SHAPING_OPTIONS}}
        built = {"encoding": old.tokenizer.name, **old.options}
        differ = [f"{k} {built[k]!r} -> {wanted[k]!r}" for k in wanted if built.get(k) != wanted[k]]
        if differ:
            raise BuildError(f"{data_dir} was built with other options ({'; '.join(differ)}); pass --rebuild to redo it")
    return tokenizer, old, fmt.read_sources(data_dir, old)


def build(sources, data_dir, opts, workers, rebuild=False, wait=False):
    """Bring `data_dir` up to date with `sources`. Returns the manifest now in force."""
    start = time.perf_counter()
    # An unknown encoding or a missing SOURCE is reported before anything is created.
    load_encoding(opts["encoding"])
    inputs = current_inputs(sources, opts)
    created = not os.path.exists(data_dir)
    check_output_dir(data_dir, rebuild)
    try:
        return build_locked(inputs, data_dir, opts, workers, rebuild, wait, start)
    except BaseException:
        if created and not os.path.exists(fmt.manifest_path(data_dir)):  # a first build that published nothing
            shutil.rmtree(data_dir, ignore_errors=True)
        raise


def build_locked(inputs, data_dir, opts, workers, rebuild, wait, start):
    """Under the lock: plan `inputs` against the records in force, tokenize what changed, commit."""
    with dataset_lock(data_dir, wait):
        check_no_job(data_dir)
        tokenizer, old, old_sources = open_build(data_dir, opts, rebuild)
        kept, refreshed, work, deleted = plan(old_sources, inputs, rebuild)
        if old and not rebuild and not work and not deleted and not refreshed:
            print(f"{data_dir}: up to date, {len(kept)} inputs unchanged, nothing tokenized")
            return old
        builder = Builder(data_dir, old, old_sources, tokenizer, opts, rebuild)
        builder.stage(old_sources, refreshed, deleted, work, rebuild)
        try:
            summary = tokenize_inputs(builder, work, kept, opts, workers)
            builder.commit()
        except BaseException:
            builder.discard()
            raise
        m = finish_commits(data_dir, builder.manifest, opts)
        print(summary.line(data_dir, m, time.perf_counter() - start))
        return m


def finish_commits(data_dir, manifest, opts):
    """After a build's last commit: collect garbage, compact past the threshold. Returns the manifest in force."""
    collect_garbage(data_dir)
    total = sum(f.tokens for f in manifest.files.values())
    if opts.get("compact_at") is not None and manifest.dead_tokens() > opts["compact_at"] * total:
        compact(data_dir, opts["shard_tokens"])
        return fmt.read_manifest(data_dir)
    return manifest


@dataclasses.dataclass
class Summary:
    inputs: int = 0
    kept: int = 0
    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    commits: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def line(self, data_dir, manifest, seconds):
        skipped = ", ".join(f"{self.skipped[k]} {k.replace('_', ' ')}" for k in ("empty_documents", "bad_records", "binary_files", "invalid_utf8_bytes"))
        return (
            f"{data_dir}: tokenized {self.inputs} inputs ({self.kept} unchanged): {self.documents} documents, "
            f"{self.tokens} tokens in {seconds:.1f} s ({self.text_bytes / 1e6 / seconds:.2f} MB/s, "
            f"{self.tokens / seconds:,.0f} tokens/s), {self.commits} commits; skipped {skipped}; "
            f"dataset now generation {manifest.generation}, train {manifest.tokens('train')} / val {manifest.tokens('val')} tokens"
        )


def tokenize_inputs(builder, work, kept, opts, workers, val_fallback=True):
    """Tokenize `work` into the builder's writers, committing every --commit-every seconds between inputs.
    `val_fallback`: give a corpus with no val document one (see ensure_val)."""
    summary = Summary(inputs=len(work), kept=len(kept))
    stats = [SourceStats() for _ in work]
    counts = np.zeros((len(work), 2, 2), np.int64)  # input, split, (documents, tokens)
    ranges = [[] for _ in work]
    tails = [None] * len(work)  # [split, file, start, end] of each input's last document
    cap = opts["max_tokens"]
    group_tokens = collections.Counter()  # tokens taken from each capped Hugging Face dataset so far
    for record in kept.values():
        if record["kind"] in CAPPED_KINDS and record.get("max_tokens"):
            group_tokens[group_of(record)] += sum(record["tokens"].values())
    started, dropped = set(), set()  # Hub files begun, and those past the cap (not taken)
    total = sum(w.entry.get("size", 0) - w.resume_at for w in work) or None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not sys.stderr.isatty(), leave=False)
    last_commit = [time.perf_counter()]

    def warn(message):
        tqdm.write(f"warning: {message}", file=sys.stderr)

    def over_cap(i):  # may lag the documents in flight; `write` decides exactly
        entry = work[i].entry
        return bool(cap) and entry["kind"] in CAPPED_KINDS and group_tokens[group_of(entry)] >= cap

    def batches():
        """Batches of documents, each with the index of the input being read when it was sent: every input
        before it has been read whole. A batch ends at an input's end when a commit is due. Bad input ends
        the stream with (error, None) after the documents of the inputs before it."""
        texts, owners, size = [], [], 0
        for i, item in enumerate(work):
            if texts and time.perf_counter() - last_commit[0] >= opts["commit_every"]:
                yield (np.array(owners), i), texts
                texts, owners, size = [], [], 0
            try:
                for text in iter_documents(item.entry, opts, stats[i], warn, item.resume_at):
                    if over_cap(i):
                        break
                    texts.append(text)
                    owners.append(i)
                    size += len(text)
                    if size >= BATCH_CHARS:
                        yield (np.array(owners), i), texts
                        texts, owners, size = [], [], 0
            except SourceError as error:
                before = [k for k, owner in enumerate(owners) if owner < i]
                if before:
                    yield (np.array(owners)[before], i), [texts[k] for k in before]
                yield (error, i), None
                return
        if texts:
            yield (np.array(owners), len(work)), texts

    def write(tokens, lengths, val, owners):
        keep = np.ones(len(owners), bool)
        if cap:
            for d, i in enumerate(owners):
                entry = work[i].entry
                if entry["kind"] not in CAPPED_KINDS:
                    continue
                group = group_of(entry)
                if entry["kind"] == "hub_file":  # whole files, in order, until the dataset's cap is reached
                    if i not in started and group_tokens[group] >= cap:
                        dropped.add(i)
                    started.add(i)
                    keep[d] = i not in dropped
                else:  # one save_to_disk dataset: documents until its cap
                    keep[d] = group_tokens[group] < cap
                group_tokens[group] += lengths[d] if keep[d] else 0
        for split in fmt.SPLITS:
            docs = keep & (val if split == "val" else ~val)
            if not docs.any():
                continue
            placed = builder.writers[split].append(tokens[np.repeat(docs, lengths)], lengths[docs], owners[docs])
            for owner, file, start, end in placed:
                ranges[owner].append([split, file, start, end])
            split_index = fmt.SPLITS.index(split)
            np.add.at(counts[:, split_index, 0], owners[docs], 1)
            np.add.at(counts[:, split_index, 1], owners[docs], lengths[docs])
        for i in np.unique(owners[keep]):  # the last document of each input, which a grown input reads again
            d = np.flatnonzero((owners == i) & keep)[-1]
            split = "val" if val[d] else "train"
            file, end = next((r[1], r[3]) for r in reversed(ranges[i]) if r[0] == split)
            tails[i] = [split, file, end - int(lengths[d]), end]
        summary.documents += int(keep.sum())
        summary.tokens += int(lengths[keep].sum())

    recorded = 0  # inputs before this one are finished and recorded

    def finish(upto):
        """Record every input before `upto` not recorded yet."""
        nonlocal recorded
        while recorded < upto:
            i = recorded
            recorded += 1
            if i not in dropped:
                builder.record(record_of(work[i], stats[i], counts[i], ranges[i], tails[i]))
                summary.skipped.update(empty_documents=stats[i].empty, bad_records=stats[i].bad_records,
                                       binary_files=int(stats[i].binary), invalid_utf8_bytes=stats[i].invalid_utf8)

    def commit():
        builder.commit()
        last_commit[0] = time.perf_counter()

    for (owners, reading), result in ordered_map(
        tokenize_batch, batches(), workers, (builder.manifest.tokenizer.name, builder.dtype, opts["val_fraction"])
    ):
        if result is None:  # bad input: commit the inputs before it if none of its documents are written
            if not counts[reading].any():
                finish(reading)
                commit()
            raise owners
        tokens, lengths, val, size = result
        summary.text_bytes += size
        bar.update(size)
        due = time.perf_counter() - last_commit[0] >= opts["commit_every"]
        # A due commit happens where one input ends and the next begins, so committed files hold whole inputs.
        boundaries = np.flatnonzero(np.diff(owners)) + 1
        if due and (len(boundaries) or recorded < int(owners[0])):
            cut = int(boundaries[0]) if len(boundaries) else 0
            offset = int(lengths[:cut].sum())
            write(tokens[:offset], lengths[:cut], val[:cut], owners[:cut])
            finish(int(owners[cut]))
            commit()
            tokens, lengths, val, owners = tokens[offset:], lengths[cut:], val[cut:], owners[cut:]
            due = False
        write(tokens, lengths, val, owners)
        finish(reading)
        if due and int(owners[-1]) < reading:  # the batch ended with an input
            commit()
    moved = ensure_val(builder, work, counts, ranges, tails) if val_fallback else None
    finish(len(work))
    if moved is not None:
        builder.record(record_of(work[moved], stats[moved], counts[moved], ranges[moved], tails[moved]))
    bar.close()
    summary.commits = builder.commits + 1
    return summary


def group_of(entry):
    """The Hugging Face dataset a capped input belongs to (a Hub dataset's files share one cap)."""
    return entry.get("group", entry["id"])


def record_of(item, stats, counts, ranges, tail):
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
        record.update(resume_at=stats.last_document_at, prefix_sha256=prefix_sha256(item.entry, stats.last_document_at), tail=tail)
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
    moves to val, or, for a one-document corpus, the last `val_fraction` of its tokens. Returns the input
    whose document moved, or None."""
    m = builder.manifest
    if any(r["documents"]["val"] for r in builder.sources.values()) or counts[:, 1, 0].sum() or not counts[:, 0, 0].sum():
        return None
    popped = builder.writers["train"].pop_last_document()
    if popped is None:
        return None
    tokens, owner, file, start = popped
    ranges[owner] = ranges_without(ranges[owner], ["train", file, start, start + len(tokens)])
    counts[owner, 0] -= (1, len(tokens))
    ours = {w.entry["id"] for w in work}
    others = sum(r["documents"]["train"] for i, r in builder.sources.items() if i not in ours)
    others += sum(w.before["documents"]["train"] for w in work if w.resume_at)  # a grown input's older records
    if others + counts[:, 0, 0].sum() >= 1:
        pieces = [(tokens, "val")]
    else:
        cut = len(tokens) - max(1, int(len(tokens) * builder.opts["val_fraction"]))
        if cut < 2:  # too short to leave text on both sides
            pieces = [(tokens, "train")]
        else:
            tail = np.concatenate([np.array([m.tokenizer.eot_token], tokens.dtype), tokens[cut:]])
            pieces = [(tokens[:cut], "train"), (tail, "val")]
    for piece, split in pieces:
        for _, f, a, b in builder.writers[split].append(piece, np.array([len(piece)]), np.array([owner])):
            ranges[owner].append([split, f, a, b])
            tails[owner] = [split, f, a, b] if len(pieces) == 1 else None
        counts[owner, fmt.SPLITS.index(split)] += (1, len(piece))
    return owner
