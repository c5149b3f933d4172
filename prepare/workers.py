"""The workers of a build: what each is sent (a Batch: documents the main process read, or small files to read
itself) and what it sends back (Tokenized: the ids, each document's length, split and input, and what the screens
need of it). Workers do the CPU-bound part; the main process keeps the order and writes. They are threads of the
main process where the encoder is gigatoken (one encoder in memory, and the ids handed over as they are), processes
where it is tiktoken (docs/benchmarks.md)."""

import collections
import dataclasses
import hashlib
import multiprocessing
import multiprocessing.pool

import numpy as np

from prepare import filtering
from prepare.plan import BuildError
from prepare.screening import Features, features, screens
from prepare.readers import hashed_text_file, iter_documents
from prepare.readers.base import Part, SourceError, SourceStats
from prepare.sources import identify, prefix_sha256
from prepare.tokenizer import encoder_for, eot_token, load_encoding


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
    # A text that is a Part of a long document (readers.base.Part): whether it continues the one before (then it has
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
    its SourceStats, the sha256 of the bytes before its last document, its warnings); under --dedup,
    --decontaminate or the filters, each document's Features."""

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
    features: Features | None = None


# Each worker has the encoding and its encoder (the main process's, which chose it: threads share it, a forked worker
# inherits it), then reads and tokenizes batches.
_worker = {}


def init_worker(encoding_name, dtype, opts):
    encoding = load_encoding(encoding_name)
    _worker.update(encoder=encoder_for(encoding, opts["encoder"]), eot=np.array([eot_token(encoding)], np.uint32),
                   dtype=dtype, opts=opts)


def read_inputs(batch):
    """The documents of a batch's own inputs, read here: (texts, owners, read, reading, error)."""
    texts, owners, read = [], [], {}
    for index, entry in batch.inputs:
        stats, warnings, before = SourceStats(), [], len(texts)
        try:
            if entry["kind"] == "file" and entry["format"] == "text" and "sha256" not in entry:
                sha, documents = hashed_text_file(entry, _worker["opts"], stats, warnings.append)
            else:
                sha, documents = identify(entry), iter_documents(entry, _worker["opts"], stats, warnings.append)
            for text in documents:
                texts.append(text)
                owners.append(index)
            resumable = stats.last_document_at is not None and entry["kind"] == "file"  # an object changes whole
            prefix = prefix_sha256(entry, stats.last_document_at) if resumable else None
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
    verdicts = None
    if filtering.active(_worker["opts"]):  # measured as read; what is tokenized, split and hashed is redacted
        texts, verdicts = filtering.judge(texts, _worker["opts"])
    chosen, eot, dtype, opts = _worker["encoder"], _worker["eot"], _worker["dtype"], _worker["opts"]
    pieces, lengths, val = [eot[:0]], np.empty(len(texts), np.int64), np.zeros(len(texts), bool)
    continued = np.zeros(len(texts), bool) if batch.inputs or not batch.continued else np.array(batch.continued)
    more = np.zeros(len(texts), bool) if batch.inputs or not batch.more else np.array(batch.more)
    sizes = np.empty(len(texts), np.int64)
    for i, text in enumerate(texts):
        ids = chosen.encode(text)
        pieces += (ids,) if continued[i] else (eot, ids)
        lengths[i] = len(ids) + (not continued[i])
        text_bytes = text.encode("utf-8", "surrogatepass")
        if not (continued[i] or more[i]):  # a Part's document is given its split where it ends (Pipeline.batches)
            val[i] = is_val(text_bytes, opts["val_fraction"])
        sizes[i] = len(text_bytes)
    tokens = np.concatenate(pieces)
    if len(tokens) and tokens.max() > np.iinfo(dtype).max:
        raise BuildError(f"token id {tokens.max()} does not fit {dtype}; the encoding's n_vocab is wrong")
    screened = features(texts, sizes, opts, verdicts) if screens(opts) else None
    return Tokenized(reading, tokens.astype(dtype), lengths, val, np.array(owners, np.int64), int(sizes.sum()), read,
                     error, continued, more, screened)


def ordered_map(function, batches, workers, initargs, threads):
    """function(batch) for each batch, in order, with at most 2 batches per worker in flight; the workers are
    threads of this process if `threads`, else processes."""
    if workers == 1:
        init_worker(*initargs)
        yield from map(function, batches)
        return
    pool = multiprocessing.pool.ThreadPool if threads else multiprocessing.get_context().Pool
    with pool(workers, init_worker, initargs) as pool:
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(function, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
