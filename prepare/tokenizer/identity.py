"""A tokenizer's identity: what decides its tokens (its ranks and special tokens, and its split pattern), as
hashes recorded beside every dataset, run and checkpoint; checked where a recorded tokenizer is opened or
installed, so that a tokenizer changed under the same name is never taken for the one recorded."""

import functools
import hashlib
import os

from prepare.tokenizer.encodings import TokenizerError, load_encoding, load_named, save_directory
from prepare.tokenizer.patterns import PATTERNS


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


def pattern_hash(encoding):
    return hashlib.sha256(encoding._pat_str.encode()).hexdigest()


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
