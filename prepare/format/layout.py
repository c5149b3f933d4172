"""The names in a dataset directory: every folder and file the format has, and how each is called (the tree
is in prepare/format/__init__.py). A name is never used for other bytes, so readers and a crash never see a
file change under them."""

import os
import re
import secrets

MANIFEST = "manifest.json"
LOCK = ".lock"
TOKENS, SOURCES, GENERATIONS, LEASES, TASKS = "tokens", "sources", "generations", "leases", "tasks"
PINS, INDEX = "pins", "index"
TOKENIZER = "tokenizer"  # a trained tokenizer's directory (prepare/tokenizer/encodings.py), copied in with the dataset
REPORT = "report.html"  # where `prepare report` writes by default: a later build must not take it for a user's file
SPLITS = ("train", "val")
TMP_SUFFIX = ".tmp"
CLAIM_SUFFIX = ".claim"
INDEX_SUFFIX = ".idx"
V1_SHARD = re.compile(r"^(train|val)-\d{6}\.bin$")  # shards of format version 1, which --rebuild replaces


class DatasetError(Exception):
    """A problem with a dataset directory that the user can fix; the message says how."""


def new_run_id():
    """A name part no other run (on this machine or another) will pick: files are never renamed over."""
    return secrets.token_hex(6)


def token_file_name(split, run_id, index):
    return f"{split}-{run_id}-{index:04d}.bin"


def run_of(token_file):
    """The run id in a token file's name (a temporary one's too), or None."""
    parts = token_file.split("-")
    return parts[1] if len(parts) == 3 and parts[0] in SPLITS else None


def segment_name(run_id, index):
    return f"{run_id}-{index:04d}.jsonl"


def index_part_name(run_id, index):
    return f"{run_id}-{index:04d}{INDEX_SUFFIX}"


def plain_name(name, where, what):
    """`name`, if it is a plain file name: a name read from disk must not lead out of its directory."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise DatasetError(f"{where}: {what} {name!r} is not a plain file name in its directory; the file was edited "
                           f"or forged, restore it or rebuild")
    return name


def manifest_path(data_dir):
    return os.path.join(data_dir, MANIFEST)


def token_path(data_dir, name):
    return os.path.join(data_dir, TOKENS, name)


def generation_path(data_dir, generation):
    return os.path.join(data_dir, GENERATIONS, f"g{generation:06d}.json")


def lease_path(data_dir, generation):
    return os.path.join(data_dir, LEASES, f"g{generation:06d}")


def lease_generation(name):
    """The generation a file of leases/ is the lease of, or None for a file that is not a lease."""
    return int(name[1:]) if re.fullmatch(r"g\d{6,}", name) else None


def pin_path(data_dir, name):
    return os.path.join(data_dir, PINS, f"{name}.json")


def claim_path(data_dir, job, run_id):
    return os.path.join(data_dir, TASKS, job, run_id + CLAIM_SUFFIX)


def is_ours(name):
    """Files a gptmill dataset directory may hold at its top level."""
    return (name in (MANIFEST, LOCK, TOKENS, SOURCES, GENERATIONS, LEASES, TASKS, TOKENIZER, PINS, INDEX, REPORT)
            or name.endswith(TMP_SUFFIX) or bool(V1_SHARD.match(name)))
