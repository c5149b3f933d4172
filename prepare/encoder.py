"""The encoder behind an encoding: what turns a text into its ids. tiktoken is the reference and the fallback;
gigatoken, an exact byte-pair encoder many times faster (docs/benchmarks.md), encodes where it is known to give
tiktoken's ids: an encoding whose split pattern is one it implements (GPT-2's, GPT-4's, o200k's) and whose ranks
are dense, special tokens taken as plain text. Each time it is loaded it encodes a canary set beside tiktoken
and is refused if one id differs; tests/test_encoder.py compares the two on whole corpora and generated text.
"""

import base64
import functools
import importlib.metadata
import os
import random
import resource
import sys
import tempfile

import numpy as np
from tiktoken_ext.openai_public import r50k_pat_str

from prepare.tokenizer import ENDOFTEXT, GPT4_PATTERN, LONG_RUN, encode_to_numpy, where

CHOICES = ("auto", "tiktoken")  # --encoder: the fastest proven one, or the reference

# o200k_base's split pattern as tiktoken writes it (tiktoken_ext.openai_public builds it inside o200k_base).
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
PRETOKENIZERS = {r50k_pat_str: "gpt2", GPT4_PATTERN: "gpt4", O200K_PATTERN: "o200k"}  # gigatoken's name of each
CACHE_BYTES = 256 << 20  # memory a process's gigatoken cache may take (its natural size on code and prose is less)
CHECK_CHARS = 1 << 20  # characters encoded between two looks at the memory taken


class Tiktoken:
    """The reference: tiktoken, long runs of whitespace included (prepare.tokenizer.encode_to_numpy)."""

    name = f"tiktoken {importlib.metadata.version('tiktoken')}"

    threads = False  # a build's workers are processes, as before the fast encoder (docs/benchmarks.md)

    def __init__(self, encoding):
        self.encoding = encoding

    def encode(self, text):
        return encode_to_numpy(self.encoding, text)


class Gigatoken:
    """gigatoken's byte-pair encoder on the encoding's ranks. A text it does not take (one with a lone surrogate,
    which is not UTF-8) goes to tiktoken, whose ids or error are the answer."""

    name = f"gigatoken {importlib.metadata.version('gigatoken')}"
    threads = True  # a build's workers are threads sharing it: no hand-off of the ids, one encoder in memory

    def __init__(self, encoding, load):
        self.encoding, self.load = encoding, load
        self.backend, self.unchecked, self.limit = load(), 0, None

    def encode(self, text):
        self.unchecked += len(text)
        if self.unchecked >= CHECK_CHARS:
            self.bound_cache()
        try:
            return self.backend.encode(text)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a TypeError, or a Rust panic (a BaseException)
            return encode_to_numpy(self.encoding, text)

    def bound_cache(self):
        """gigatoken 0.10 keeps every distinct piece it has merged, without bound: once this process's memory
        passes what it was at its first look plus CACHE_BYTES, the encoder is loaded anew, its cache empty. Where
        only the peak is known (no /proc: macOS), the next load comes when the peak passes the last one."""
        self.unchecked = 0
        memory, now = resident_memory()
        if self.limit is None or self.limit[0] != os.getpid():  # a forked worker measures from its own start
            self.limit = (os.getpid(), memory + CACHE_BYTES)
        elif memory > self.limit[1]:
            self.backend = self.load()
            self.limit = self.limit if now else (os.getpid(), memory)


