"""Where a text may be cut so that its pieces, tokenized apart, give the tokens of the whole: inside long runs
of whitespace (which tiktoken's regex engine cannot split: it overflows its stack somewhere past 300,000
characters), and between a long document's Parts. Both hold for GPT-2's and GPT-4's split patterns only; the
proof of the first is in docs/tokenizer.md#long-runs-of-whitespace-why-the-tokens-stay-tiktokens, of the
second in part_cut's docstring."""

import functools
import re

import tiktoken

from prepare.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN

LONG_RUN = 1 << 16
LINE_ENDS = "\r\n"


def whitespace_cuts(pattern, text):
    """[(start, end)] of the pieces of `text` inside its runs of at least LONG_RUN whitespace characters, in
    order, for the patterns known here (see the proof in docs/tokenizer.md); [] for any other pattern or text."""
    if pattern not in (GPT2_PATTERN, GPT4_PATTERN):
        return []
    cuts = []
    for run in re.finditer(r"(?<!\s)\s{%d,}" % LONG_RUN, text):  # (?<!\s): tried once per run, not at each character
        s, e = run.span()
        # Python's \s is White_Space and a few separators more: the run is taken as far as the engine's \s goes.
        while s < e and not char_class(text[s], r"\s"):
            s += 1
        while e > s and not char_class(text[e - 1], r"\s"):
            e -= 1
        if e - s < LONG_RUN or any(not char_class(c, r"\s") for c in set(text[s:e])) or \
                (s > 0 and char_class(text[s - 1], r"\s")) or (e < len(text) and char_class(text[e], r"\s")):
            continue
        cuts += gpt2_run_pieces(text, s, e) if pattern == GPT2_PATTERN else gpt4_run_pieces(text, s, e)
    return cuts


def gpt2_run_pieces(text, s, e):
    """GPT-2's pieces of the whitespace run text[s:e]: all of it at the end of the text, else all but its last
    character."""
    return [(s, e if e == len(text) else e - 1)]


def gpt4_run_pieces(text, s, e):
    """GPT-4's pieces of the whitespace run text[s:e] (its line ends first taken by an "other" character before
    it): to its last line end, then all but its last character, or all of it at the end of the text."""
    u = s
    if s > 0 and char_class(text[s - 1], r"[^\s\p{L}\p{N}]"):
        while u < e and text[u] in LINE_ENDS:
            u += 1
    if e - u < 2:
        return []
    if e == len(text):
        return [(u, e)]
    last = max(text.rfind("\r", u, e), text.rfind("\n", u, e))
    rest = u if last < 0 else last + 1
    return ([(u, rest)] if rest > u else []) + ([(rest, e - 1)] if e - rest >= 2 else [])


def part_cut(pattern, text):
    r"""Where `text` may be cut so that its two parts, tokenized apart, give its tokens: the last place after an
    ASCII letter or digit and before a space, for the two patterns known here (-1 for any other pattern, or
    none). No alternative of either pattern matches a letter or digit followed by a space, so a piece ends
    there; and the pieces that end there match the same text whether the text goes on or not (the only
    lookahead, (?!\S), and the $ of \s++$ act on whitespace runs, and those in the first part are followed by a
    letter or digit of it). The second part is split as the whole text splits (the patterns have no
    lookbehind); ASCII letters and digits are \p{L} and \p{N} in every Unicode version."""
    if pattern not in (GPT2_PATTERN, GPT4_PATTERN):
        return -1
    at = text.rfind(" ")
    while at > 0 and not (text[at - 1].isascii() and text[at - 1].isalnum()):
        at = text.rfind(" ", 0, at)
    return at


@functools.cache
def char_class(char, pattern):
    """Whether `char` matches the regex class `pattern` in tiktoken's regex engine: an encoding split by that
    class alone encodes the character to some ids when it matches, to none when it does not. (Whether a
    character is whitespace, or "other", is asked of the engine so that the Unicode tables are the pattern's.)"""
    return bool(class_probe(pattern).encode_ordinary(char))


@functools.cache
def class_probe(pattern):
    return tiktoken.Encoding(name="class-probe", pat_str=pattern, mergeable_ranks={bytes([b]): b for b in range(256)},
                             special_tokens={})
