"""The on-disk format of a prepared dataset, version 2: the one place both stages agree on.

A dataset directory is append-only and log-structured:

    manifest.json                 the generation in force (replaced atomically)
    generations/g000012.json      each generation's manifest, kept while a reader may still use it
    leases/g000012                a reader holds a shared flock on the lease of the generation it reads
    pins/<run>.json               generations a training run needs to replay itself, kept until unpinned
    tokens/train-<run>-0000.bin   immutable token files: raw little-endian ids of the manifest's dtype
    sources/<run>-0000.jsonl      immutable segments of per-input records (prepare's bookkeeping)
    tasks/g000012-of-64/          results of the tasks of a job on several machines, until committed
    index/<run>-0000.idx          immutable parts of the index of kept documents (--dedup, prepare/dedup.py)
    tokenizer/                    a tokenizer trained by `prepare tokenizer` (ranks.tiktoken, encoding.json)
    .lock                         flock'd by the prepare writing the dataset

A token file is written once under a temporary name, fsynced and renamed; its name (a random run id and a
sequence number) is never used for other bytes. The manifest lists the *live extents* of token files per
split: ranges [start, end) that begin at a document (the end-of-text token) and hold whole documents.
When an input changes or disappears, the ranges of its documents are retired from the extents, not
rewritten; compaction copies live extents into new files when dead tokens pass a threshold. Files no live
generation needs are removed by garbage collection, never while a reader holds a lease on a generation
that names them.

Trainers read only the manifest (files and extents). The per-input records (identity, counts and the
ranges of its documents) live in source segments: a commit appends one segment holding only the records it
changed, so writing a manifest costs what changed, not the size of the dataset.
"""

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import sys

import numpy as np

FORMAT = "gptmill-tokens"
VERSION = 2
MANIFEST = "manifest.json"
LOCK = ".lock"
TOKENS, SOURCES, GENERATIONS, LEASES, TASKS = "tokens", "sources", "generations", "leases", "tasks"
PINS, INDEX = "pins", "index"
TOKENIZER = "tokenizer"  # a trained tokenizer's directory (prepare/tokenizer.py), copied in with the dataset
SPLITS = ("train", "val")
TMP_SUFFIX = ".tmp"


class DatasetError(Exception):
    """A problem with a dataset directory that the user can fix; the message says how."""


def dtype_for_vocab(n_vocab):
    """uint16 when every id fits in it, else uint32."""
    return "uint16" if n_vocab <= 2**16 else "uint32"


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


# Durable writes.


