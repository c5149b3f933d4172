"""Inputs: what a SOURCE argument names, and how prepare knows an input again.

A SOURCE is a preset name, a path (file or directory), a quoted glob, or `hf:NAME[:CONFIG]`. It expands
to inputs, each with an identity that prepare stores in the manifest to tell, on the next run, whether the
input is unchanged. A Hub dataset expands to its data files (parquet or JSONL of the chosen config and
split), each an input identified by its blob id, so a new revision redoes only the files it changed.
What an input holds is read by prepare/readers/.
"""

import glob
import hashlib
import os
import stat
import sysconfig

from prepare.format import sha256_file
from prepare.readers import format_of
from prepare.readers.base import SourceError, open_regular, special_kind
from prepare.storage.objects import expand_objects
from prepare.storage.store import is_url

DISK_DATASET_MARKERS = ("dataset_dict.json", "state.json")


def stdlib_files():
    """The .py sources of the running CPython's standard library (site-packages excluded)."""
    files = []
    for root, dirs, names in os.walk(sysconfig.get_paths()["stdlib"]):
        dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__")]
        files += [os.path.join(root, n) for n in names if n.endswith(".py")]
    return sorted(files)


# Presets for `make prepare DATASET=name`: the inputs and the option defaults that suit them.
PRESETS = {
    "stdlib": {"inputs": stdlib_files, "options": {}},
    "tinystories": {"inputs": lambda: ["hf:roneneldan/TinyStories"], "options": {"split": "train"}},
    "fineweb-edu": {
        "inputs": lambda: ["hf:HuggingFaceFW/fineweb-edu:sample-10BT"],
        "options": {"split": "train", "max_tokens": 1_000_000_000},
    },
}


def default_out(source):
    """The dataset directory of a build without --out: data/ and the name of its first SOURCE."""
    if source in PRESETS and not os.path.exists(source):
        name = source
    elif source.startswith("hf:"):
        name = source[3:].split(":")[0].rstrip("/").split("/")[-1].lower()
    else:
        name = os.path.basename(os.path.normpath(source.split("*")[0])).split(".")[0] or "corpus"
    return os.path.join("data", name)


def regular_files(paths, skipped):
    """The regular files among `paths` (symlinks followed); the others are appended to `skipped`."""
    kept = []
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except OSError:  # a dangling symlink: reported when read, like any unreadable file
            kept.append(path)
            continue
        (kept if stat.S_ISREG(mode) else skipped).append(path)
    return kept


def expand_source(source, split, skipped=None):
    """The inputs one SOURCE argument names, as identity dicts without content hashes. Files in a directory or
    glob that are not regular files (FIFOs, sockets, devices) are not inputs: they go to `skipped`."""
    skipped = [] if skipped is None else skipped
    if is_url(source):
        try:
            return expand_objects(source, format_of)
        except FileNotFoundError:
            raise SourceError(f"{source}: no object matches this URL") from None
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        if os.path.isdir(name):
            return [disk_dataset(name, split)]
        return hub_files(name, config or None, split)
    if source in PRESETS and not os.path.exists(source):
        return [entry for item in PRESETS[source]["inputs"]() for entry in expand_source(item, split, skipped)]
    if any(c in source for c in "*?["):
        paths = regular_files(sorted(p for p in glob.glob(source, recursive=True) if not os.path.isdir(p)), skipped)
        if not paths:
            raise SourceError(f"{source}: no files match this pattern")
        return [local_file(p) for p in paths]
    if os.path.isdir(source):
        if any(os.path.exists(os.path.join(source, m)) for m in DISK_DATASET_MARKERS):
            return [disk_dataset(source, split)]
        paths = []
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            paths += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        paths = regular_files(paths, skipped)
        if not paths:
            raise SourceError(f"{source}: directory holds no files")
        return [local_file(p) for p in paths]
    if os.path.isfile(source):
        return [local_file(source)]
    if os.path.exists(source):
        kind = special_kind(os.stat(source).st_mode)
        raise SourceError(f"{source}: not a regular file ({kind}); prepare reads files, "
                          f"directories, globs, presets and hf:NAME datasets")
    raise SourceError(f"{source}: no such file, directory, preset ({', '.join(PRESETS)}) or hf:NAME dataset")


