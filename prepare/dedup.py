"""Clean corpora: the documents a build drops before writing them (exact and near duplicates, documents that
share text with a downstream task), and the index of the documents it kept.

Features of a document (computed by the tokenizer workers, prepare/pipeline.py):
- its *exact key*: blake2b-128 of the text lowercased, with its ASCII whitespace removed (the light
  normalisation of `--dedup exact`);
- its *words*: runs of ASCII letters, digits and '_' and of non-ASCII characters in the lowercased text,
  each hashed to 64 bits (a polynomial hash of its bytes, mixed; in numpy, a whole document at once);
- its *shingles*: the word 5-grams (a document of fewer words is one shingle), each hashed to 32 bits, and
  its MinHash *signature*: for each of 112 hash functions x -> (a x + b) mod 2^32, the least over its shingles;
- its word 13-grams, for decontamination.

A build reads documents in its input order (inputs sorted by identity, documents in file order) and drops
one that shares a 13-gram with an item of a task named by `--decontaminate`; else (`--dedup exact` or
`near`) one whose exact key equals a kept document's; else (`near`) one whose signature agrees with a kept
document's in all 8 rows of one of 14 bands (a *candidate*, found by the band's bucket) and in at least
DUPLICATE_JACCARD of its 112 values (the estimated Jaccard similarity of their shingle sets). Kept
documents are those already in the dataset and those kept earlier in the build, whatever their split: the
earlier copy stays, so a later near twin in val of a train document is dropped (and the reverse).

The index of kept documents is immutable parts in the dataset directory (prepare/format.py), named by the
manifest of each generation. A row is live while its input's record carries the stamp of the build that
indexed it: an input changed or deleted is out of the index at once, and never matches its new version.
"""

import collections
import dataclasses
import hashlib

import numpy as np

from prepare import format as fmt

SHINGLE_WORDS = 5
BANDS, ROWS = 14, 8
PERMUTATIONS = BANDS * ROWS
DUPLICATE_JACCARD = 0.8  # T: a candidate is a near duplicate when its estimated Jaccard similarity is at least this
CONTAMINATION_WORDS = 13  # GPT-3's n-gram length
CHUNK = 2048  # shingles minhashed at once: a huge document costs bounded memory

