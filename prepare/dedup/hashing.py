"""What a document's text hashes to, in numpy, a whole document at once: its exact key, its words and their
n-grams. Dedup and decontamination compare these, never the text; the constants are fixed, so that hashes
stored in a dataset stay comparable with those of later builds."""

import functools
import hashlib

import numpy as np

LONGEST_NGRAM = 13  # decontamination's word 13-grams (GPT-3's) are the longest n-grams hashed
WHITESPACE = b" \t\n\r\x0b\x0c"
WINDOW = 1 << 18  # bytes hashed at once: prefix sums over a window, not the whole document

WORD_BYTE = np.zeros(256, bool)
WORD_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789_", np.uint8)] = True
WORD_BYTE[128:] = True  # every byte of a UTF-8 encoded non-ASCII character


def fixed_random():
    """The generator every stored hash's constants are drawn from, in a fixed order (here, then near.py's)."""
    return np.random.default_rng(0x6770746D696C6C)


GRAM = fixed_random().integers(1, 2**63, LONGEST_NGRAM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class Text:
    """A document's text and what its hashes are made of, each computed once, when first asked for."""

    def __init__(self, text):
        self.text = text

    @functools.cached_property
    def lowered(self):
        return lowered_bytes(self.text)

    @functools.cached_property
    def words(self):
        return word_hashes(self.lowered)


def lowered_bytes(text):
    return text.lower().encode("utf-8", "surrogatepass")


def exact_key(lowered):
    """128 bits of the text --dedup exact compares (lowercased, ASCII whitespace removed), as two uint64."""
    digest = hashlib.blake2b(lowered.translate(None, WHITESPACE), digest_size=16).digest()
    return np.frombuffer(digest, "<u8")


def mix(x):
    """splitmix64's finaliser, in place on a uint64 array: every input bit moves every output bit."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@functools.cache
def powers():
    """[R^i] and [R^-i] mod 2^64 for i < WINDOW."""
    radix = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64
    inverse = np.uint64(pow(int(radix), -1, 1 << 64))
    return [np.concatenate(([np.uint64(1)], np.cumprod(np.full(WINDOW - 1, r, np.uint64)))) for r in (radix, inverse)]


def word_hashes(lowered):
    """A 64-bit hash of each word of the lowercased UTF-8 text, in order: runs of ASCII letters, digits and '_'
    and of non-ASCII characters. Each is the polynomial sum(byte_k R^k) of its bytes, from prefix sums over the
    text (R^-start moves each word to its own origin), then mixed."""
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
