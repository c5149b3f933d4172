"""A dataset as its readers (train, eval) see it, wherever it lives: a directory, or a bucket URL read through the
machine's cache. The cache's place and bound come from the environment, as a machine's and not a run's:
GPTMILL_CACHE_DIR (default ~/.cache/gptmill) and GPTMILL_CACHE_SIZE (bytes, or 500G, 2T; default 80% of its
disk). Token files are cached by checksum (cache.py); source segments and a trained tokenizer by name, below
the dataset's URL."""

import hashlib
import os
import re

from prepare import format as fmt
from prepare.storage.store import StorageError, is_url

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_cache = None


def cache_root():
    return os.path.abspath(os.path.expanduser(os.environ.get("GPTMILL_CACHE_DIR") or "~/.cache/gptmill"))


def cache_size():
    """GPTMILL_CACHE_SIZE in bytes, or None for the default."""
    text = os.environ.get("GPTMILL_CACHE_SIZE")
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise StorageError(f"GPTMILL_CACHE_SIZE={text}: give bytes or a size like 500G or 2T")
    return int(float(match[1]) * UNITS[match[2].upper()])


def token_cache():
    """The process's Cache of token files (one per process; the processes of a machine share its directory)."""
    global _cache
    if _cache is None:
        from prepare.storage.reader import open_cache

        _cache = open_cache(os.path.join(cache_root(), "tokens"), cache_size())
    return _cache


def open_snapshot(path, generation=None, gone=None):
    """The leased generation in force (or `generation`) of the dataset at `path`, with every file there: a
    local one checked for sizes, a bucket's checked on arrival."""
    if is_url(path):
        from prepare.storage.reader import RemoteSnapshot

        return RemoteSnapshot(path, token_cache(), generation, gone)
    snapshot = fmt.open_snapshot(path, generation, gone)
    try:
        fmt.check_files(path, snapshot.manifest)
    except fmt.DatasetError:
        snapshot.close()
        raise
    return snapshot


def read_manifest(path):
    """The manifest in force (not leased: for a look at the tokenizer, the vocabulary)."""
    if not is_url(path):
        return fmt.read_manifest(path)
    from prepare.storage.remote import open_generation

    manifest, lease = open_generation(bucket_of(path))
    lease.close()
    return manifest


def read_generation(path, generation):
    """Generation `generation`'s manifest (a DatasetError if it is gone)."""
    if not is_url(path):
        return fmt.read_manifest_file(fmt.generation_path(path, generation))
    from prepare.storage.remote import read_generation as read

    manifest = read(bucket_of(path), generation)
    if manifest is None:
        raise fmt.DatasetError(f"{path}: no generation {generation}")
    return manifest


def pin(path, name, run, generation):
    if is_url(path):
        from prepare.storage import remote

        return remote.pin(bucket_of(path), name, run, generation)
    return fmt.pin(path, name, run, generation)


def added_extents(path, old, new, split="train"):
    """format.added_extents, the source segments of a bucket dataset fetched into the cache first."""
    if not is_url(path):
        return fmt.added_extents(path, old, new, split)
    folder = local_folder(path, [f"{fmt.SOURCES}/{name}" for m in (old, new) for name, _ in m.segments])
    return fmt.added_extents(folder, old, new, split)


def tokenizer_dir(path, manifest):
    """The dataset's tokenizer/ directory (a bucket's, copied into the cache)."""
    if not is_url(path):
        return os.path.join(path, fmt.TOKENIZER)
    if not manifest.tokenizer.trained:
        return os.path.join(cache_root(), "untrained")  # never read: the encoding is named
    names = [o.key for o in bucket_of(path).list(fmt.TOKENIZER)]
    return os.path.join(local_folder(path, names), fmt.TOKENIZER)


def bucket_of(path):
    from prepare.storage.store import Bucket

    return Bucket(path)


def local_folder(path, keys):
    """A folder of the cache holding `keys` of the bucket dataset at `path` (fetched if missing; they are
    immutable, so a name there is always its object)."""
    from prepare.storage.transfer import download, run_all

    folder = os.path.join(cache_root(), "datasets", hashlib.sha256(path.encode()).hexdigest()[:16])
    bucket = bucket_of(path)

    def fetch(key):
        target = os.path.join(folder, *key.split("/"))
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            download(bucket, key, f"{target}.{os.getpid()}{fmt.TMP_SUFFIX}")
            os.replace(f"{target}.{os.getpid()}{fmt.TMP_SUFFIX}", target)

    run_all(fetch, sorted(set(keys)))
    return folder