_rng = np.random.default_rng(0x6770746D696C6C)  # fixed: signatures stored in a dataset must stay comparable
GRAM = _rng.integers(1, 2**63, CONTAMINATION_WORDS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
PERMUTE_A = (_rng.integers(0, 2**31, PERMUTATIONS, dtype=np.uint32) * np.uint32(2) + np.uint32(1)).astype(np.uint32)
PERMUTE_B = _rng.integers(0, 2**32, PERMUTATIONS, dtype=np.uint64).astype(np.uint32)
BAND_MIX = _rng.integers(1, 2**63, ROWS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
EMPTY = np.iinfo(np.uint32).max  # the signature value of a document without words

WORD_BYTE = np.zeros(256, bool)
WORD_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789_", np.uint8)] = True
WORD_BYTE[128:] = True  # every byte of a UTF-8 encoded non-ASCII character


def mix(x):
    """splitmix64's finaliser, in place on a uint64 array: every input bit moves every output bit."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


WHITESPACE = b" \t\n\r\x0b\x0c"


def lowered_bytes(text):
    return text.lower().encode("utf-8", "surrogatepass")


def exact_key(lowered):
    """128 bits of the text --dedup exact compares (lowercased, ASCII whitespace removed), as two uint64."""
    digest = hashlib.blake2b(lowered.translate(None, WHITESPACE), digest_size=16).digest()
    return np.frombuffer(digest, "<u8")


_powers = []  # [R^i], [R^-i] mod 2^64 for i < WINDOW, made on first use


def powers():
    if not _powers:
        radix = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64
        inverse = np.uint64(pow(int(radix), -1, 1 << 64))
        for r in (radix, inverse):
            _powers.append(np.concatenate(([np.uint64(1)], np.cumprod(np.full(WINDOW - 1, r, np.uint64)))))
    return _powers


WINDOW = 1 << 18  # bytes hashed at once: prefix sums over a window, not the whole document


def word_hashes(lowered):
    """A 64-bit hash of each word of the lowercased UTF-8 text, in order: the polynomial sum(byte_k R^k) of its
    bytes, from prefix sums over the text (R^-start moves each word to its own origin), then mixed."""
    data = np.frombuffer(lowered, np.uint8)
    inside = WORD_BYTE[data]
    edges = np.flatnonzero(inside[1:] != inside[:-1]) + 1
    if len(data) and inside[0]:
        edges = np.concatenate(([0], edges))
    if len(data) and inside[-1]:
        edges = np.concatenate((edges, [len(data)]))
    starts, ends = edges[0::2], edges[1::2]
    ends = np.minimum(ends, starts + WINDOW - 1)  # a word longer than a window is hashed by its start
    power, inverse = powers()
    out, i = np.empty(len(starts), np.uint64), 0
    while i < len(starts):
        base = starts[i]
        j = max(int(np.searchsorted(ends, base + WINDOW - 1, "right")), i + 1)
        span = int(ends[j - 1] - base)
        prefix = np.zeros(span + 1, np.uint64)
        np.multiply(data[base : base + span], power[:span], out=prefix[1:], dtype=np.uint64)
        np.cumsum(prefix, out=prefix)
        a, b = starts[i:j] - base, ends[i:j] - base
        out[i:j] = (prefix[b] - prefix[a]) * inverse[a]
        i = j
    return mix(out ^ (ends - starts).astype(np.uint64))


def ngram_hashes(words, n, whole_if_short=False):
    """A 64-bit hash of each run of n consecutive words (none if fewer words, or one of them all with
    `whole_if_short`)."""
    if len(words) < n:
        if not (whole_if_short and len(words)):
            return np.empty(0, np.uint64)
        n = len(words)
    count = len(words) - n + 1
    total = np.zeros(count, np.uint64)
    for i in range(n):
        total += words[i : i + count] * GRAM[i]
    return mix(total ^ np.uint64(n))


def shingle_hashes(text, n=SHINGLE_WORDS):
    """The hashes of a text's word n-grams (one of all its words if fewer)."""
    return ngram_hashes(word_hashes(lowered_bytes(text)), n, whole_if_short=True)


def signature(shingles):
    """The 112 MinHash values of a document's shingle hashes (all EMPTY for none)."""
    out = np.full(PERMUTATIONS, EMPTY, np.uint32)
    values = (shingles >> np.uint64(32)).astype(np.uint32)
    buffer = np.empty((min(CHUNK, len(values)), PERMUTATIONS), np.uint32)
    for a in range(0, len(values), CHUNK):
        chunk = buffer[: len(values) - a] if len(values) - a < CHUNK else buffer
        np.multiply(values[a : a + CHUNK, None], PERMUTE_A, out=chunk)  # mod 2^32
        chunk += PERMUTE_B
        np.minimum(out, chunk.min(0), out=out)
    return out


def band_keys(signatures):
    """(documents, 14) uint64: a hash of each band's 8 values; equal keys are the LSH candidates."""
    rows = signatures.reshape(len(signatures), BANDS, ROWS).astype(np.uint64)
    return mix((rows * BAND_MIX).sum(axis=2) + np.arange(BANDS, dtype=np.uint64))


def removal_probability(jaccard):
    """The chance that a document whose shingle set has this Jaccard similarity with a kept one is dropped as
    its near duplicate: a candidate (all 8 rows of some band agree) and at least DUPLICATE_JACCARD of the 112
    values agree, each value agreeing with probability `jaccard`, independently."""
    from math import comb

    need = int(np.ceil(DUPLICATE_JACCARD * PERMUTATIONS - 1e-9))
    band = [comb(ROWS, k) * jaccard**k * (1 - jaccard) ** (ROWS - k) for k in range(ROWS + 1)]
    # state[full][agreeing values so far]: `full` once some band agreed in all its rows
    state = np.zeros((2, PERMUTATIONS + 1))
    state[0, 0] = 1.0
    for _ in range(BANDS):
        new = np.zeros_like(state)
        for k, p in enumerate(band):
            full = k == ROWS
            new[1, k:] += p * state[1, : PERMUTATIONS + 1 - k]
            new[int(full), k:] += p * state[0, : PERMUTATIONS + 1 - k]
        state = new
    return float(state[1, need:].sum())


@dataclasses.dataclass
class Features:
    """What the main process needs of a batch's documents to decide: exact keys (n, 2), signatures (n, 112)
    (n, 0) without near dedup), a bitmask of the tasks each shares a 13-gram with, and UTF-8 sizes."""

    exact: np.ndarray
    signatures: np.ndarray
    contaminated: np.ndarray
    sizes: np.ndarray

    def select(self, docs):
        return Features(self.exact[docs], self.signatures[docs], self.contaminated[docs], self.sizes[docs])


def features(texts, sizes, opts):
    """Features of a batch's documents under the build's options."""
    near = opts.get("dedup") == "near"
    contamination = opts.get("contamination")
    n = len(texts)
    exact = np.zeros((n, 2), np.uint64)
    signatures = np.zeros((n, PERMUTATIONS if near else 0), np.uint32)
    contaminated = np.zeros(n, np.int64)
    for i, text in enumerate(texts):
        lowered = lowered_bytes(text)
        exact[i] = exact_key(lowered)
        if near or contamination:
            words = word_hashes(lowered)
        if near:
            signatures[i] = signature(ngram_hashes(words, SHINGLE_WORDS, whole_if_short=True))
        if contamination:
            contaminated[i] = contamination.mask(ngram_hashes(words, CONTAMINATION_WORDS))
    return Features(exact, signatures, contaminated, np.asarray(sizes, np.int64))


# Decontamination: the 13-grams of downstream task items.


class Contamination:
    """The 13-grams of every item of some tasks: a sorted array of their hashes, each with a bitmask of the
    tasks it occurs in."""

    def __init__(self, tasks):
        self.names = list(tasks)
        grams = [ngram_hashes(word_hashes(lowered_bytes(text)), CONTAMINATION_WORDS) for texts in tasks.values() for text in texts]
        owners = [np.full(len(g), 1 << k, np.int64) for g, k in zip(grams, [k for k, texts in enumerate(tasks.values()) for _ in texts])]
        grams = np.concatenate(grams) if grams else np.empty(0, np.uint64)
        owners = np.concatenate(owners) if owners else np.empty(0, np.int64)
        order = np.argsort(grams, kind="stable")
        grams, owners = grams[order], owners[order]
        self.grams, starts = np.unique(grams, return_index=True)
        self.masks = np.bitwise_or.reduceat(owners, starts) if len(starts) else owners

    def mask(self, grams):
        if not len(grams) or not len(self.grams):
            return 0
        at = np.minimum(np.searchsorted(self.grams, grams), len(self.grams) - 1)
        hit = self.grams[at] == grams
        return int(np.bitwise_or.reduce(self.masks[at[hit]])) if hit.any() else 0

    def tasks_of(self, mask):
        return [name for k, name in enumerate(self.names) if mask >> k & 1]


def load_contamination(suites):
    """The Contamination of the suites named (hellaswag, core), read from the files `train score` uses (its
    cache; downloaded there the first time, as `train score` does)."""
    from prepare.evals import item_texts

    return Contamination({name: texts for suite in suites for name, texts in item_texts(suite).items()})


# The index of kept documents.


class Index:
    """The kept documents a build compares new ones with: the dataset's parts (live rows only) and those kept
    since the build began (in memory, until a commit writes them as a part)."""

    def __init__(self, data_dir, parts, sources, stamp, near, own_lookup=True):
        self.data_dir, self.stamp, self.near, self.own_lookup = data_dir, stamp, near, own_lookup
        # Rows kept by this build not yet in a part: (input id, position, exact key, signature, stamp); lookups by
        # exact key and band.
        self.rows, self.waiting = [], []
        self.reopen(parts, sources)

    def reopen(self, parts, sources):
        """Look up the dataset's documents in `parts` (the index in force, with this build's committed rows), and
        keep in memory only the rows not in a part yet: memory holds what the build kept since its last commit."""
        self.parts = []
        for name, _ in parts:
            part = fmt.open_index_part(self.data_dir, name)
            part.live = np.array([stamp_of(sources.get(i)) == s for i, s in part.inputs], bool)
            self.parts.append(part)
        rows, self.rows, self.waiting = [self.rows[r] for r in self.waiting], [], []
        self.by_exact, self.by_band = {}, [collections.defaultdict(list) for _ in range(BANDS)]
        for row in rows:
            self.add(*row[:4], band_keys(row[3][None])[0] if self.near else None, row[4])

    def decide(self, feats, owners, positions, stamps=None):
        """For each document in order: None to keep it (it joins the index), or (kind, twin, jaccard), twin being
        [input id, stamp, position] of the kept copy. `stamps`: each document's, if not this build's."""
        n = len(owners)
        twins = self.in_parts(feats)
        keys = band_keys(feats.signatures) if self.near else None
        out = []
        for k in range(n):
            found = twins[k]
            exact = feats.exact[k].tobytes()
            if (found is None or found[0] != "exact") and self.own_lookup and exact in self.by_exact:
                row = self.rows[self.by_exact[exact]]
                found = ("exact", [row[0], row[4], row[1]], 1.0)
            if (found is None or found[0] == "near") and self.near and self.own_lookup and (feats.signatures[k] != EMPTY).any():
                candidates = {r for b in range(BANDS) for r in self.by_band[b].get(int(keys[k, b]), ())}
                if candidates:
                    rows = sorted(candidates)
                    agree = (np.stack([self.rows[r][3] for r in rows]) == feats.signatures[k]).mean(1)
                    for r, j in zip(rows, agree):
                        row = self.rows[r]
                        found = better(found, ("near", [row[0], row[4], row[1]], float(j)))
            out.append(found)
            if found is None and self.own_lookup:  # a cluster task leaves its own documents to the commit
                self.add(owners[k], positions[k], feats.exact[k], feats.signatures[k] if self.near else None,
                         keys[k] if self.near else None, stamps[k] if stamps is not None else self.stamp)
        return out

    def add(self, input_id, position, exact, sig, keys, stamp):
        r = len(self.rows)
        self.rows.append((input_id, int(position), exact, sig, stamp))
        self.waiting.append(r)
        self.by_exact.setdefault(exact.tobytes(), r)
        if sig is not None and (sig != EMPTY).any():
            for b in range(BANDS):
                self.by_band[b][int(keys[b])].append(r)

    def in_parts(self, feats):
        """For each document, its best live twin in the dataset's parts, or None: an exact twin first."""
        found = [None] * len(feats.exact)
        keys = band_keys(feats.signatures) if self.near and len(feats.exact) else None
        for part in self.parts:
            lo = np.searchsorted(part.exact_sorted, feats.exact[:, 0], "left")
            hi = np.searchsorted(part.exact_sorted, feats.exact[:, 0], "right")
            for k in np.flatnonzero(hi > lo):
                if found[k] is not None and found[k][0] == "exact":
                    continue
                for row in part.exact_rows[lo[k] : hi[k]]:
                    ref = int(part.refs[row])
                    if part.live[ref] and (part.exact[row] == feats.exact[k]).all():
                        found[k] = ("exact", [*part.inputs[ref], int(part.positions[row])], 1.0)
                        break
            if not self.near:
                continue
            queries, rows = [], []
            for b in range(BANDS):
                lo = np.searchsorted(part.bands[b], keys[:, b], "left")
                hi = np.searchsorted(part.bands[b], keys[:, b], "right")
                count = hi - lo
                if not count.any():
                    continue
                q = np.repeat(np.arange(len(keys)), count)
                at = np.repeat(lo, count) + np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
                queries.append(q)
                rows.append(np.asarray(part.band_rows[b])[at])
            if not queries:
                continue
            pairs = np.unique(np.stack([np.concatenate(queries), np.concatenate(rows)], 1), axis=0)
            pairs = pairs[part.live[np.asarray(part.refs)[pairs[:, 1]]]]
            empty = (feats.signatures == EMPTY).all(1)
            pairs = pairs[~empty[pairs[:, 0]]]
            if not len(pairs):
                continue
            agree = (np.asarray(part.signatures)[pairs[:, 1]] == feats.signatures[pairs[:, 0]]).mean(1)
            for (q, row), j in zip(pairs, agree):
                if found[q] is None or found[q][0] == "near":
                    ref = int(part.refs[row])
                    found[q] = better(found[q], ("near", [*part.inputs[ref], int(part.positions[row])], float(j)))
        return found

    def take_part(self, finished, run_id, index):
        """Write the rows kept since the last part whose inputs are in `finished` (recorded by this commit) as
        a new part; returns [name, rows] or None. Rows of an input still being read wait for the next."""
        taken = [r for r in self.waiting if self.rows[r][0] in finished]
        if not taken:
            return None
        self.waiting = [r for r in self.waiting if self.rows[r][0] not in finished]
        name = fmt.index_part_name(run_id, index)
        write_part(self.data_dir, name, [self.rows[r] for r in taken], self.near)
        return [name, len(taken)]


def better(found, candidate):
    """The twin a near duplicate is recorded with: the most similar kept document at or above the threshold,
    the first in (input id, position) order among equals (wherever it is indexed, so that a build killed and
    run again records the same twin)."""
    if candidate[2] < DUPLICATE_JACCARD:
        return found
    if found is None or (-candidate[2], candidate[1][0], candidate[1][2]) < (-found[2], found[1][0], found[1][2]):
        return candidate
    return found


def stamp_of(record):
    """The stamp of the build that indexed an input's documents (None if not indexed)."""
    return (record or {}).get("dedup", {}).get("stamp")


def write_part(data_dir, name, rows, near):
    """An index part of `rows` ((input id, position, exact key, signature, stamp))."""
    inputs = list(dict.fromkeys((r[0], r[4]) for r in rows))
    ref = {i: k for k, i in enumerate(inputs)}
    refs = np.array([ref[r[0], r[4]] for r in rows], np.int32)
    positions = np.array([r[1] for r in rows], np.int64)
    exact = np.stack([r[2] for r in rows]).astype(np.uint64)
    signatures = np.stack([r[3] for r in rows]) if near else np.zeros((len(rows), 0), np.uint32)
    fmt.write_index_part(data_dir, name, [list(i) for i in inputs], refs, positions, exact, signatures,
                         *sorted_bands(signatures, near))


def sorted_bands(signatures, near):
    """(bands, band_rows): each band's keys sorted, and the row of each, for the documents with words."""
    if not near:
        return np.zeros((BANDS, 0), np.uint64), np.zeros((BANDS, 0), np.int64)
    rows = np.flatnonzero((signatures != EMPTY).any(1))
    keys = band_keys(signatures[rows]).T
    order = np.argsort(keys, axis=1, kind="stable")
    return np.take_along_axis(keys, order, 1), rows[order]


def merge_parts(data_dir, parts, sources, run_id, index, near):
    """Merge the two newest index parts while the newer has as many rows as the older (a binary counter, as
    for source segments), keeping only live rows. Returns (parts, next index)."""
    parts = [list(p) for p in parts]
    while len(parts) >= 2 and parts[-1][1] >= parts[-2][1]:
        inputs, refs, positions, exact, signatures = [], [], [], [], []
        for name, _ in parts[-2:]:
            part = fmt.open_index_part(data_dir, name)
            live = np.array([stamp_of(sources.get(i)) == s for i, s in part.inputs], bool)
            keep = live[np.asarray(part.refs)]
            remap = np.cumsum(live) - 1 + len(inputs)
            inputs += [p for p, alive in zip(part.inputs, live) if alive]
            refs.append(remap[np.asarray(part.refs)[keep]].astype(np.int32))
            positions.append(np.asarray(part.positions)[keep])
            exact.append(np.asarray(part.exact)[keep])
            signatures.append(np.asarray(part.signatures)[keep])
        signatures = np.concatenate(signatures)
        name = fmt.index_part_name(run_id, index)
        index += 1
        fmt.write_index_part(data_dir, name, inputs, np.concatenate(refs), np.concatenate(positions), np.concatenate(exact),
                             signatures, *sorted_bands(signatures, near))
        parts[-2:] = [[name, len(signatures)]]
    return parts, index


# What was removed, and when it is reconsidered.


def jaccard(a, b):
    """The true Jaccard similarity of two texts' shingle sets (of their 64-bit hashes)."""
    x, y = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    return len(x & y) / len(x | y) if x | y else 1.0


def removed_totals(records):
    """{kind: {documents, tokens, bytes}} and {task: documents} over the records' removed documents."""
    totals = {kind: {"documents": 0, "tokens": 0, "bytes": 0} for kind in ("exact", "near", "contaminated")}
    tasks = collections.Counter()
    for record in records:
        for doc in record.get("dedup", {}).get("removed", []):
            t = totals[doc["kind"]]
            t["documents"] += 1
            t["tokens"] += doc["tokens"]
            t["bytes"] += doc["bytes"]
            tasks.update(doc.get("tasks", []))
    return {**totals, "tasks": dict(sorted(tasks.items()))}


def reconsidered(sources, retired):
    """Ids of inputs (of `sources`, not retired) with a document dropped as the twin of a document that is not
    kept any more: its input is in `retired` (changed or deleted by this build), or its record no longer
    carries the twin's stamp, or the twin was itself removed. Those inputs are read again: each of their
    documents is compared with what is kept now. Repeats until no more are found (a reconsidered input's
    documents may be twins too)."""
    retired, out = set(retired), []
    removed_at = {i: {d["at"] for d in r.get("dedup", {}).get("removed", [])} for i, r in sources.items()}
    while True:
        more = []
        for source_id, record in sources.items():
            if source_id in retired:
                continue
            for doc in record.get("dedup", {}).get("removed", []):
                twin = doc.get("twin")
                if twin is None:
                    continue
                twin_id, twin_stamp, twin_at = twin
                if twin_id in retired or stamp_of(sources.get(twin_id)) != twin_stamp or twin_at in removed_at.get(twin_id, ()):
                    more.append(source_id)
                    break
        if not more:
            return out
        out += more
        retired |= set(more)

