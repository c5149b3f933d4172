"""The on-disk format of a prepared dataset: the one place both stages agree on.

A dataset directory holds `manifest.json` and shards named `{split}-{index:06d}.bin`. A shard is raw
little-endian token ids of the manifest's dtype, readable with `np.memmap(path, dtype, mode="r")`.
Every document is stored as the end-of-text token followed by its tokens, and never spans two shards.

The manifest is the only thing that makes shards visible: a shard is written under a temporary name,
fsynced and renamed before the manifest that names it is replaced (also temp + fsync + rename).
Files matching the shard pattern that the manifest does not name are leftovers of a crash.
"""

import hashlib
import json
import os
import re

import numpy as np

FORMAT = "gptmill-tokens"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
SPLITS = ("train", "val")
TMP_SUFFIX = ".tmp"
SHARD_RE = re.compile(r"^(train|val)-(\d{6})\.bin$")


class DatasetError(Exception):
    """A problem with a dataset directory that the user can fix; the message says how."""


def dtype_for_vocab(n_vocab):
    """uint16 when every id fits in it, else uint32."""
    return "uint16" if n_vocab <= 2**16 else "uint32"


def shard_name(split, index):
    return f"{split}-{index:06d}.bin"


def next_shard_index(manifest, split):
    """One above the highest shard index of `split` in `manifest` (0 for none)."""
    names = [s["file"] for s in manifest["splits"][split]["shards"]] if manifest else []
    return 1 + max((int(SHARD_RE.match(n)[2]) for n in names), default=-1)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data: bytes):
    """Replace `path` with `data` so that a crash leaves either the old or the new file, whole."""
    tmp = path + TMP_SUFFIX
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def manifest_path(data_dir):
    return os.path.join(data_dir, MANIFEST)


def write_manifest(data_dir, manifest):
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    write_atomic(manifest_path(data_dir), text.encode())


def read_manifest(data_dir):
    """The manifest of `data_dir`, checked for format and version."""
    path = manifest_path(data_dir)
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such dataset directory; make one with `python -m prepare build SOURCE --out {data_dir}`")
    if not os.path.exists(path):
        raise DatasetError(f"{data_dir}: no {MANIFEST}; make one with `python -m prepare build SOURCE --out {data_dir}`")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a gptmill manifest")
    if manifest.get("version") != VERSION:
        raise DatasetError(f"{path}: format version {manifest.get('version')}, this gptmill reads {VERSION}; rebuild with --rebuild")
    return manifest


def shard_path(data_dir, shard):
    return os.path.join(data_dir, shard["file"])


def check_shard_sizes(data_dir, manifest):
    """Cheap check before training: every shard exists with the size its token count implies."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split in SPLITS:
        for shard in manifest["splits"][split]["shards"]:
            path = shard_path(data_dir, shard)
            try:
                size = os.path.getsize(path)
            except OSError:
                raise DatasetError(f"{path}: shard named in the manifest is missing; rerun prepare") from None
            if size != shard["tokens"] * itemsize:
                raise DatasetError(
                    f"{path}: {size} bytes, the manifest says {shard['tokens']} {manifest['dtype']} tokens "
                    f"({shard['tokens'] * itemsize} bytes); the shard is truncated or corrupt, rerun prepare with --rebuild"
                )


def verify_shard(data_dir, manifest, shard):
    """Full check of one shard: size, checksum and max id. Returns None if good, else what is wrong."""
    path = shard_path(data_dir, shard)
    itemsize = np.dtype(manifest["dtype"]).itemsize
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing"
    if size != shard["tokens"] * itemsize:
        return f"{size} bytes, expected {shard['tokens'] * itemsize}"
    if sha256_file(path) != shard["sha256"]:
        return "checksum mismatch"
    tokens = np.memmap(path, dtype=manifest["dtype"], mode="r")
    if tokens[0] != manifest["tokenizer"]["eot_token"]:
        return "does not start with the end-of-text token"
    if int(tokens.max()) >= manifest["tokenizer"]["vocab_size"]:
        return f"token id {int(tokens.max())} outside the vocabulary of {manifest['tokenizer']['vocab_size']}"
    return None


def open_shard(data_dir, manifest, shard):
    """A read-only memmap of one shard's tokens."""
    return np.memmap(shard_path(data_dir, shard), dtype=manifest["dtype"], mode="r")


def leftover_files(data_dir, manifest):
    """Shard-like or temporary files in `data_dir` that `manifest` does not name: debris of a crash."""
    named = set()
    if manifest:
        named = {s["file"] for split in SPLITS for s in manifest["splits"][split]["shards"]}
    leftovers = []
    for name in sorted(os.listdir(data_dir)):
        if name.endswith(TMP_SUFFIX) or (SHARD_RE.match(name) and name not in named):
            leftovers.append(name)
    return leftovers


def is_ours(name):
    """Files a gptmill dataset directory may hold."""
    return name in (MANIFEST, LOCK) or name.endswith(TMP_SUFFIX) or bool(SHARD_RE.match(name))