def sha256_file(path):
    """sha256 of a file, given by path or as a file open for reading in binary."""
    digest = hashlib.sha256()
    with open(path, "rb") if isinstance(path, (str, os.PathLike)) else contextlib.nullcontext(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def naming(path):
    """Errors of writes to `path` name it (a write to an open file, on a full disk, raises an OSError without a
    file name)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def free_bytes(folder):
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def is_disk_full(error, folder, needed):
    """Whether `error`, raised writing `needed` bytes into `folder`, came of a full disk (torch and safetensors
    report it in their own exceptions, without an errno)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return free_bytes(folder) < needed
    except OSError:
        return False


def write_atomic(path, data: bytes):
    """Replace `path` with `data` so that a crash leaves either the old or the new file, whole."""
    tmp = f"{path}{TMP_SUFFIX}"
    with naming(tmp), open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


# The manifest.


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    name: str
    ranks_sha256: str  # sha256 over every (token bytes, id): the tokenizer's identity
    vocab_size: int
    eot_token: int
    trained: bool = False  # made by `prepare tokenizer`: its files are in the dataset's tokenizer/ directory
    pattern_sha256: str | None = None  # sha256 of the split pattern, also part of the identity (None: written before it was)


@dataclasses.dataclass(frozen=True)
class TokenFile:
    name: str
    split: str
    tokens: int
    sha256: str
    max_token: int


@dataclasses.dataclass(frozen=True)
class Extent:
    """Tokens [start, end) of a token file: whole documents, the first starting with end-of-text."""

    file: str
    start: int
    end: int

    @property
    def tokens(self):
        return self.end - self.start


@dataclasses.dataclass
class Manifest:
    generation: int
    tokenizer: Tokenizer
    dtype: str
    options: dict  # what shaped the tokens: a change asks for --rebuild
    files: dict  # name -> TokenFile, every file a live extent lies in
    extents: dict  # split -> [Extent], the live token ranges
    documents: dict  # split -> live documents
    segments: list  # [name, records] of the source segments in force, oldest first
    index: list = dataclasses.field(default_factory=list)  # [name, rows] of the index parts in force, oldest first
    removed: dict = dataclasses.field(default_factory=dict)  # what the build that made this generation removed

    def tokens(self, split):
        return sum(e.tokens for e in self.extents[split])

    def dead_tokens(self):
        return sum(f.tokens for f in self.files.values()) - sum(self.tokens(s) for s in SPLITS)

    def to_json(self):
        return {
            "format": FORMAT, "version": VERSION, "generation": self.generation,
            "tokenizer": dataclasses.asdict(self.tokenizer), "dtype": self.dtype, "options": self.options,
            "files": [dataclasses.asdict(f) for f in sorted(self.files.values(), key=lambda f: f.name)],
            "extents": {s: [[e.file, e.start, e.end] for e in self.extents[s]] for s in SPLITS},
            "documents": self.documents,
            "tokens": {s: self.tokens(s) for s in SPLITS},
            "segments": self.segments, "index": self.index, "removed": self.removed,
        }

    @classmethod
    def from_json(cls, data, where):
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"{where}: not a gptmill manifest")
        if data.get("version") != VERSION:
            raise DatasetError(f"{where}: format version {data.get('version')}, this gptmill reads {VERSION}; "
                               f"rebuild the dataset with `python -m prepare build ... --rebuild`")
        try:
            files = {plain_name(f["name"], where, "token file"): TokenFile(**f) for f in data["files"]}
            manifest = cls(
                generation=data["generation"], tokenizer=Tokenizer(**data["tokenizer"]), dtype=data["dtype"],
                options=data["options"], files=files,
                extents={s: [Extent(*e) for e in data["extents"][s]] for s in SPLITS},
                documents=data["documents"], segments=data["segments"], index=data.get("index", []),
                removed=data.get("removed", {}),
            )
            for name, _ in manifest.segments:
                plain_name(name, where, "source segment")
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{where}: malformed manifest ({e})") from None
        if type(manifest.generation) is not int or manifest.generation < 0:
            raise DatasetError(f"{where}: malformed manifest (generation {manifest.generation!r} is not a number)")
        stray = next((e.file for s in SPLITS for e in manifest.extents[s] if e.file not in files), None)
        if stray is not None:
            raise DatasetError(f"{where}: malformed manifest (an extent lies in {stray!r}, which is not among its files)")
        return manifest


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


def read_manifest(data_dir):
    """The manifest in force in `data_dir`, checked for format and version."""
    path = manifest_path(data_dir)
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such dataset directory; make one with `python -m prepare build SOURCE --out {data_dir}`")
    if not os.path.exists(path):
        raise DatasetError(f"{data_dir}: no {MANIFEST}; make one with `python -m prepare build SOURCE --out {data_dir}`")
    return read_manifest_file(path)


def read_manifest_file(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"{path}: unreadable manifest ({e})") from None
    return Manifest.from_json(data, path)


def publish(data_dir, manifest):
    """Make `manifest` the generation in force: its snapshot and lease first, then manifest.json, atomically."""
    text = (json.dumps(manifest.to_json(), indent=1) + "\n").encode()
    os.makedirs(os.path.join(data_dir, GENERATIONS), exist_ok=True)
    write_atomic(generation_path(data_dir, manifest.generation), text)
    make_lease(data_dir, manifest.generation)
    fsync_dir(os.path.join(data_dir, LEASES))
    write_atomic(manifest_path(data_dir), text)


