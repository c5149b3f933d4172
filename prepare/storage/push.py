"""`prepare push DIR URL` and `prepare pull URL DIR`: a dataset's generation in force copied between a directory
and a bucket with the guarantees it has on disk.

A push, under the bucket's writer lock: uploads the immutable files the generation names that the bucket lacks
(token files, source segments, index parts, a trained tokenizer), then the generation's manifest, then the
pointer, with If-Match on the ETag it read (If-None-Match: * on a new prefix), and collects what no generation
in use needs. Killed anywhere, it leaves the previous generation in force, whole; a rerun uploads the rest.
A pull leases the bucket's generation in force, downloads what the directory lacks (token files checked
against their sha256 as they arrive), and publishes it there as a build would.
"""

import dataclasses
import json
import os
import time

from prepare import format as fmt
from prepare.storage import gc
from prepare.storage.lock import BucketLock
from prepare.storage.remote import (POINTER, generation_key, immutable_files, open_generation, pointer_bytes,
                                    read_pointer)
from prepare.storage.store import Bucket, Conflict, StorageError
from prepare.storage.transfer import download, run_all

IMMUTABLE = (fmt.TOKENS, fmt.SOURCES, fmt.INDEX, fmt.TOKENIZER)


@dataclasses.dataclass
class Moved:
    """What a push or pull did."""

    generation: int
    files: int = 0  # files copied
    bytes: int = 0
    skipped: int = 0  # files the other side had already
    seconds: float = 0.0
    collected: int = 0  # files gc removed from the bucket (push)
    already: bool = False  # the other side was at this generation: nothing moved

    def line(self, verb, where):
        if self.already:
            return f"{where}: generation {self.generation} already there, nothing to {verb}"
        rate = self.bytes / 1e6 / max(self.seconds, 1e-9)
        collected = f", {self.collected} collected" if self.collected else ""
        return (f"{verb}ed generation {self.generation} to {where}: {self.files} files, {self.bytes / 1e6:.1f} MB "
                f"({rate:.1f} MB/s), {self.skipped} already there{collected}")


def same_data(a, b):
    return all(fmt.fingerprint(a, s) == fmt.fingerprint(b, s) for s in fmt.SPLITS)


def local_files(data_dir, manifest):
    """key -> local path of every immutable file the generation names."""
    tokenizer_dir = os.path.join(data_dir, fmt.TOKENIZER)
    names = sorted(os.listdir(tokenizer_dir)) if manifest.tokenizer.trained and os.path.isdir(tokenizer_dir) else []
    return {key: os.path.join(data_dir, *key.split("/")) for key in immutable_files(manifest, names)}


def push(data_dir, url, wait=False, progress=None):
    """Publish the generation in force of `data_dir` at `url`. Returns Moved."""
    bucket = Bucket(url)
    snapshot = fmt.open_snapshot(data_dir)  # leased: a build's gc meanwhile keeps the files we upload
    start = time.perf_counter()
    try:
        manifest = snapshot.manifest
        with BucketLock(bucket, "push", wait) as lock:
            jobs = sorted({o.key.split("/")[1] for o in bucket.list(fmt.TASKS)})
            if jobs:
                raise StorageError(f"{bucket.url()}: a cluster job is in progress there ({', '.join(jobs)}); "
                                   f"`python -m prepare commit {bucket.url()}` publishes it, `prepare abort` "
                                   f"abandons it")
            remote, pointer = read_pointer(bucket)
            if remote is not None and remote.generation >= manifest.generation:
                if remote.generation == manifest.generation and same_data(remote, manifest):
                    return Moved(manifest.generation, already=True)
                raise StorageError(f"{bucket.url()}: generation {remote.generation} is in force there and "
                                   f"{data_dir} is at generation {manifest.generation}; a bucket dataset is published "
                                   f"from one directory (or by `prepare commit` of a cluster job)")
            moved = publish(bucket, data_dir, manifest, lock, pointer, progress)
    finally:
        snapshot.close()
    moved.seconds = time.perf_counter() - start
    return moved


