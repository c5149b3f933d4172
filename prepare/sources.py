"""Inputs: what a SOURCE argument names, and the documents each input yields.

A SOURCE is a preset name, a path (file or directory), a quoted glob, or `hf:NAME[:CONFIG]`. It expands
to inputs, each with an identity (`describe`) that prepare stores in the manifest to tell, on the next
run, whether the input is unchanged. `iter_documents` turns one input into document strings.
"""

import codecs
import glob
import gzip
import hashlib
import json
import os
import re
import sysconfig

from prepare.format import sha256_file

TEXT_CHUNK = 4 << 20
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


def expand_source(source, split):
    """The inputs one SOURCE argument names, as identity dicts without content hashes."""
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        if os.path.isdir(name):
            return [disk_dataset(name, split)]
        return [{"kind": "hub", "id": f"hf:{name}:{config or ''}:{split}", "name": name, "config": config or None, "split": split}]
    if source in PRESETS and not os.path.exists(source):
        return [entry for item in PRESETS[source]["inputs"]() for entry in expand_source(item, split)]
    if any(c in source for c in "*?["):
        paths = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
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
        if not paths:
            raise SourceError(f"{source}: directory holds no files")
        return [local_file(p) for p in paths]
    if os.path.isfile(source):
        return [local_file(source)]
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
    """Where an input's content identity is stored: the Hub's revision, else a sha256 of the bytes."""
    return "revision" if source["kind"] == "hub" else "sha256"


def content_hash(source):
    """The content identity of an input: sha256 of a file, of a directory's files, or the Hub revision."""
    if source["kind"] == "file":
        try:
            return sha256_file(source["path"])
        except OSError as e:
            raise SourceError(f"{source['path']}: cannot read ({e.strerror})") from None
    if source["kind"] == "disk":
        digest = hashlib.sha256()
        for root, _, files in sorted(os.walk(source["path"])):  # sorted: a fixed order whatever the filesystem's
            for f in sorted(files):
                path = os.path.join(root, f)
                digest.update(os.path.relpath(path, source["path"]).encode() + b"\0" + sha256_file(path).encode())
        return digest.hexdigest()
    return hub_revision(source["name"])


def hub_revision(name):
    """The commit sha of a Hub dataset now, so a rerun knows whether it changed."""
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(name).sha
    except Exception as e:  # network, auth and not-found errors come in many types
        raise SourceError(f"hf:{name}: cannot reach the dataset on the Hugging Face Hub ({type(e).__name__}: {e})") from None


class SourceStats:
    """What one input yielded besides documents: skipped empties, bad records, replaced bytes."""

    def __init__(self):
        self.empty = 0
        self.bad_records = 0
        self.invalid_utf8 = 0
        self.binary = False


_decode_stats = None


def _count_and_replace(error):
    _decode_stats.invalid_utf8 += error.end - error.start
    return "\ufffd", error.end


codecs.register_error("gptmill-count", _count_and_replace)


def decoder(stats, strict):
    global _decode_stats
    _decode_stats = stats
    return codecs.getincrementaldecoder("utf-8")(errors="strict" if strict else "gptmill-count")


def iter_documents(source, opts, stats, warn):
    """Yield the document strings of one input, skipping empty ones; raise SourceError on bad input."""
    kind = source["kind"]
    if kind == "file":
        fmt = source["format"]
        reader = {"text": text_documents, "jsonl": jsonl_documents, "parquet": parquet_documents}[fmt]
        docs = reader(source["path"], opts, stats, warn)
    else:
        docs = dataset_documents(source, opts, stats)
    for doc in docs:
        if doc.strip():
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


def text_documents(path, opts, stats, warn):
    try:
        f = open(path, "rb")
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        head = f.read(BINARY_PROBE)
        if b"\0" in head:
            stats.binary = True
            warn(f"{path}: binary file (NUL bytes), skipped")
            return
        f.seek(0)
        decode = decoder(stats, opts["strict"])
        pattern = separator_pattern(opts["doc_sep"])
        offset, carry, whole = 0, "", []
        while True:
            chunk = f.read(TEXT_CHUNK)
            try:
                text = decode.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise SourceError(f"{path}: invalid UTF-8 at byte {offset + e.start} (--strict)") from None
            offset += len(chunk)
            if pattern is None:
                whole.append(text)
            else:
                # Split only complete lines, so a separator is never cut by a chunk boundary.
                buffer = carry + text
                cut = len(buffer) if not chunk else buffer.rfind("\n") + 1
                pieces = pattern.split(buffer[:cut])
                yield from (p.strip() for p in pieces[:-1])
                carry = pieces[-1] + buffer[cut:]
            if not chunk:
                break
        yield "".join(whole) if pattern is None else carry.strip()
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


def jsonl_documents(path, opts, stats, warn):
    opener = gzip.open if path.lower().endswith(".gz") else open
    decode_errors = "strict" if opts["strict"] else "gptmill-count"
    decoder(stats, opts["strict"])
    try:
        with opener(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8", errors=decode_errors))
                except UnicodeDecodeError:
                    raise SourceError(f"{path}:{number}: invalid UTF-8 (--strict)") from None
                except ValueError as e:
                    if not opts["skip_bad_records"]:
                        raise SourceError(f"{path}:{number}: malformed JSON ({e}) (--skip-bad-records to skip such records)") from None
                    stats.bad_records += 1
                    continue
                text = record_text(record, opts["text_field"], f"{path}:{number}", opts, stats)
                if text is not None:
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
    """Records of a Hugging Face dataset: streamed from the Hub, or a `save_to_disk` directory."""
    import datasets

    datasets.disable_progress_bars()
    if source["kind"] == "disk":
        where = source["path"]
        try:
            data = datasets.load_from_disk(source["path"])
        except Exception as e:  # datasets raises FileNotFoundError, ValueError, ...
            raise SourceError(f"{where}: not a readable save_to_disk dataset ({e})") from None
        if isinstance(data, datasets.DatasetDict):
            if source["split"] not in data:
                raise SourceError(f"{where}: no split {source['split']!r} (splits: {', '.join(data)}); choose one with --split")
            data = data[source["split"]]
    else:
        where = f"hf:{source['name']}"
        try:
            data = datasets.load_dataset(
                source["name"], source["config"], split=source["split"], streaming=True, revision=source["revision"]
            )
        except Exception as e:
            raise SourceError(f"{where}: cannot load split {source['split']!r} ({type(e).__name__}: {e})") from None
    for index, record in enumerate(data):
        text = record_text(record, opts["text_field"], f"{where} record {index}", opts, stats)
        if text is not None:
            yield text