def generation_path(data_dir, generation):
    return os.path.join(data_dir, GENERATIONS, f"g{generation:06d}.json")


def lease_path(data_dir, generation):
    return os.path.join(data_dir, LEASES, f"g{generation:06d}")


def lease_generation(name):
    """The generation a file of leases/ is the lease of, or None for a file that is not a lease."""
    return int(name[1:]) if re.fullmatch(r"g\d{6,}", name) else None


# Cluster jobs: `tasks/g<generation>-of-<N>/` holds each task's claim (made before it writes a token file)
# and result, until `prepare commit` publishes them or `prepare abort` removes them.

CLAIM_SUFFIX = ".claim"


def jobs(data_dir):
    """Names of the jobs in progress (or abandoned but not aborted) in a dataset directory."""
    root = os.path.join(data_dir, TASKS)
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))) if os.path.isdir(root) else []


def claim_path(data_dir, job, run_id):
    return os.path.join(data_dir, TASKS, job, run_id + CLAIM_SUFFIX)


def claimed_runs(data_dir):
    """Run ids claimed by the tasks of every job in the directory: their token files are the job's."""
    return {name[: -len(CLAIM_SUFFIX)] for job in jobs(data_dir) for name in os.listdir(os.path.join(data_dir, TASKS, job))
            if name.endswith(CLAIM_SUFFIX)}


# Per-input records, in segments.


def read_segment(data_dir, name):
    path = os.path.join(data_dir, SOURCES, name)
    try:
        with open(path) as f:
            return [json.loads(line) for line in f]
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"{path}: unreadable source segment ({e}); rebuild with --rebuild") from None


def read_sources(data_dir, manifest):
    """id -> record of every live input: the segments in order, later records replacing earlier ones."""
    sources = {}
    for name, _ in manifest.segments if manifest else []:
        for record in read_segment(data_dir, name):
            if record.get("deleted"):
                sources.pop(record["id"], None)
            else:
                sources[record["id"]] = record
    return sources


def added_extents(data_dir, old, new, split="train"):
    """The token ranges of `split` that generation manifest `new` has and `old` had not (Extents in `new`'s
    files): every range of an input that is new or whose content changed, less the ranges it kept (a JSONL
    file that grew keeps its earlier records'). An unchanged input adds nothing, even if compaction moved it."""
    before, added = read_sources(data_dir, old), []
    for source_id, record in read_sources(data_dir, new).items():
        was = before.get(source_id)
        if was and all(was.get(k) == record.get(k) for k in ("sha256", "blob_id", "max_tokens")):
            continue
        kept = was["ranges"] if was else []
        added += [Extent(*r[1:]) for r in record["ranges"] if r[0] == split and r not in kept]
    return added


def write_segment(data_dir, name, records):
    """An immutable segment of source records (a record {"id": ..., "deleted": true} removes an input)."""
    os.makedirs(os.path.join(data_dir, SOURCES), exist_ok=True)
    path = os.path.join(data_dir, SOURCES, name)
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


# Index parts (prepare/dedup.py): one immutable file each, `index/<run>-0000.idx`: 8 bytes giving the length of
# a JSON header ({"inputs": ..., "arrays": {name: [dtype, shape, offset]}}), the header, then each array's
# raw bytes at a 64-byte aligned offset. Written under a temporary name, fsynced and renamed, like a token file.

INDEX_SUFFIX = ".idx"
INDEX_ARRAYS = ("refs", "positions", "exact", "signatures", "bands", "band_rows", "exact_sorted", "exact_rows")


def index_part_name(run_id, index):
    return f"{run_id}-{index:04d}{INDEX_SUFFIX}"


