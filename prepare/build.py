"""Build or update a dataset directory: plan against the manifest, tokenize in parallel, publish last.

One run, top to bottom:
1. take the directory's lock, remove debris of crashed runs, read the current manifest;
2. plan: inputs whose identity is unchanged are kept; new inputs are tokenized; changed and deleted inputs
   drop every shard they touched, and the other inputs of those shards are tokenized again;
3. the main process reads documents and sends batches of them to worker processes, which tokenize them and
   assign each document to train or val; the main process appends the tokens to shard writers;
4. shards are fsynced and renamed as they fill, the manifest is replaced atomically last, and only then
   are dropped shards deleted.
A crash at any point leaves the previous manifest and every shard it names intact.
"""

import collections
import contextlib
import fcntl
import hashlib
import multiprocessing
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from prepare import format as fmt
from prepare.sources import SourceStats, content_hash, content_key, expand_source, iter_documents
from prepare.tokenizer import eot_token, load_encoding, ranks_hash

BATCH_CHARS = 1 << 20  # text sent to a worker at once: large enough to amortise the hand-over
SHAPING_OPTIONS = ("doc_sep", "text_field", "val_fraction")  # a change means the shards are stale
CAPPED_KINDS = ("hub", "disk")  # inputs that --max-tokens applies to: Hugging Face datasets


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
    """function(batch) for each batch, in order, with at most 2 batches per worker in flight."""
    if workers == 1:
        init_worker(*initargs)
        yield from ((extra, function(batch)) for extra, batch in batches)
        return
    with multiprocessing.get_context().Pool(workers, init_worker, initargs) as pool:
        pending = collections.deque()
        for extra, batch in batches:
            pending.append((extra, pool.apply_async(function, (batch,))))
            if len(pending) >= 2 * workers:
                extra, result = pending.popleft()
                yield extra, result.get()
        while pending:
            extra, result = pending.popleft()
            yield extra, result.get()


class ShardWriter:
    """Writes one split's documents into shards of at most `shard_tokens` tokens, whole documents only."""

    def __init__(self, data_dir, split, first_index, shard_tokens, dtype):
        self.data_dir, self.split, self.index = data_dir, split, first_index
        self.shard_tokens, self.dtype = shard_tokens, np.dtype(dtype)
        self.shards = []  # finished: (entry, {source index: documents})
        self.file = None

    def _open(self):
        self.name = fmt.shard_name(self.split, self.index)
        self.tmp = os.path.join(self.data_dir, self.name + fmt.TMP_SUFFIX)
        self.file = open(self.tmp, "wb")
        self.tokens, self.docs_by_source = 0, collections.Counter()
        self.last_doc = None  # (offset, length, source) for pop_last_document

    def append(self, tokens, lengths, sources):
        ends = np.cumsum(lengths)
        doc, pos = 0, 0
        while doc < len(lengths):
            if self.file is None:
                self._open()
            fits = int(np.searchsorted(ends[doc:] - pos, self.shard_tokens - self.tokens, side="right"))
            if fits == 0 and self.tokens:
                self.close()
                continue
            fits = max(fits, 1)  # a document longer than a shard gets a shard of its own
            end = int(ends[doc + fits - 1])
            self.file.write(tokens[pos:end].data)
            self.tokens += end - pos
            self.docs_by_source.update(sources[doc : doc + fits].tolist())
            self.last_doc = (self.tokens - int(lengths[doc + fits - 1]), int(lengths[doc + fits - 1]), int(sources[doc + fits - 1]))
            doc, pos = doc + fits, end

    def pop_last_document(self):
        """Take back the last document written to the open shard: (tokens, source), or None."""
        if self.file is None or self.last_doc is None:
            return None
        offset, length, source = self.last_doc
        self.file.flush()
        tokens = np.fromfile(self.tmp, self.dtype, count=length, offset=offset * self.dtype.itemsize)
        self.file.truncate(offset * self.dtype.itemsize)
        self.file.seek(offset * self.dtype.itemsize)
        self.tokens -= length
        self.docs_by_source[source] -= 1
        self.docs_by_source += collections.Counter()  # drop zero counts
        self.last_doc = None
        return tokens, source

    def close(self):
        """Make the open shard durable and visible under its final name."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        if not self.tokens:
            os.remove(self.tmp)
            return
        max_token = int(np.memmap(self.tmp, self.dtype, mode="r").max())
        entry = {
            "file": self.name,
            "tokens": self.tokens,
            "documents": sum(self.docs_by_source.values()),
            "bytes": self.tokens * self.dtype.itemsize,
            "sha256": fmt.sha256_file(self.tmp),
            "max_token": max_token,
        }
        os.replace(self.tmp, os.path.join(self.data_dir, self.name))
        self.shards.append((entry, dict(self.docs_by_source)))
        self.index += 1

    def finish(self):
        if self.file is not None:
            self.close()
        return self.shards

    def discard(self):
        """Remove everything this writer wrote: a failed run leaves the directory as it found it."""
        if self.file is not None:
            self.file.close()
            os.remove(self.tmp)
        for entry, _ in self.shards:
            os.remove(os.path.join(self.data_dir, entry["file"]))


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


def check_output_dir(data_dir):
    """Refuse a directory that holds anything but a gptmill dataset, so we never delete a user's files."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise BuildError(f"{data_dir}: exists and is not a directory")
    if os.path.isdir(data_dir):
        foreign = [n for n in sorted(os.listdir(data_dir)) if not fmt.is_ours(n)]
        if foreign:
            raise BuildError(f"{data_dir}: holds files that are not a gptmill dataset ({', '.join(foreign[:3])}); choose another --out")
    os.makedirs(data_dir, exist_ok=True)


