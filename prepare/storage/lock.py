"""The one writer of a dataset in a bucket (push, commit, gc), as `.lock` is on disk: an object created with
If-None-Match: * (only one creator wins), renewed by its holder with If-Match on its own ETag, and taken over
with If-Match on the stale one's ETag, so that two waiters never both take it. A holder whose process is gone
(same host) is stale at once; another host's after TTL seconds without renewal, by the store's clock.

The lock keeps gc away from files a push has uploaded but not yet named; the pointer's own If-Match (push.py)
is what keeps two publishers from overwriting each other, lock or not.
"""

import json
import os
import secrets
import socket
import threading
import time

from prepare.storage.store import Conflict, StorageError

LOCK = ".lock"
CLOCK = ".clock"
TTL = 60.0  # seconds a holder may go without renewing
POLL = 2.0  # seconds between tries of a waiting writer


def server_now(bucket):
    """The store's clock: the time it gives an object written now (S3 keeps whole seconds)."""
    bucket.write(CLOCK, b"")
    return bucket.head(CLOCK).modified


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BucketLock:
    """`with BucketLock(bucket, "push"):` the dataset's writer lock; `check()` before publishing."""

    def __init__(self, bucket, what, wait=False):
        self.bucket, self.what, self.wait = bucket, what, wait
        self.owner = secrets.token_hex(8)
        self.body = json.dumps({"owner": self.owner, "what": what, "host": socket.gethostname(), "pid": os.getpid(),
                                "ttl": TTL}).encode()
        self.etag, self.lost, self.stop = None, False, threading.Event()
        self.mutex = threading.Lock()  # a renewal's write and its new ETag, against check()
        self.renewer = None

    def __enter__(self):
        while True:
            try:
                self.etag = self.bucket.write(LOCK, self.body, "create")
                break
            except Conflict:
                if self.take_over_stale():
                    break
            if not self.wait:
                raise StorageError(f"{self.bucket.url()}: {self.holder()} is writing this dataset; wait for it with "
                                   f"--wait, or remove {self.bucket.url(LOCK)} if that process is gone")
            time.sleep(POLL)
        self.renewer = threading.Thread(target=self.renew, daemon=True)
        self.renewer.start()
        return self

    def holder(self):
        data, _ = self.bucket.read(LOCK)
        if data is None:
            return "another prepare"
        held = json.loads(data)
        return f"another prepare ({held.get('what')}, pid {held.get('pid')} on {held.get('host')})"

    def take_over_stale(self):
        """Take the lock if its holder is gone; True if we did."""
        data, found = self.bucket.read(LOCK)
        if data is None:
            return False  # released meanwhile: try to create it again
        try:
            held = json.loads(data)
        except ValueError:
            held = {}
        gone = held.get("host") == socket.gethostname() and not process_alive(int(held.get("pid", 0)))
        if not gone and (server_now(self.bucket) - found.modified).total_seconds() <= float(held.get("ttl", TTL)):
            return False
        try:
            self.etag = self.bucket.write(LOCK, self.body, found.etag)
        except Conflict:
            return False  # another waiter took it first
        return True

    def renew(self):
        while not self.stop.wait(TTL / 4):
            try:
                with self.mutex:
                    self.etag = self.bucket.write(LOCK, self.body, self.etag)
            except Conflict:
                self.lost = True
                return
            except StorageError:
                continue  # a network hiccup: the next renewal may pass, and check() tells before any publish

    def check(self):
        """Raise unless we still hold the lock (called right before the pointer is written)."""
        with self.mutex:
            found = self.bucket.head(LOCK)
            held = not self.lost and found is not None and found.etag == self.etag
        if not held:
            raise StorageError(f"{self.bucket.url()}: this writer lost the dataset's lock (paused longer than "
                               f"{TTL:.0f} s?) and published nothing; run it again")

    def __exit__(self, *exc):
        self.stop.set()
        if self.renewer:
            self.renewer.join()
        found = self.bucket.head(LOCK)
        if found is not None and found.etag == self.etag:
            self.bucket.delete([LOCK])
