"""Inputs: what a SOURCE argument names, and the documents each input yields.

A SOURCE is a preset name, a path (file or directory), a quoted glob, or `hf:NAME[:CONFIG]`. It expands
to inputs, each with an identity that prepare stores in the manifest to tell, on the next run, whether the
input is unchanged. A Hub dataset expands to its data files (parquet or JSONL of the chosen config and
split), each an input identified by its blob id, so a new revision redoes only the files it changed.
`iter_documents` turns one input into document strings.
"""

import codecs
import glob
import gzip
import hashlib
import json
import os
import re
import stat
import sysconfig

from prepare.format import sha256_file

TEXT_CHUNK = 4 << 20
PART_CHARS = 1 << 20  # a one-document text file is tokenized in parts of about this many characters (see Part)
BINARY_PROBE = 8192
DISK_DATASET_MARKERS = ("dataset_dict.json", "state.json")


class SourceError(Exception):
    """Bad input named by the message; prepare stops and leaves the output as it was."""


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


def special_kind(mode):
    """What a file that is not a regular file is (reading a FIFO, socket or device could block or never end)."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a file"


def open_regular(path):
    """A regular file (or a symlink to one) opened for reading in binary; a SourceError for anything else. The
    open itself cannot block: a FIFO is opened non-blocking, then refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SourceError(f"{path}: not a regular file ({special_kind(mode)}); prepare reads regular files only")
    return os.fdopen(fd, "rb")


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
        raise SourceError(f"{source}: not a regular file ({special_kind(os.stat(source).st_mode)}); prepare reads files, "
                          f"directories, globs, presets and hf:NAME datasets")
    raise SourceError(f"{source}: no such file, directory, preset ({', '.join(PRESETS)}) or hf:NAME dataset")


def local_file(path):
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from None
    return {"kind": "file", "id": path, "path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "format": file_format(path)}


def file_format(path):
    name = path.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


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
    """Where an input's content identity is stored: a sha256 of its bytes (a Hub file's blob id is listed)."""
    return None if source["kind"] == "hub_file" else "sha256"


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
        raise SourceError(f"{where}: cannot reach the dataset on the Hugging Face Hub ({type(e).__name__}: {e})") from None
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise SourceError(f"{where}: no split {split!r} (splits: {', '.join(data_files) or 'none'}); choose one with --split")
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
         "format": file_format(path)}
        for path in paths if path in infos
    ]