def publish(bucket, data_dir, manifest, lock, pointer, progress=None):
    """Under `lock`: upload what the bucket lacks of the immutable files `manifest` names (those the directory
    does not have must be in the bucket already: a cluster job's token files), its generation, then the pointer
    with If-Match on the ETag of `pointer` as read; then collect. Returns Moved."""
    present = {o.key: o.size for o in bucket.list() if o.key.split("/")[0] in IMMUTABLE}
    files = local_files(data_dir, manifest)
    sizes = {k: os.path.getsize(p) if os.path.exists(p) else present.get(k) for k, p in files.items()}
    lacking = next((k for k, size in sizes.items() if size is None), None)
    if lacking is not None:
        raise StorageError(f"{bucket.url(lacking)}: in neither {data_dir} nor the bucket; rerun the task that made it")
    missing = {k: p for k, p in files.items() if present.get(k) != sizes[k]}
    run_all(lambda key: bucket.upload(key, missing[key]), sorted(missing), progress)
    text = (json.dumps(manifest.to_json(), indent=1) + "\n").encode()
    bucket.write(generation_key(manifest.generation), text)  # a killed push's copy of this number is replaced
    lock.check()
    try:
        bucket.write(POINTER, pointer_bytes(manifest), pointer.etag if pointer else "create")
    except Conflict:
        raise StorageError(f"{bucket.url()}: another publisher changed the generation in force during this "
                           f"push; nothing was published, run it again") from None
    collected, _ = gc.collect(bucket)
    return Moved(manifest.generation, len(missing), sum(sizes[k] for k in missing), len(files) - len(missing),
                 collected=collected)


def pull(url, data_dir, wait=False, progress=None, tokens=True):
    """Make the bucket's generation in force the one of `data_dir` (made if missing). Returns Moved. Without
    `tokens`, only its bookkeeping (manifest, source segments, index parts, tokenizer): what a cluster task
    plans against."""
    from prepare.build import check_output_dir, dataset_lock  # the directory's own writer lock and checks

    bucket = Bucket(url)
    manifest, lease = open_generation(bucket)
    start = time.perf_counter()
    try:
        check_output_dir(data_dir, rebuild=False)
        os.makedirs(os.path.join(data_dir, fmt.TOKENS), exist_ok=True)
        with dataset_lock(data_dir, wait):
            local = fmt.read_manifest(data_dir) if os.path.exists(fmt.manifest_path(data_dir)) else None
            if local is not None and local.generation >= manifest.generation:
                if local.generation == manifest.generation and same_data(local, manifest):
                    return Moved(manifest.generation, already=True)
                raise StorageError(f"{data_dir}: at generation {local.generation}, and {bucket.url()} at "
                                   f"{manifest.generation}; pull into a new directory")
            trained = bucket.list(fmt.TOKENIZER) if manifest.tokenizer.trained else []
            names = [o.key[len(fmt.TOKENIZER) + 1:] for o in trained]
            wanted = immutable_files(manifest, names)
            if not tokens:
                wanted = {k: size for k, size in wanted.items() if not k.startswith(fmt.TOKENS + "/")}
            sha = {f"{fmt.TOKENS}/{f.name}": f.sha256 for f in manifest.files.values()}
            paths = {key: os.path.join(data_dir, *key.split("/")) for key in wanted}
            missing = [k for k in wanted if not os.path.exists(paths[k])
                       or (wanted[k] is not None and os.path.getsize(paths[k]) != wanted[k])]

            def fetch(key):
                os.makedirs(os.path.dirname(paths[key]), exist_ok=True)
                tmp = paths[key] + fmt.TMP_SUFFIX
                download(bucket, key, tmp, wanted[key], sha.get(key))
                os.replace(tmp, paths[key])

            run_all(fetch, missing, progress)
            for folder in {os.path.dirname(p) for p in paths.values()}:
                fmt.fsync_dir(folder)
            fmt.publish(data_dir, manifest)
            if tokens:
                from prepare.maintain import collect_garbage

                collect_garbage(data_dir)
    finally:
        lease.close()
    moved = sum(os.path.getsize(paths[k]) for k in missing)
    return Moved(manifest.generation, len(missing), moved, len(wanted) - len(missing), time.perf_counter() - start)