def current_inputs(sources, opts):
    """The inputs the SOURCE arguments name now, by identity, each listed once. --max-tokens caps Hugging Face
    datasets (Hub or save_to_disk) only, and is part of their identity: changing it redoes them."""
    inputs = {}
    for source in sources:
        for entry in expand_source(source, opts["split"]):
            if entry["kind"] in CAPPED_KINDS:
                entry["max_tokens"] = opts["max_tokens"]
            inputs.setdefault(entry["id"], entry)
    return inputs


def plan(old, inputs, rebuild):
    """(kept source entries, shards kept per split, shards dropped, inputs to tokenize sorted by id)."""
    previous = {} if (rebuild or old is None) else {s["id"]: s for s in old["sources"]}
    kept, changed = {}, set(previous) - set(inputs)  # deleted inputs count as changed
    fresh = []
    for source_id, entry in inputs.items():
        before = previous.get(source_id)
        same_cap = before and before.get("max_tokens") == entry.get("max_tokens")
        same_stat = same_cap and entry["kind"] != "hub" and (before["size"], before["mtime_ns"]) == (entry["size"], entry["mtime_ns"])
        if same_stat:
            kept[source_id] = before
            continue
        entry[content_key(entry)] = content_hash(entry)
        if same_cap and before.get(content_key(entry)) == entry[content_key(entry)]:
            kept[source_id] = {**before, **entry}  # touched but identical: refresh size and mtime only
        else:
            fresh.append(entry)
            changed.add(source_id)

    shards = {split: [] if old is None else list(old["splits"][split]["shards"]) for split in fmt.SPLITS}
    dropped = [shard for split in fmt.SPLITS for shard in shards[split]] if rebuild else []
    if rebuild:
        shards = {split: [] for split in fmt.SPLITS}
    grew = True
    while grew:  # a dropped shard's other sources must be redone, which drops their other shards too
        grew = False
        for split in fmt.SPLITS:
            for shard in list(shards[split]):
                if changed & set(shard["sources"]):
                    shards[split].remove(shard)
                    dropped.append(shard)
                    grown = set(shard["sources"]) - changed
                    changed |= grown
                    grew = grew or bool(grown)
    for source_id in sorted(changed & set(kept)):
        before = kept.pop(source_id)
        fresh.append(inputs[source_id] | {content_key(before): before[content_key(before)]})
    fresh.sort(key=lambda e: e["id"])
    return kept, shards, dropped, fresh