def local_file(path):
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from None
    return {"kind": "file", "id": path, "path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "format": format_of(path)}


def disk_dataset(path, split):
    """A `save_to_disk` directory; its size and mtime are those of all its files together."""
    path = os.path.abspath(path)
    size, mtime = 0, 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
    return {"kind": "disk", "id": f"{path}:{split}", "path": path, "split": split, "size": size, "mtime_ns": mtime}


def content_key(source):
    """Where an input's content identity is stored: a sha256 of its bytes (a Hub file's blob id, an object's ETag
    are listed)."""
    return None if source["kind"] in ("hub_file", "object") else "sha256"


def prefix_sha256(source, length):
    """sha256 of the first `length` bytes of a file input: a file that only grew keeps it."""
    digest, left = hashlib.sha256(), length
    try:
        with open_regular(source["path"]) as f:
            while left and (chunk := f.read(min(left, 1 << 20))):
                digest.update(chunk)
                left -= len(chunk)
    except OSError as e:
        raise SourceError(f"{source['path']}: cannot read ({e.strerror})") from None
    return digest.hexdigest()


def identify(source):
    """The content identity of an input its plan left unhashed (a new one), or None: its sha256."""
    key = content_key(source)
    return content_hash(source) if key and key not in source else None


def content_hash(source):
    """The content identity of an input: sha256 of a file or of a directory's files."""
    if source["kind"] == "file":
        try:
            with open_regular(source["path"]) as f:
                return sha256_file(f)
        except OSError as e:
            raise SourceError(f"{source['path']}: cannot read ({e.strerror})") from None
    if source["kind"] == "disk":
        digest = hashlib.sha256()
        for root, _, files in sorted(os.walk(source["path"])):  # sorted: a fixed order whatever the filesystem's
            for f in sorted(files):
                path = os.path.join(root, f)
                with open_regular(path) as data:  # a FIFO or device in it could block
                    digest.update(os.path.relpath(path, source["path"]).encode() + b"\0" + sha256_file(data).encode())
        return digest.hexdigest()


def hub_files(name, config, split):
    """The data files of a Hub dataset's config and split at its current revision, each an input whose
    identity is its blob id: which files make a split is what `datasets` resolves from the dataset card."""
    import datasets
    from huggingface_hub import HfApi

    where = f"hf:{name}" + (f":{config}" if config else "")
    api = HfApi()
    try:
        revision = api.dataset_info(name).sha
        builder = datasets.load_dataset_builder(name, config, revision=revision)
    except Exception as e:  # network, auth and not-found errors come in many types
        raise SourceError(f"{where}: cannot reach the dataset on the Hugging Face Hub "
                          f"({type(e).__name__}: {e})") from None
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise SourceError(f"{where}: no split {split!r} (splits: {', '.join(data_files) or 'none'}); "
                          f"choose one with --split")
    marker = f"@{revision}/"
    paths = sorted(url.split(marker, 1)[1] if marker in url else url for url in data_files[split])
    try:
        infos = {i.path: i for i in api.get_paths_info(name, paths, repo_type="dataset", revision=revision)}
    except Exception as e:
        raise SourceError(f"{where}: cannot list its files ({type(e).__name__}: {e})") from None
    group = f"hf:{name}:{config or ''}:{split}"
    return [
        {"kind": "hub_file", "id": f"{group}:{path}", "group": group, "name": name, "config": config, "split": split,
         "path_in_repo": path, "revision": revision, "blob_id": infos[path].blob_id, "size": infos[path].size,
         "format": format_of(path)}
        for path in paths if path in infos
    ]
