"""Generations: publishing one (its snapshot and lease, then manifest.json), and reading one under a lease.
A reader holds a shared flock on the lease of the generation it reads, so that garbage collection keeps every
file that generation names until the reader closes it (or its process ends)."""

import errno
import fcntl
import json
import os
import sys

import numpy as np

from prepare.format.durable import fsync_dir, write_atomic
from prepare.format.layout import (GENERATIONS, LEASES, DatasetError, generation_path, lease_path, manifest_path,
                                   token_path)
from prepare.format.manifest import read_manifest, read_manifest_file


def publish(data_dir, manifest):
    """Make `manifest` the generation in force: its snapshot and lease first, then manifest.json, atomically."""
    text = (json.dumps(manifest.to_json(), indent=1) + "\n").encode()
    os.makedirs(os.path.join(data_dir, GENERATIONS), exist_ok=True)
    write_atomic(generation_path(data_dir, manifest.generation), text)
    make_lease(data_dir, manifest.generation)
    fsync_dir(os.path.join(data_dir, LEASES))
    write_atomic(manifest_path(data_dir), text)


def make_lease(data_dir, generation):
    os.makedirs(os.path.join(data_dir, LEASES), exist_ok=True)
    with open(lease_path(data_dir, generation), "a"):
        pass


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
                snapshot = without_lease(data_dir, manifest)
                if snapshot is not None:
                    return snapshot
            continue  # else collected between our reading the manifest and opening the lease: read again
        if holds(lease, path):
            return Snapshot(data_dir, manifest, lease)
    raise DatasetError(f"{data_dir}: the dataset changed 100 times while being opened")


def without_lease(data_dir, manifest):
    """The lease of the generation in force is missing: make it (then None: open it as usual), or, on read-only
    storage, where no prepare can collect anything, read that generation without one."""
    try:
        make_lease(data_dir, manifest.generation)
    except OSError as e:
        if e.errno == errno.EROFS:
            print(f"warning: {data_dir}: read-only and without a lease in {LEASES}/: no prepare can be running "
                  f"there, so the generation in force is read without one", file=sys.stderr)
            return Snapshot(data_dir, manifest, None)
        raise DatasetError(f"{data_dir}: generation {manifest.generation} has no lease in {LEASES}/ and none can "
                           f"be made ({e.strerror}); a reader needs one, so that garbage collection keeps its "
                           f"files") from None
    return None


def open_generation(data_dir, generation, gone=None):
    """Generation `generation`, leased, while a lease (another process of the job holds one) or a pin keeps it."""
    path = lease_path(data_dir, generation)
    try:
        lease = open(path, "rb")
    except FileNotFoundError:
        lease = None
    exists = os.path.exists(generation_path(data_dir, generation))
    if lease is None and exists and os.statvfs(data_dir).f_flag & os.ST_RDONLY:  # read-only: no prepare collects it
        return Snapshot(data_dir, read_manifest_file(generation_path(data_dir, generation)), None)
    if lease is None or not holds(lease, path) or not exists:
        raise DatasetError(f"{data_dir}: generation {generation}, " + (gone or "which the job's first process opened, "
                           "was collected before this process could lease it; start the job again"))
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
