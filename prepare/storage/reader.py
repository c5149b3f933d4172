"""A generation of a bucket dataset opened for reading: its lease, and its token files through the local cache,
fetched ahead of need by a pool of threads or on demand, with the time readers waited for them counted.

`RemoteSnapshot` has the interface of format.Snapshot (manifest, data_dir, open_tokens, close), so training
reads a bucket dataset exactly as a local one: the same extents, the same windows.
"""

import concurrent.futures
import threading
import time

import numpy as np

from prepare import format as fmt
from prepare.storage.cache import Cache, hold
from prepare.storage.remote import open_generation
from prepare.storage.store import Bucket
from prepare.storage.transfer import CONCURRENCY, download


class CachedFiles:
    """The token files of one generation through a Cache. `ahead(names)` starts fetching them in that order;
    `path(name)` returns a held local copy, waiting for it if need be; `release(keep)` lets the cache evict the
    others."""

    def __init__(self, bucket, manifest, cache):
        self.bucket, self.manifest, self.cache = bucket, manifest, cache
        self.itemsize = np.dtype(manifest.dtype).itemsize
        self.held, self.pending = {}, {}
        self.mutex = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(CONCURRENCY)
        self.waited = 0.0  # seconds callers of path() spent waiting for downloads

    def fetch(self, name):
        f = self.manifest.files[name]
        size = f.tokens * self.itemsize
        key = f"{fmt.TOKENS}/{name}"
        try:
            held = self.cache.get(f.sha256, size,
                                  lambda tmp: download(self.bucket, key, tmp, size, f.sha256, allocated=True))
        except BaseException as e:
            with self.mutex:
                self.pending.pop(name, None)
            if isinstance(e, FileNotFoundError):
                raise fmt.DatasetError(f"{self.bucket.url(key)}: gone from the bucket, though generation "
                                       f"{self.manifest.generation} names it: it was collected (this reader's lease "
                                       f"lapsed?); start the run again") from None
            raise
        with self.mutex:
            self.held[name] = held
            self.pending.pop(name, None)

    def ahead(self, names):
        """Hold those of `names` the cache has; start fetching the others (in that order) not on their way."""
        with self.mutex:
            for name in names:
                if name not in self.held and name not in self.pending:
                    held = hold(self.cache.path(self.manifest.files[name].sha256))
                    if held is not None:
                        self.held[name] = held
                    else:
                        self.pending[name] = self.pool.submit(self.fetch, name)

    def path(self, name):
        """The local path of token file `name`, held; waits (and counts the wait) for it to arrive."""
        while True:
            self.ahead([name])
            with self.mutex:
                held, future = self.held.get(name), self.pending.get(name)
            if held is not None:
                return held.path
            if future is not None:
                start = time.perf_counter()
                try:
                    future.result()
                finally:
                    self.waited += time.perf_counter() - start

    def release(self, keep):
        """Stop holding the files not in `keep` (they stay cached until the cache needs their room)."""
        with self.mutex:
            for name in [n for n in self.held if n not in keep]:
                self.held.pop(name).close()

    def close(self):
        self.pool.shutdown(cancel_futures=True)
        self.release(())


class RemoteSnapshot:
    """A leased generation of a bucket dataset, read through the cache (format.Snapshot's interface)."""

    def __init__(self, url, cache, generation=None, gone=None):
        self.bucket = Bucket(url)
        self.data_dir = self.bucket.url()
        self.manifest, self.lease = open_generation(self.bucket, generation, gone)
        self.files = CachedFiles(self.bucket, self.manifest, cache)

    def open_tokens(self, name):
        return np.memmap(self.files.path(name), dtype=self.manifest.dtype, mode="r")

    def close(self):
        self.files.close()
        self.lease.close()


def open_cache(root, max_bytes=None):
    """The cache at `root`, bounded by `max_bytes` (default: 80% of its disk)."""
    import os

    os.makedirs(root, exist_ok=True)
    if max_bytes is None:
        st = os.statvfs(root)
        max_bytes = int(st.f_blocks * st.f_frsize * 0.8)
    return Cache(root, max_bytes)