def build(sources, data_dir, opts, workers, rebuild=False, wait=False):
    """Bring `data_dir` up to date with `sources`. Returns the manifest now in force."""
    encoding = load_encoding(opts["encoding"])
    check_output_dir(data_dir)
    with dataset_lock(data_dir, wait):
        old = fmt.read_manifest(data_dir) if os.path.exists(fmt.manifest_path(data_dir)) else None
        if old and not rebuild:
            wanted = {"encoding": encoding.name, **{k: opts[k] for k in SHAPING_OPTIONS}}
            built = {"encoding": old["tokenizer"]["name"], **old["options"]}
            differ = [f"{k} {built[k]!r} -> {wanted[k]!r}" for k in wanted if built.get(k) != wanted[k]]
            if differ:
                raise BuildError(f"{data_dir} was built with other options ({'; '.join(differ)}); pass --rebuild to redo it")
        for name in fmt.leftover_files(data_dir, old):
            os.remove(os.path.join(data_dir, name))

        start = time.perf_counter()
        inputs = current_inputs(sources, opts)
        kept, shards, dropped, fresh = plan(old, inputs, rebuild)
        if old and not fresh and not dropped and kept == {s["id"]: s for s in old["sources"]}:
            print(f"{data_dir}: up to date, {len(kept)} inputs unchanged, nothing tokenized")
            return old

        dtype = fmt.dtype_for_vocab(encoding.n_vocab)
        # New shards number above every shard of the old manifest, which stays valid until replaced.
        writers = {split: ShardWriter(data_dir, split, fmt.next_shard_index(old, split), opts["shard_tokens"], dtype) for split in fmt.SPLITS}
        stats = [SourceStats() for _ in fresh]
        counts = {split: np.zeros((2, len(fresh)), np.int64) for split in fmt.SPLITS}  # documents, tokens
        try:
            bytes_in = tokenize_inputs(fresh, stats, writers, counts, opts, workers, encoding.name, dtype)
            kept_docs = {split: sum(s["documents"] for s in shards[split]) for split in fmt.SPLITS}
            ensure_val(writers, counts, kept_docs, encoding, opts["val_fraction"])
            finished = {split: writers[split].finish() for split in fmt.SPLITS}
        except BaseException:
            for writer in writers.values():
                writer.discard()
            raise
        for split in fmt.SPLITS:
            for entry, docs_by_source in finished[split]:
                entry["sources"] = sorted(fresh[i]["id"] for i in docs_by_source)
                shards[split].append(entry)
        fmt.fsync_dir(data_dir)

        sources = dict(kept)
        for i, entry in enumerate(fresh):
            sources[entry["id"]] = entry | {
                "documents": {split: int(counts[split][0, i]) for split in fmt.SPLITS},
                "tokens": {split: int(counts[split][1, i]) for split in fmt.SPLITS},
                "skipped": {"empty_documents": stats[i].empty, "bad_records": stats[i].bad_records, "binary": stats[i].binary},
                "invalid_utf8_bytes": stats[i].invalid_utf8,
            }
        manifest = {
            "format": fmt.FORMAT,
            "version": fmt.VERSION,
            "tokenizer": {"name": encoding.name, "ranks_sha256": ranks_hash(encoding), "vocab_size": encoding.n_vocab, "eot_token": eot_token(encoding)},
            "dtype": dtype,
            "options": {k: opts[k] for k in SHAPING_OPTIONS},
            "splits": {
                split: {
                    "tokens": sum(s["tokens"] for s in shards[split]),
                    "documents": sum(s["documents"] for s in shards[split]),
                    "shards": sorted(shards[split], key=lambda s: s["file"]),
                }
                for split in fmt.SPLITS
            },
            "sources": [sources[k] for k in sorted(sources)],
        }
        fmt.write_manifest(data_dir, manifest)
        for shard in dropped:
            os.remove(fmt.shard_path(data_dir, shard))
        print(summary(data_dir, manifest, fresh, counts, stats, kept, dropped, bytes_in, time.perf_counter() - start))
        return manifest


