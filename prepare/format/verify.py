"""Checks of a dataset's token files against its manifest: a cheap one before training, the full one of
`prepare verify`, and the fingerprint a run records of the data it trains on."""

import hashlib
import json
import os

import numpy as np

from prepare.format.durable import sha256_file
from prepare.format.layout import SPLITS, DatasetError, token_path


def check_files(data_dir, manifest):
    """Cheap check before training: every token file exists with the size the manifest gives it."""
    itemsize = np.dtype(manifest.dtype).itemsize
    for f in manifest.files.values():
        path = token_path(data_dir, f.name)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise DatasetError(f"{path}: token file named in the manifest is missing; rerun prepare") from None
        if size != f.tokens * itemsize:
            raise DatasetError(
                f"{path}: {size} bytes, the manifest says {f.tokens} {manifest.dtype} tokens ({f.tokens * itemsize} "
                f"bytes); the file is truncated or corrupt, rerun prepare with --rebuild"
            )


def verify_file(data_dir, manifest, token_file):
    """Full check of one token file and the extents in it: size, checksum, max id, every extent inside the
    file and starting with end-of-text. Returns None if good, else what is wrong."""
    path = token_path(data_dir, token_file.name)
    itemsize = np.dtype(manifest.dtype).itemsize
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing"
    if size != token_file.tokens * itemsize:
        return f"{size} bytes, expected {token_file.tokens * itemsize}"
    if sha256_file(path) != token_file.sha256:
        return "checksum mismatch"
    tokens = np.memmap(path, dtype=manifest.dtype, mode="r")
    if int(tokens.max()) >= manifest.tokenizer.vocab_size:
        return f"token id {int(tokens.max())} outside the vocabulary of {manifest.tokenizer.vocab_size}"
    for split in SPLITS:
        for extent in manifest.extents[split]:
            if extent.file != token_file.name:
                continue
            if not 0 <= extent.start < extent.end <= token_file.tokens:
                return f"extent [{extent.start}, {extent.end}) outside its {token_file.tokens} tokens"
            if tokens[extent.start] != manifest.tokenizer.eot_token:
                return f"extent at {extent.start} does not start with the end-of-text token"
    return None


def fingerprint(manifest, split="train"):
    """Identity of a split's data: the tokenizer and every live extent with its file's checksum."""
    parts = [manifest.tokenizer.ranks_sha256] + [
        [manifest.files[e.file].sha256, e.start, e.end] for e in manifest.extents[split]
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