@dataclasses.dataclass
class IndexPart:
    """Kept documents of some inputs: `inputs` ([input id, stamp]); per row its input (an index into
    `inputs`), position in the input, exact key (n, 2) and MinHash signature (n, 112); each band's keys
    sorted with their rows (14, m), and the exact keys' first halves sorted with their rows. Arrays are
    memory-mapped: a lookup reads the pages it touches."""

    name: str
    inputs: list
    refs: np.ndarray
    positions: np.ndarray
    exact: np.ndarray
    signatures: np.ndarray
    bands: np.ndarray
    band_rows: np.ndarray
    exact_sorted: np.ndarray
    exact_rows: np.ndarray
    live: np.ndarray = None  # per input: still indexed (set by the reader against the records in force)


def write_index_part(data_dir, name, inputs, refs, positions, exact, signatures, bands, band_rows):
    order = np.argsort(exact[:, 0], kind="stable")
    arrays = {"refs": refs, "positions": positions, "exact": exact, "signatures": signatures, "bands": bands,
              "band_rows": band_rows, "exact_sorted": exact[order, 0], "exact_rows": order}
    arrays = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    layout, offset = {}, 0
    for key, array in arrays.items():
        layout[key] = [array.dtype.str, list(array.shape), offset]
        offset += -(-array.nbytes // 64) * 64
    header = json.dumps({"inputs": inputs, "arrays": layout}).encode()
    start = -(-(8 + len(header)) // 64) * 64
    os.makedirs(os.path.join(data_dir, INDEX), exist_ok=True)
    path = os.path.join(data_dir, INDEX, name)
    with open(path + TMP_SUFFIX, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        for key, array in arrays.items():
            f.seek(start + layout[key][2])
            f.write(array.data)
        f.truncate(start + offset)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + TMP_SUFFIX, path)
    fsync_dir(os.path.join(data_dir, INDEX))


def open_index_part(data_dir, name):
    path = os.path.join(data_dir, INDEX, name)
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        start = -(-(8 + size) // 64) * 64
        arrays = {}
        for key in INDEX_ARRAYS:
            dtype, shape, offset = header["arrays"][key]
            empty = int(np.prod(shape)) == 0  # an empty map is refused by mmap
            arrays[key] = np.zeros(shape, dtype) if empty else np.memmap(path, dtype, "r", start + offset, tuple(shape))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: unreadable index part ({e}); rebuild with --rebuild") from None
    return IndexPart(name, [tuple(i) for i in header["inputs"]], **arrays)


# Readers: a snapshot of one generation, leased for as long as it is open.


class Snapshot:
    """The manifest of one generation, with a shared lock on its lease: garbage collection leaves every file
    it names in place until the snapshot is closed (or its process ends)."""

    def __init__(self, data_dir, manifest, lease):
        self.data_dir, self.manifest, self._lease = data_dir, manifest, lease

    def close(self):
        if self._lease:
            self._lease.close()
            self._lease = None

    def open_tokens(self, name):
        """A read-only memmap of one token file."""
        return np.memmap(token_path(self.data_dir, name), dtype=self.manifest.dtype, mode="r")


def open_snapshot(data_dir, generation=None, gone=None):
    """The generation in force (or `generation`, one another process of the same job opened or a pin keeps),
    leased. Retries if a prepare publishes a newer one while we take the lease. `gone`: what to say if
    `generation` was collected."""
    if generation is not None:
        return open_generation(data_dir, generation, gone)
    for _ in range(100):
        manifest = read_manifest(data_dir)
        path = lease_path(data_dir, manifest.generation)
        try:
            lease = open(path, "rb")
        except FileNotFoundError:
            if read_manifest(data_dir).generation == manifest.generation:  # a dataset copied without its leases/
                try:
                    make_lease(data_dir, manifest.generation)
                except OSError as e:
                    if e.errno == errno.EROFS:  # no prepare can write there, so none can collect what we read
                        print(f"warning: {data_dir}: read-only and without a lease in {LEASES}/: no prepare can be running "
                              f"there, so the generation in force is read without one", file=sys.stderr)
                        return Snapshot(data_dir, manifest, None)
                    raise DatasetError(f"{data_dir}: generation {manifest.generation} has no lease in {LEASES}/ and none can "
                                       f"be made ({e.strerror}); a reader needs one, so that garbage collection keeps its "
                                       f"files") from None
            continue  # else collected between our reading the manifest and opening the lease: read again
        if holds(lease, path):
            return Snapshot(data_dir, manifest, lease)
    raise DatasetError(f"{data_dir}: the dataset changed 100 times while being opened")


def open_generation(data_dir, generation, gone=None):
    """Generation `generation`, leased, while a lease (another process of the job holds one) or a pin keeps it."""
    path = lease_path(data_dir, generation)
    try:
        lease = open(path, "rb")
    except FileNotFoundError:
        lease = None
    exists = os.path.exists(generation_path(data_dir, generation))
    if lease is None and exists and os.statvfs(data_dir).f_flag & os.ST_RDONLY:  # a read-only copy: no prepare can collect it
        return Snapshot(data_dir, read_manifest_file(generation_path(data_dir, generation)), None)
    if lease is None or not holds(lease, path) or not exists:
        raise DatasetError(f"{data_dir}: generation {generation}, " + (gone or "which the job's first process opened, was "
                           "collected before this process could lease it; start the job again"))
    return Snapshot(data_dir, read_manifest_file(generation_path(data_dir, generation)), lease)


def holds(lease, path):
    """Take a shared lock on an open lease; True if it is still the file at `path` (garbage collection removes a
    lease while holding it exclusively, so one that is still there keeps its generation's files)."""
    fcntl.flock(lease, fcntl.LOCK_SH)
    try:
        if os.fstat(lease.fileno()).st_ino == os.stat(path).st_ino:
            return True
    except FileNotFoundError:
        pass
    lease.close()
    return False


def make_lease(data_dir, generation):
    os.makedirs(os.path.join(data_dir, LEASES), exist_ok=True)
    with open(lease_path(data_dir, generation), "a"):
        pass


# Pins: a training run that follows a dataset from generation to generation (train/history.py) pins each one
# it trains on, so that it can replay itself and tell what each night added; gc and compaction keep what a
# pinned generation names (its lease, manifest, token files and source segments) until `prepare unpin`.


def pin_path(data_dir, name):
    return os.path.join(data_dir, PINS, f"{name}.json")


def read_pins(data_dir):
    """name -> {"run": the run directory, "generations": [...]} of every pin of the dataset."""
    folder, pins = os.path.join(data_dir, PINS), {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name)) as f:
                    pins[name[: -len(".json")]] = json.load(f)
            except (OSError, ValueError) as e:
                raise DatasetError(f"{os.path.join(folder, name)}: unreadable pin ({e}); `prepare unpin` removes it") from None
    return pins


def pin(data_dir, name, run, generation):
    """Add `generation` to the pin `name` of the run in `run` (called while the run leases it, so that no gc
    in between can collect it)."""
    os.makedirs(os.path.join(data_dir, PINS), exist_ok=True)
    generations = read_pins(data_dir).get(name, {}).get("generations", [])
    if generation not in generations:
        write_atomic(pin_path(data_dir, name), json.dumps({"run": run, "generations": sorted(generations + [generation])}).encode())


def pinned_generations(data_dir):
    return {g for p in read_pins(data_dir).values() for g in p.get("generations", [])}


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


V1_SHARD = re.compile(r"^(train|val)-\d{6}\.bin$")  # shards of format version 1, which --rebuild replaces


def is_version_1(data_dir):
    try:
        with open(manifest_path(data_dir)) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") == 1


def is_ours(name):
    """Files a gptmill dataset directory may hold at its top level."""
    return name in (MANIFEST, LOCK, TOKENS, SOURCES, GENERATIONS, LEASES, TASKS, TOKENIZER, PINS, INDEX) or name.endswith(TMP_SUFFIX) or bool(V1_SHARD.match(name))
