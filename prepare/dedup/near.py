"""`--dedup near`: MinHash LSH over word 5-grams (docs/dedup.md). A document's shingles are its word 5-grams
(one of all its words if fewer), each hashed to 32 bits; its signature holds, for each of 112 hash functions
x -> (a x + b) mod 2^32, the least over its shingles. A kept document is a candidate when their signatures agree
in all 8 rows of one of 14 bands (found by the band's bucket), and a near duplicate when they agree in at least
DUPLICATE_JACCARD of the 112 values (their estimated Jaccard similarity).

This module is the method as the index uses it (MINHASH, registered in methods.py): the per-document feature the
workers compute, the lookup arrays an index part holds beside it, and the lookups in a part and in memory."""

import collections
from math import comb

import numpy as np

from prepare.dedup.hashing import LONGEST_NGRAM, fixed_random, lowered_bytes, mix, ngram_hashes, word_hashes

SHINGLE_WORDS = 5
BANDS, ROWS = 14, 8
PERMUTATIONS = BANDS * ROWS
DUPLICATE_JACCARD = 0.8  # T: a candidate is a near duplicate when its estimated Jaccard similarity is at least this
CHUNK = 2048  # shingles minhashed at once: a huge document costs bounded memory
EMPTY = np.iinfo(np.uint32).max  # the signature value of a document without words

_rng = fixed_random()
_rng.integers(1, 2**63, LONGEST_NGRAM, dtype=np.uint64)  # hashing.GRAM's draw comes first
PERMUTE_A = (_rng.integers(0, 2**31, PERMUTATIONS, dtype=np.uint32) * np.uint32(2) + np.uint32(1)).astype(np.uint32)
PERMUTE_B = _rng.integers(0, 2**32, PERMUTATIONS, dtype=np.uint64).astype(np.uint32)
BAND_MIX = _rng.integers(1, 2**63, ROWS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


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


def jaccard(a, b):
    """The true Jaccard similarity of two texts' shingle sets (of their 64-bit hashes)."""
    x, y = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    return len(x & y) / len(x | y) if x | y else 1.0


class MinHash:
    """--dedup near as the index uses it. Its feature has no columns in a build that does not use it."""

    name = "near"  # the --dedup value, and the kind recorded for a document it drops
    feature, dtype, width = "signatures", np.uint32, PERMUTATIONS  # the per-document array it compares
    arrays = ("bands", "band_rows")  # what an index part holds beside the features, for lookups
    threshold = DUPLICATE_JACCARD

    def feature_of(self, text):
        return signature(ngram_hashes(text.words, SHINGLE_WORDS, whole_if_short=True))

    def keys(self, signatures):
        return band_keys(signatures)

    def part_arrays(self, signatures):
        """(bands, band_rows): each band's keys sorted, and the row of each, for the documents with words."""
        if not signatures.shape[1]:
            return {"bands": np.zeros((BANDS, 0), np.uint64), "band_rows": np.zeros((BANDS, 0), np.int64)}
        rows = np.flatnonzero((signatures != EMPTY).any(1))
        keys = band_keys(signatures[rows]).T
        order = np.argsort(keys, axis=1, kind="stable")
        return {"bands": np.take_along_axis(keys, order, 1), "band_rows": rows[order]}

    def in_part(self, part, signatures, keys):
        """[(document, row, estimated Jaccard)] of every candidate pair of the documents and the live rows of
        `part`."""
        queries, rows = [], []
        for b in range(BANDS):
            lo = np.searchsorted(part.arrays["bands"][b], keys[:, b], "left")
            hi = np.searchsorted(part.arrays["bands"][b], keys[:, b], "right")
            count = hi - lo
            if not count.any():
                continue
            q = np.repeat(np.arange(len(keys)), count)
            at = np.repeat(lo, count) + np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
            queries.append(q)
            rows.append(np.asarray(part.arrays["band_rows"][b])[at])
        if not queries:
            return []
        pairs = np.unique(np.stack([np.concatenate(queries), np.concatenate(rows)], 1), axis=0)
        pairs = pairs[part.live_rows(pairs[:, 1])]
        empty = (signatures == EMPTY).all(1)
        pairs = pairs[~empty[pairs[:, 0]]]
        if not len(pairs):
            return []
        agree = (np.asarray(part.arrays["signatures"])[pairs[:, 1]] == signatures[pairs[:, 0]]).mean(1)
        return [(int(q), int(row), float(j)) for (q, row), j in zip(pairs, agree)]

    def memory(self):
        return Buckets()


class Buckets:
    """The signatures of documents kept by this build that no part holds yet, by band key."""

    def __init__(self):
        self.by_band = [collections.defaultdict(list) for _ in range(BANDS)]
        self.signatures = {}

    def add(self, row, signature, keys):
        if (signature != EMPTY).any():
            self.signatures[row] = signature
            for b in range(BANDS):
                self.by_band[b][int(keys[b])].append(row)

    def find(self, signature, keys):
        """[(row, estimated Jaccard)] of the candidates, in row order."""
        if not (signature != EMPTY).any():
            return []
        rows = sorted({r for b in range(BANDS) for r in self.by_band[b].get(int(keys[b]), ())})
        if not rows:
            return []
        agree = (np.stack([self.signatures[r] for r in rows]) == signature).mean(1)
        return [(r, float(j)) for r, j in zip(rows, agree)]


MINHASH = MinHash()