def resident_memory():
    """(bytes, True): this process's resident memory now; or (bytes, False): its peak, where /proc is absent
    (getrusage gives kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE, True
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (peak if sys.platform == "darwin" else peak * 1024), False


PAGE = os.sysconf("SC_PAGE_SIZE")


def encoder(encoding, choice="auto"):
    """The encoder of `encoding`: tiktoken where `choice` says so; otherwise gigatoken where it is installed, has
    this encoding's split pattern, and gives tiktoken's ids on the canary set; else tiktoken, saying why once."""
    if choice == "tiktoken":
        return Tiktoken(encoding)
    fast, reason = load_gigatoken(encoding)
    if fast is None:
        say_once(f"{where(encoding)}: tokenizing with tiktoken, {reason}")
        return Tiktoken(encoding)
    return fast


@functools.cache
def say_once(message):
    print(f"note: {message}", file=sys.stderr)


@functools.lru_cache(maxsize=8)
def load_gigatoken(encoding):
    """(a Gigatoken encoder of `encoding`, None), or (None, why not)."""
    pretokenizer = PRETOKENIZERS.get(encoding._pat_str)
    if pretokenizer is None:
        return None, "as no faster encoder is known to split as its pattern does"
    ranks = sorted(encoding._mergeable_ranks.items(), key=lambda item: item[1])
    if [rank for _, rank in ranks] != list(range(len(ranks))):
        return None, "as its ranks are not 0 to n-1, which gigatoken needs"
    try:
        import gigatoken
    except ImportError:
        return None, "as gigatoken, several times faster, is not installed (pip install gigatoken)"
    rank_file = b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in ranks)
    try:
        fast = Gigatoken(encoding, functools.partial(from_ranks, gigatoken, rank_file, pretokenizer))
    except (OSError, ValueError) as e:
        return None, f"as gigatoken could not load its ranks ({type(e).__name__}: {e})"
    differs = canary_difference(encoding, fast)
    if differs is not None:
        return None, f"as {fast.name} gives other ids than tiktoken on {differs}"
    return fast, None


def from_ranks(gigatoken, rank_file, pretokenizer):
    """gigatoken's encoder of the ranks in `rank_file` (tiktoken's format), which it reads from a file only. No
    special tokens: they are plain text here."""
    with tempfile.NamedTemporaryFile(suffix=".tiktoken") as f:
        f.write(rank_file)
        f.flush()
        return gigatoken.Tokenizer.from_tiktoken(f.name, pretokenizer=pretokenizer, special_tokens={})


def canary_difference(encoding, fast):
    """The first canary text on which `fast` and tiktoken give other ids (described), or None."""
    for label, text in canary_texts(encoding):
        if not np.array_equal(fast.encode(text), encode_to_numpy(encoding, text)):
            return f"the canary text {label!r} ({len(text):,} characters)"
    return None


# What the canary set covers: the patterns' alternatives (contractions in either case, runs of digits, letters
# of every kind, marks, punctuation with line ends after it), every whitespace character alone and in runs, at
# the end of a text and before a letter, Unicode's newer letters and digits (a table of another version splits
# them otherwise), special-token strings as text, a run of whitespace longer than LONG_RUN, random mixes of all
# of these (gigatoken's SIMD paths take long and short runs apart), and a sample of the vocabulary's own tokens.
WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
CHARACTERS = (
    "aZ09é ßÆœΩжЯ中文日本語한국어ไทยעבריתالعربية"  # letters of several scripts
    "\u0301\u0308\u093f\u0e31"  # marks (not letters for either pattern)
    "١٢٣४५৬²³½ⅫⅦ〇"  # digits and numbers of other scripts
    "!?.,;:'\"`~@#$%^&*()[]{}<>/\\|-_=+…—«»€£¥©®™"  # punctuation and symbols
    "\U0001f600\U0001f44d\U0001f3fd\u200d\U0001f9d1\ufe0f"  # emoji, modifiers, joiners, selectors
    "\x00\x01\x1b\x7f\ufeff\ue000\uffff\u0378"  # controls, BOM, private use, a noncharacter, an unassigned one
    "\U00011f00\U0001e030\U0001fae8\U00010d40\U000105c0\U0001e4f0"  # letters and digits new in Unicode 15 and 16
)
CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'d", "'D"]


def canary_texts(encoding):
    """(label, text) pairs; the same within a process, whatever the encoding (but the vocabulary's sample)."""
    texts = [
        ("contractions", " ".join(f"word{c} {c}x{c} it{c}{c}" for c in CONTRACTIONS)),
        ("digits", " ".join(str(10**k + k) for k in range(20)) + " 1,234.5678 x1y22z333 ١٢٣٤٥ 12345678"),
        ("special tokens", f"{ENDOFTEXT}<|fim_prefix|><|fim_middle|><|fim_suffix|><|endofprompt|> {ENDOFTEXT}x"),
        ("line ends", "a.\r\n\r\nb!\n\n\n  c?\r\r\n d;\n \n\te,\r \r\nf\n"),
        ("long run", "x" + " " * (LONG_RUN + 5) + "y" + "\n" * 1000 + "!\r\n" + " \t" * 500),
    ]
    for space in WHITESPACE:
        texts.append((f"whitespace U+{ord(space):04X}",
                      f"a{space}b{space * 2}c{space * 3}!{space * 5}1{space * 40}\n{space}x{space}'s{space * 2}"))
    rng = random.Random(0)
    pool = CHARACTERS + WHITESPACE + "aaaaeeeetttt    \n"
    for n in (1, 2, 3, 7, 31, 64, 257, 4099):
        texts.append((f"mix of {n}", "".join(rng.choice(pool) for _ in range(n))))
    texts.append(("runs", "".join(rng.choice(pool) * rng.randint(1, 70) for _ in range(400))))
    tokens = list(encoding._mergeable_ranks)
    sample = [t.decode("utf-8", "replace") for t in tokens[:: max(1, len(tokens) // 2000)]]
    texts.append(("vocabulary", "".join(sample)))
    return texts
