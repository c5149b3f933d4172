"""Text to ids, the one place an encoder is called, for every stage (a build and its tasks, `prepare compare`,
`train sample` and `train score`). tiktoken is the reference: `encode_to_numpy` gives its ids for any text, long
runs of whitespace included (prepare/tokenizer/whitespace.py), and a split pattern that fails on a text ends in
one line naming the tokenizer. gigatoken, many times faster, encodes instead where it gives the same ids
(prepare/tokenizer/fast.py) and has given them on the canary set (prepare/tokenizer/canary.py) since this process
loaded it; elsewhere tiktoken encodes, and says why (a build in its summary line). `--encoder tiktoken` asks for
the reference."""

import functools
import importlib.metadata
import os

import numpy as np

from prepare.tokenizer import fast, whitespace
from prepare.tokenizer.canary import canary_texts
from prepare.tokenizer.encodings import TokenizerError, where

CHOICES = ("auto", "tiktoken")  # --encoder: the fastest that gives tiktoken's ids, or tiktoken itself


def encode_to_numpy(encoding, text):
    """The ids of `text` (special tokens as plain text) as a numpy array, as tiktoken gives them, long runs of
    whitespace included; a TokenizerError naming the tokenizer where its split pattern fails on the text."""
    try:
        cuts = whitespace.whitespace_cuts(encoding._pat_str, text) if len(text) >= whitespace.LONG_RUN else None
        if not cuts:
            return ordinary(encoding, text)
        parts, at = [], 0
        for start, end in cuts:
            parts.append(ordinary(encoding, text[at:start]))
            parts.append(np.array(encoding._encode_single_piece(text[start:end]), np.uint32))  # one piece: merged alone
            at = end
        parts.append(ordinary(encoding, text[at:]))
        return np.concatenate(parts)
    except BaseException as e:  # tiktoken raises a ValueError, or a Rust panic (a BaseException), on a regex failure
        raise pattern_error(encoding, e, text)


def ordinary(encoding, text):
    """The ids of a text, special tokens as plain text: tiktoken's encoder (its split pattern, then its merges)."""
    return encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())


def encode(encoding, text):
    """The ids of `text` as a list, by the encoder of `encoding`."""
    return encoder_for(encoding).encode(text).tolist()


def pattern_error(encoding, error, text):
    if not isinstance(error, ValueError) and type(error).__name__ != "PanicException":
        return error
    reason = str(error).rsplit(": ", 1)[-1].strip(" )")
    return TokenizerError(f"{where(encoding)}: its split pattern fails on a text of {len(text):,} characters "
                          f"({reason}); use another tokenizer, or leave that text out")


class Tiktoken:
    """The reference; `why`: why it encodes where gigatoken was asked for."""

    threads = False  # a build's workers are processes (tiktoken scales on them better than on threads)

    def __init__(self, encoding, why=None):
        self.encoding, self.why, self.name = encoding, why, f"tiktoken {importlib.metadata.version('tiktoken')}"

    def encode(self, text):
        return encode_to_numpy(self.encoding, text)


class Gigatoken:
    """gigatoken's encoder of the encoding's ranks. A text it does not take (one with a lone surrogate, which is not
    UTF-8) goes to tiktoken, whose ids or error are the answer."""

    threads = True  # a build's workers are threads sharing it: one encoder in memory, no hand-off of the ids
    why = None

    def __init__(self, encoding, load):
        self.encoding, self.load, self.name = encoding, load, f"gigatoken {importlib.metadata.version('gigatoken')}"
        self.backend, self.unchecked, self.limit = load(), 0, None

    def encode(self, text):
        self.unchecked += len(text)
        if self.unchecked >= fast.CHECK_CHARS:
            self.bound_cache()
        try:
            return self.ids(text)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a UnicodeEncodeError, or a Rust panic (a BaseException)
            return encode_to_numpy(self.encoding, text)

    def ids(self, text):
        """gigatoken's ids of `text`, on this thread and without the GIL: its batch call (its one-text `encode`
        keeps the GIL), given the UTF-8 bytes as one document, which returns a matrix of one row and no padding."""
        rows, lengths = self.backend.encode_batch_padded(fast.one_document(text), 0, parallel=False)
        return rows[0, : lengths[0]] if len(lengths) else np.empty(0, np.uint32)

    def bound_cache(self):
        """Load the encoder anew (its cache empty) once this process's memory has grown by fast.CACHE_BYTES since
        its first look here; where only the peak is known, again each time the peak passes the last one."""
        self.unchecked = 0
        memory, now = fast.resident_memory()
        if self.limit is None or self.limit[0] != os.getpid():  # a forked worker measures from its own start
            self.limit = (os.getpid(), memory + fast.CACHE_BYTES)
        elif memory > self.limit[1]:
            self.backend = self.load()
            self.limit = self.limit if now else (os.getpid(), memory)


def encoder_for(encoding, choice="auto"):
    """The encoder of `encoding`: tiktoken where `choice` says so; else gigatoken where it gives tiktoken's ids
    and has given them on the canary set; else tiktoken, with why."""
    if choice == "tiktoken":
        return Tiktoken(encoding)
    chosen, why = fast_encoder(encoding)
    return Tiktoken(encoding, why) if chosen is None else chosen


def described(chosen):
    """An encoder's name and version, and why it is tiktoken where gigatoken was asked for."""
    return chosen.name if chosen.why is None else f"{chosen.name}: {chosen.why}"


@functools.lru_cache(maxsize=8)
def fast_encoder(encoding):
    """(gigatoken's encoder of `encoding`, None), checked on the canary set; or (None, why not)."""
    load, reason = fast.loader(encoding)
    if load is None:
        return None, reason
    try:
        chosen = Gigatoken(encoding, load)
    except (OSError, ValueError) as e:
        return None, f"gigatoken could not load its ranks ({type(e).__name__}: {e})"
    for label, text in canary_texts(encoding):
        try:
            ids = chosen.ids(text)  # itself: not the fallback that a text it does not take goes to
        except Exception as e:
            ids = e
        if not np.array_equal(ids, encode_to_numpy(encoding, text)):
            return None, f"{chosen.name} gave other ids than tiktoken on the canary text {label!r}"
    return chosen, None
