"""Writes that survive a crash, and errors that name their file: what both stages use to write a manifest,
a checkpoint or a pin, and to tell a full disk from other failures."""

import contextlib
import errno
import hashlib
import os

from prepare.format.layout import TMP_SUFFIX


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