def tokenize_inputs(fresh, stats, writers, counts, opts, workers, encoding_name, dtype):
    """Tokenize every document of `fresh` into the writers; returns the bytes of text tokenized."""
    capped = set()  # inputs that reached --max-tokens: their reader stops, their late documents are dropped
    taken = np.zeros(len(fresh), np.int64)
    text_bytes = 0
    total = sum(e.get("size", 0) for e in fresh) or None  # Hub inputs have no size: the bar then just counts
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not sys.stderr.isatty(), leave=False)

    def warn(message):
        tqdm.write(f"warning: {message}", file=sys.stderr)

    def batches():
        texts, owners, size = [], [], 0
        for i, entry in enumerate(fresh):
            for text in iter_documents(entry, opts, stats[i], warn):
                if i in capped:
                    break
                texts.append(text)
                owners.append(i)
                size += len(text)
                if size >= BATCH_CHARS:
                    yield np.array(owners), texts
                    texts, owners, size = [], [], 0
        if texts:
            yield np.array(owners), texts

    for owners, (tokens, lengths, val, size) in ordered_map(tokenize_batch, batches(), workers, (encoding_name, dtype, opts["val_fraction"])):
        text_bytes += size
        bar.update(size)
        keep = np.ones(len(owners), bool)
        if opts["max_tokens"]:
            for d, i in enumerate(owners):  # documents in order until the input's cap is reached
                if fresh[i]["kind"] not in CAPPED_KINDS:
                    continue
                keep[d] = taken[i] < opts["max_tokens"]
                taken[i] += lengths[d] if keep[d] else 0
                if taken[i] >= opts["max_tokens"]:
                    capped.add(i)
            val &= keep
        for split, docs in (("train", keep & ~val), ("val", val)):
            if docs.any():
                writers[split].append(tokens[np.repeat(docs, lengths)], lengths[docs], owners[docs])
                counts[split][0] += np.bincount(owners[docs], minlength=len(fresh))
                counts[split][1] += np.bincount(owners[docs], weights=lengths[docs], minlength=len(fresh)).astype(np.int64)
    bar.close()
    return text_bytes


def ensure_val(writers, counts, kept_docs, encoding, val_fraction):
    """A tiny corpus whose documents all hashed to train still gets a val split: the last document written
    moves to val, or, for a one-document corpus, the last `val_fraction` of its tokens."""
    if kept_docs["val"] or counts["val"][0].sum() or not counts["train"][0].sum():
        return
    popped = writers["train"].pop_last_document()
    if popped is None:
        return
    tokens, source = popped
    if kept_docs["train"] + counts["train"][0].sum() > 1:
        counts["train"][:, source] -= (1, len(tokens))
        counts["val"][:, source] += (1, len(tokens))
        writers["val"].append(tokens, np.array([len(tokens)]), np.array([source]))
        return
    cut = len(tokens) - max(1, int(len(tokens) * val_fraction))
    if cut < 2:  # too short to leave text on both sides
        writers["train"].append(tokens, np.array([len(tokens)]), np.array([source]))
        return
    tail = np.concatenate([np.array([eot_token(encoding)], tokens.dtype), tokens[cut:]])
    writers["train"].append(tokens[:cut], np.array([cut]), np.array([source]))
    writers["val"].append(tail, np.array([len(tail)]), np.array([source]))
    counts["train"][1, source] -= len(tokens) - cut
    counts["val"][:, source] += (1, len(tail))


def summary(data_dir, manifest, fresh, counts, stats, kept, dropped, text_bytes, seconds):
    docs = int(sum(counts[s][0].sum() for s in fmt.SPLITS))
    tokens = int(sum(counts[s][1].sum() for s in fmt.SPLITS))
    skipped = [
        f"{sum(s.empty for s in stats)} empty documents",
        f"{sum(s.bad_records for s in stats)} bad records",
        f"{sum(s.binary for s in stats)} binary files",
        f"{sum(s.invalid_utf8 for s in stats)} invalid UTF-8 bytes replaced",
    ]
    totals = manifest["splits"]
    return (
        f"{data_dir}: tokenized {len(fresh)} inputs ({len(kept)} unchanged, {len(dropped)} stale shards rebuilt): "
        f"{docs} documents, {tokens} tokens in {seconds:.1f} s ({text_bytes / 1e6 / seconds:.2f} MB/s, {tokens / seconds:,.0f} tokens/s); "
        f"skipped {', '.join(skipped)}; dataset now train {totals['train']['tokens']} / val {totals['val']['tokens']} tokens"
    )
