"""Eval task files fetched once from the network and kept in gptmill's cache: $GPTMILL_CACHE, or
~/.cache/gptmill.

A download goes to a temporary name and is renamed once complete, so a kill never leaves half a file that a
later run would trust, and processes fetching the same file at once (ranks of a torchrun job) each end with the
whole file. Offline and not cached, the error names the URL and where to put the file by hand.
"""

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm


class FetchError(Exception):
    pass


def cache_dir():
    return os.environ.get("GPTMILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gptmill")


def cached_file(url, name):
    """The path of `name` in the cache, downloaded from `url` the first time."""
    path = os.path.join(cache_dir(), name)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(name)}.", dir=os.path.dirname(path))
    try:
        with urllib.request.urlopen(url, timeout=60) as response, os.fdopen(handle, "wb") as out:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=os.path.basename(name),
                      disable=not sys.stderr.isatty()) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        reason = getattr(e, "reason", None) or e
        raise FetchError(f"cannot download {url} ({reason}); without a network, download it elsewhere and put it "
                         f"at {path}") from None
    return path


def cached_zip_folder(url, name, folder):
    """The path of `folder` in the cache, unpacked from the zip file at `url` (cached as `name`) the first time."""
    path = os.path.join(cache_dir(), folder)
    if os.path.isdir(path):
        return path
    archive = cached_file(url, name)
    scratch = tempfile.mkdtemp(prefix=f".{folder}.", dir=cache_dir())
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(scratch)
        os.rename(os.path.join(scratch, folder), path)
    except zipfile.BadZipFile:
        raise FetchError(f"{archive}: not a zip file; delete it to download it again from {url}") from None
    except FileNotFoundError:
        raise FetchError(f"{archive}: has no folder {folder}/; is it the file from {url}?") from None
    except OSError:  # another process unpacked it first
        if not os.path.isdir(path):
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path
