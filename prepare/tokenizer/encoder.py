"""Text to ids, exactly as tiktoken gives them for any text: long runs of whitespace, which tiktoken's regex
engine cannot split, are cut where the split pattern would cut them (prepare/tokenizer/whitespace.py), and a
split pattern that fails on a text ends in one line naming the tokenizer. The encoder is tiktoken's, called
here only: in `ordinary`, and `_encode_single_piece` for the piece of a whitespace run."""

import numpy as np

from prepare.tokenizer import whitespace
from prepare.tokenizer.encodings import TokenizerError, where


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
    """encode_to_numpy as a list."""
    return encode_to_numpy(encoding, text).tolist()


def pattern_error(encoding, error, text):
    if not isinstance(error, ValueError) and type(error).__name__ != "PanicException":
        return error
    reason = str(error).rsplit(": ", 1)[-1].strip(" )")
    return TokenizerError(f"{where(encoding)}: its split pattern fails on a text of {len(text):,} characters "
                          f"({reason}); use another tokenizer, or leave that text out")
