"""A dataset in a bucket: the directory's layout mirrored key for key, and how a reader opens a generation.

    manifest.json                the pointer: the generation in force, written last, with If-Match
    generations/g000012.json     each published generation's manifest
    tokens/, sources/, index/, tokenizer/   immutable files, uploaded before any generation names them
    leases/g000012/<reader>.json a reader's lease, renewed while it reads (no flock in a bucket)
    leases/g000012/collecting    gc's mark on a generation it is about to collect
    pins/<run>.json              generations a run pinned, as on disk
    .lock                        the writer (lock.py)

A lease says for how long it holds without renewal (`ttl`); a reader renews it every ttl/5 seconds and
deletes it when done; gc counts it live while its store time plus ttl is ahead of the store's clock. The
reader and gc each write, then read what the other wrote (a reader: its lease, then gc's mark, then the
generation's manifest; gc: its mark, then the leases), so with the strong read-after-write of S3 and GCS
either gc sees the lease and keeps the generation, or the reader sees the mark or the manifest gone and reads
the pointer again. A reader whose renewals fail for a whole ttl may lose its generation to gc: files already
in its cache stay readable, a file it still needs is reported gone.
"""

import json
import os
import secrets
import socket
import threading

from prepare import format as fmt
from prepare.storage.store import StorageError

POINTER = fmt.MANIFEST
LEASE_TTL = 600.0  # seconds a reader's lease holds without renewal
COLLECTING = "collecting"


def generation_key(generation):
    return f"{fmt.GENERATIONS}/g{generation:06d}.json"


def leases_of(generation):
    return f"{fmt.LEASES}/g{generation:06d}"


def parse_manifest(bucket, key, data):
    try:
        return fmt.Manifest.from_json(json.loads(data), bucket.url(key))
    except (ValueError, RecursionError) as e:
        raise fmt.DatasetError(f"{bucket.url(key)}: unreadable manifest ({e})") from None


def read_pointer(bucket):
    """(The manifest in force, the pointer's Object), or (None, None) for a prefix that holds no dataset yet."""
    data, found = bucket.read(POINTER)
    return (parse_manifest(bucket, POINTER, data), found) if data is not None else (None, None)


def read_generation(bucket, generation):
    data, _ = bucket.read(generation_key(generation))
    return parse_manifest(bucket, generation_key(generation), data) if data is not None else None


def pointer_bytes(manifest):
    """The pointer's bytes: the manifest (so a synced copy reads as a dataset) and a nonce, so that every write
    of it has a new ETag, and If-Match tells any two writes apart."""
    return (json.dumps({**manifest.to_json(), "written": secrets.token_hex(8)}, indent=1) + "\n").encode()


class Lease:
    """A reader's lease on one generation in a bucket, renewed by a thread until closed."""

    def __init__(self, bucket, generation, ttl=LEASE_TTL):
        self.bucket, self.generation, self.ttl = bucket, generation, ttl
        self.key = f"{leases_of(generation)}/{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.json"
        self.body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "ttl": ttl}).encode()
        self.bucket.write(self.key, self.body)
        self.stop = threading.Event()
        self.renewer = threading.Thread(target=self.renew, daemon=True)
        self.renewer.start()

    def renew(self):
        while not self.stop.wait(self.ttl / 5):
            try:
                self.bucket.write(self.key, self.body)
            except StorageError:
                continue  # the next renewal may pass; the lease holds for ttl meanwhile

    def close(self):
        if not self.stop.is_set():
            self.stop.set()
            self.renewer.join()
            try:
                self.bucket.delete([self.key])
            except StorageError:
                pass  # it expires by itself


def open_generation(bucket, generation=None, gone=None):
    """(The manifest, its Lease) of the generation in force, or of `generation` (another process's choice or a
    pin's: `gone` says why it is needed, if it was collected)."""
    for _ in range(100):
        if generation is None:
            current, _ = read_pointer(bucket)
            if current is None:
                raise fmt.DatasetError(f"{bucket.url()}: no dataset there (no {POINTER}); publish one with `python -m "
                                       f"prepare push DIR {bucket.url()}`")
        wanted = generation if generation is not None else current.generation
        lease = Lease(bucket, wanted)
        manifest = None
        if bucket.head(f"{leases_of(wanted)}/{COLLECTING}") is None:
            manifest = read_generation(bucket, wanted)
        if manifest is not None:
            return manifest, lease
        lease.close()
        if generation is not None:
            raise fmt.DatasetError(f"{bucket.url()}: generation {generation}, " + (
                gone or "which the job's first process opened, was collected before this process could lease it; "
                "start the job again"))
    raise fmt.DatasetError(f"{bucket.url()}: the dataset changed 100 times while being opened")


def read_pins(bucket):
    """name -> {"run": ..., "generations": [...]} of every pin of the bucket dataset."""
    pins = {}
    for found in bucket.list(fmt.PINS):
        name = found.key[len(fmt.PINS) + 1:]
        if name.endswith(".json") and "/" not in name:
            data, _ = bucket.read(found.key)
            try:
                pins[name[: -len(".json")]] = json.loads(data) if data is not None else {}
            except ValueError as e:
                raise fmt.DatasetError(f"{bucket.url(found.key)}: unreadable pin ({e}); `prepare unpin` removes "
                                       f"it") from None
    return pins


def pin(bucket, name, run, generation):
    """Add `generation` to the run's pin (called while its lease holds the generation, as on disk)."""
    data, _ = bucket.read(f"{fmt.PINS}/{name}.json")
    generations = json.loads(data).get("generations", []) if data is not None else []
    if generation not in generations:
        body = json.dumps({"run": run, "generations": sorted(generations + [generation])}).encode()
        bucket.write(f"{fmt.PINS}/{name}.json", body)


def immutable_files(manifest, tokenizer_files=()):
    """Keys of the immutable files one generation names, with their size where the manifest gives it (token
    files), else None: what must be in the bucket before its generation is."""
    itemsize = 4 if manifest.dtype == "uint32" else 2
    files = {f"{fmt.TOKENS}/{f.name}": f.tokens * itemsize for f in manifest.files.values()}
    files.update({f"{fmt.SOURCES}/{name}": None for name, _ in manifest.segments})
    files.update({f"{fmt.INDEX}/{name}": None for name, _ in manifest.index})
    if manifest.tokenizer.trained:
        files.update({f"{fmt.TOKENIZER}/{name}": None for name in tokenizer_files})
    return files