def fetch_hub_file(source):
    """A local copy of one Hub data file (Hugging Face's cache)."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(source["name"], source["path_in_repo"], repo_type="dataset", revision=source["revision"])
    except Exception as e:
        raise SourceError(f"hf:{source['name']}/{source['path_in_repo']}: cannot download ({type(e).__name__}: {e})") from None


class SourceStats:
    """What one input yielded besides documents: skipped empties, bad records, replaced bytes, and where its
    last document starts (byte offset) when the format allows reading on from there."""

    def __init__(self):
        self.empty = 0
        self.bad_records = 0
        self.invalid_utf8 = 0
        self.binary = False
        self.last_document_at = None


_decode_stats = None


def _count_and_replace(error):
    _decode_stats.invalid_utf8 += error.end - error.start
    return "\ufffd", error.end


codecs.register_error("gptmill-count", _count_and_replace)


def decoder(stats, strict):
    global _decode_stats
    _decode_stats = stats
    return codecs.getincrementaldecoder("utf-8")(errors="strict" if strict else "gptmill-count")


class Part(str):
    """A piece of a document too long to hold whole (a one-document text file): it continues the Part before
    it if `continued`, and the document goes on in the next one while `more`. Whether the document is empty
    is known at its end, by its reader."""

    def __new__(cls, text, continued, more):
        part = super().__new__(cls, text)
        part.continued, part.more = continued, more
        return part


def iter_documents(source, opts, stats, warn, start=0, cut=None):
    """Yield the document strings of one input, skipping empty ones; raise SourceError on bad input.
    `start`: the byte offset to read a grown JSONL file from. `cut(text)`: where a long document may be cut
    (an index, or -1 for nowhere); given, a one-document text file longer than PART_CHARS comes in Parts."""
    kind = source["kind"]
    if kind in ("file", "hub_file"):
        path = source["path"] if kind == "file" else fetch_hub_file(source)
        if source["format"] == "jsonl":
            docs = jsonl_documents(path, opts, stats, warn, start)
        elif source["format"] == "text":
            docs = text_documents(path, opts, stats, warn, cut)
        else:
            docs = parquet_documents(path, opts, stats, warn)
    else:
        docs = dataset_documents(source, opts, stats)
    for doc in docs:
        if isinstance(doc, Part) or doc.strip():
            yield doc
        else:
            stats.empty += 1


def separator_pattern(doc_sep):
    """None: each file is one document. 'blank': split on blank lines. Else: split on lines equal to it."""
    if doc_sep is None:
        return None
    if doc_sep == "blank":
        return re.compile(r"\n(?:[ \t\r]*\n)+")
    return re.compile(r"(?:^|\n)[ \t]*" + re.escape(doc_sep) + r"[ \t\r]*(?:\n|$)", re.MULTILINE)


def text_documents(path, opts, stats, warn, cut=None):
    with open_regular(path) as f:
        head = f.read(BINARY_PROBE)
        if b"\0" in head:
            stats.binary = True
            warn(f"{path}: binary file (NUL bytes), skipped")
            return
        f.seek(0)
        decode = decoder(stats, opts["strict"])
        pattern = separator_pattern(opts["doc_sep"])
        offset, carry, whole, parted = 0, "", [], False
        while True:
            chunk = f.read(TEXT_CHUNK)
            try:
                text = decode.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise SourceError(f"{path}: invalid UTF-8 at byte {offset + e.start} (--strict)") from None
            offset += len(chunk)
            if pattern is None:
                whole.append(text)
                if cut and sum(map(len, whole)) >= PART_CHARS:  # a long document: on in parts, where it may be cut
                    pending = "".join(whole)
                    while len(pending) >= PART_CHARS and ((at := cut(pending[:PART_CHARS])) > 0 or (at := cut(pending)) > 0):
                        yield Part(pending[:at], continued=parted, more=True)
                        parted = True
                        pending = pending[at:]
                    whole = [pending]
            else:
                # Split only complete lines, so a separator is never cut by a chunk boundary.
                buffer = carry + text
                cut = len(buffer) if not chunk else buffer.rfind("\n") + 1
                pieces = pattern.split(buffer[:cut])
                yield from (p.strip() for p in pieces[:-1])
                carry = pieces[-1] + buffer[cut:]
            if not chunk:
                break
        if pattern is None:
            yield Part("".join(whole), continued=True, more=False) if parted else "".join(whole)
        else:
            yield carry.strip()
    if stats.invalid_utf8:
        warn(f"{path}: {stats.invalid_utf8} bytes of invalid UTF-8 replaced with U+FFFD (--strict to fail instead)")


def record_text(record, field, where, opts, stats):
    """The text field of one record, or None (counted) for a bad record under --skip-bad-records."""
    if isinstance(record, dict) and isinstance(record.get(field), str):
        return record[field]
    if not isinstance(record, dict):
        problem = f"record is a {type(record).__name__}, not an object"
    elif field not in record:
        problem = f"no field {field!r} (fields: {', '.join(map(str, record)) or 'none'}); choose one with --text-field"
    else:
        problem = f"field {field!r} is {type(record[field]).__name__}, not a string"
    if opts["skip_bad_records"]:
        stats.bad_records += 1
        return None
    raise SourceError(f"{where}: {problem} (--skip-bad-records to skip such records)")


def jsonl_documents(path, opts, stats, warn, start=0):
    """Records of a JSONL file from byte `start`; an uncompressed file notes where its last record starts, so
    that records appended later are all a rerun reads."""
    compressed = path.lower().endswith(".gz")
    decode_errors = "strict" if opts["strict"] else "gptmill-count"
    decoder(stats, opts["strict"])
    try:
        with open_regular(path) as raw, (gzip.open(raw) if compressed else raw) as f:
            f.seek(start)
            offset = start
            for number, line in enumerate(f, 1):
                at, offset = offset, offset + len(line)
                where = f"{path}:{number}" if not start else f"{path}: record at byte {at}"
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8", errors=decode_errors))
                except UnicodeDecodeError:
                    raise SourceError(f"{where}: invalid UTF-8 (--strict)") from None
                except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than Python's stack
                    problem = "nested too deeply" if isinstance(e, RecursionError) else e
                    if not opts["skip_bad_records"]:
                        raise SourceError(f"{where}: malformed JSON ({problem}) (--skip-bad-records to skip such records)") from None
                    stats.bad_records += 1
                    continue
                text = record_text(record, opts["text_field"], where, opts, stats)
                if text is not None:
                    if not compressed and text.strip():
                        stats.last_document_at = at
                    yield text
    except (OSError, EOFError) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None
    if stats.invalid_utf8:
        warn(f"{path}: {stats.invalid_utf8} bytes of invalid UTF-8 replaced with U+FFFD (--strict to fail instead)")


def parquet_documents(path, opts, stats, warn):
    import pyarrow.parquet as pq

    field = opts["text_field"]
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
        raise SourceError(f"{path}: not a readable parquet file ({e})") from None
    columns = table.schema_arrow.names
    if field not in columns:
        raise SourceError(f"{path}: no column {field!r} (columns: {', '.join(columns)}); choose one with --text-field")
    for batch in table.iter_batches(batch_size=4096, columns=[field]):
        for row, text in enumerate(batch.column(0).to_pylist()):
            if text is None:
                stats.empty += 1
            elif isinstance(text, str):
                yield text
            else:
                record_text({field: text}, field, f"{path}: column {field!r}", opts, stats)


def dataset_documents(source, opts, stats):
    """Records of a Hugging Face `save_to_disk` directory."""
    import datasets

    datasets.disable_progress_bars()
    where = source["path"]
    try:
        data = datasets.load_from_disk(source["path"])
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, ...
        raise SourceError(f"{where}: not a readable save_to_disk dataset ({e})") from None
    if isinstance(data, datasets.DatasetDict):
        if source["split"] not in data:
            raise SourceError(f"{where}: no split {source['split']!r} (splits: {', '.join(data)}); choose one with --split")
        data = data[source["split"]]
    for index, record in enumerate(data):
        text = record_text(record, opts["text_field"], f"{where} record {index}", opts, stats)
        if text is not None:
            yield text
