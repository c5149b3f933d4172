"""Moving whole files between a bucket and local disk: a download resumes where a dropped connection cut it,
is checked for size and sha256 as it arrives, and is fetched again whole when it does not match; several
files move at once (object stores serve one stream per request: throughput comes from concurrency)."""

import concurrent.futures
import hashlib
import os

from prepare import format as fmt
from prepare.storage.store import StorageError

ATTEMPTS = 3  # downloads of one file before its bytes are declared corrupt in the bucket, or its store unreachable
CONCURRENCY = 8  # files in flight at once


class CorruptObject(StorageError):
    """The bytes the bucket gave do not match the manifest, again and again."""


def download(bucket, key, path, size=None, sha256=None, allocated=False, etag=None):
    """Download `key` into `path` (written in place; the caller renames it), checked against `size` and `sha256`
    where given. A dropped connection resumes from the bytes received; a mismatch starts over, ATTEMPTS times.
    `allocated`: `path` already holds `size` bytes of reserved space (cache.py), written over from the start.
    `etag`: the object must still have it (store.Conflict otherwise)."""
    for attempt in range(ATTEMPTS):
        digest, received, failures = hashlib.sha256(), 0, 0
        with fmt.naming(path), open(path, "r+b" if allocated else "wb") as out:
            while True:
                try:
                    for chunk in bucket.stream(key, received, etag):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                    break
                except StorageError:
                    failures += 1
                    if failures >= ATTEMPTS:
                        raise
                    out.seek(received)  # resume: the store sends the rest from where the stream broke
            out.truncate(received)
            out.flush()
            os.fsync(out.fileno())
        if (size is None or received == size) and (sha256 is None or digest.hexdigest() == sha256):
            return received
    what = f"{received} bytes, expected {size}" if size is not None and received != size else "its sha256 differs"
    raise CorruptObject(f"{bucket.url(key)}: {what} from the manifest after {ATTEMPTS} downloads; the object is "
                        f"corrupt in the bucket: push the dataset again")


def run_all(function, items, progress=None):
    """`function(item)` for every item, CONCURRENCY at a time; the first failure is raised once the others stop.
    `progress(item)` after each one done."""
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = {pool.submit(function, item): item for item in items}
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
                if progress:
                    progress(futures[future])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
