"""The local cache that training reads a bucket dataset through: token files, whole, on local disk, shared by
every process of the machine.

    objects/ab/<sha256>     a token file, named by its checksum (so datasets, generations and buckets share it)
    tmp/<sha256>.<pid>      a download in progress: its space is reserved (fallocate) before the first byte
    locks/<sha256>          flock'd by the one process downloading that file; the others wait for it
    .lock                   flock'd while space is counted and freed

A file arrives under tmp/, checked against the manifest's size and sha256 (transfer.download), and is renamed
into objects/ only then, so a file in objects/ is always whole and right. A reader holds a shared flock on
each file it uses; making room evicts the least recently used files that nobody holds (an exclusive flock
that fails means in use), never one in use, and fails in one line when what is in use leaves no room.
"""

import contextlib
import errno
import fcntl
import os

from prepare import format as fmt
from prepare.storage.lock import process_alive
from prepare.storage.store import StorageError

OBJECTS, TMP, LOCKS, LOCK = "objects", "tmp", "locks", ".lock"


def size_text(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


class CacheFull(StorageError):
    """The cache's bound or its disk leaves no room for a file a step needs."""


class Held:
    """A cached file held open under a shared flock: no process evicts it until closed."""

    def __init__(self, path, handle):
        self.path, self.handle = path, handle

    def close(self):
        if self.handle:
            self.handle.close()
            self.handle = None


@contextlib.contextmanager
def flocked(path, mode=fcntl.LOCK_EX):
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        yield


def hold(path):
    """Held on the file at `path` if it is there (and stays: an evictor unlinks under an exclusive flock, so a
    shared one taken on the file still at `path` keeps it), else None. Its time marks it recently used."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None
    fcntl.flock(handle, fcntl.LOCK_SH)
    try:
        same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        handle.close()
        return None
    os.utime(handle.fileno())
    return Held(path, handle)


class Cache:
    """A cache directory of at most `max_bytes` bytes of token files."""

    def __init__(self, root, max_bytes):
        self.root, self.max_bytes = os.path.abspath(root), int(max_bytes)
        for folder in (OBJECTS, TMP, LOCKS):
            os.makedirs(os.path.join(self.root, folder), exist_ok=True)

    def path(self, sha256):
        return os.path.join(self.root, OBJECTS, sha256[:2], sha256)

    def get(self, sha256, size, fetch):
        """Held on the file of checksum `sha256` and `size` bytes, fetched first if missing: `fetch(tmp_path)`
        writes it into `tmp_path` (where `size` bytes are reserved) and checks it."""
        held = hold(self.path(sha256))
        if held:
            return held
        with flocked(os.path.join(self.root, LOCKS, sha256)):  # one download of a file per machine
            held = hold(self.path(sha256))
            if held:
                return held
            tmp = os.path.join(self.root, TMP, f"{sha256}.{os.getpid()}")
            try:
                with flocked(os.path.join(self.root, LOCK)):
                    self.make_room(size)
                    self.reserve(tmp, size)
                fetch(tmp)
                handle = open(tmp, "rb")
                fcntl.flock(handle, fcntl.LOCK_SH)  # held before it is visible, so no evictor can take it first
                os.makedirs(os.path.dirname(self.path(sha256)), exist_ok=True)
                os.replace(tmp, self.path(sha256))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
                raise
            os.utime(handle.fileno())
            return Held(self.path(sha256), handle)

    def reserve(self, tmp, size):
        """Claim `size` bytes of the disk for a download, or one line saying the disk is full."""
        try:
            with open(tmp, "wb") as f:
                if size:
                    os.posix_fallocate(f.fileno(), 0, size)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                free = size_text(fmt.free_bytes(self.root))
                raise CacheFull(f"{self.root}: the cache's disk is full ({free} free, a token file needs "
                                f"{size_text(size)}); set GPTMILL_CACHE_SIZE below what the disk holds, or "
                                f"GPTMILL_CACHE_DIR on a larger disk") from None
            raise

    def entries(self):
        """(last use, size, path) of every cached file, and the bytes reserved by downloads in progress."""
        entries, reserved = [], 0
        for folder in os.scandir(os.path.join(self.root, OBJECTS)):
            for entry in os.scandir(folder.path):
                st = entry.stat()
                entries.append((st.st_mtime, st.st_size, entry.path))
        for entry in os.scandir(os.path.join(self.root, TMP)):
            pid = entry.name.rsplit(".", 1)[-1]
            if pid.isdigit() and not process_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)  # left by a process that died downloading
                continue
            reserved += entry.stat().st_size
        return sorted(entries), reserved

    def make_room(self, size):
        """Evict least recently used files nobody holds until `size` more bytes fit in the bound. Under .lock."""
        entries, reserved = self.entries()
        used = sum(e[1] for e in entries) + reserved
        for _, entry_size, path in entries:
            if used + size <= self.max_bytes:
                break
            with open(path, "rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use
                os.remove(path)  # while we hold it: a reader that opened it meanwhile sees it gone
            used -= entry_size
        if used + size > self.max_bytes:
            raise CacheFull(f"{self.root}: a token file of {size_text(size)} does not fit in the cache's bound of "
                            f"{size_text(self.max_bytes)} beside the {size_text(used)} that running readers hold; "
                            f"raise GPTMILL_CACHE_SIZE")

