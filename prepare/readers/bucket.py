"""Objects in a bucket (listed by prepare/storage/objects.py): a temporary local copy while the input is read,
then read as the format of its name. Copies are fetched by threads a few inputs ahead of the reading, each
checked against the ETag listed, so a build reads what it planned. (The main process reads objects: obstore's
runtime does not survive the fork that starts the tokenizer workers.)"""

import atexit
import concurrent.futures
import contextlib
import os
import shutil
import tempfile

from prepare.readers.base import SourceError

AHEAD = 8  # objects fetched ahead of the one being read

_copies = {}  # object URL -> Future of its local copy
_pool, _folder = None, None


def copy(source):
    from prepare.storage.objects import fetch_object
    from prepare.storage.store import Conflict, StorageError

    try:
        return fetch_object(source, _folder)
    except Conflict:
        raise SourceError(f"{source['url']}: changed since this build listed it; run the build again") from None
    except StorageError as e:
        raise SourceError(str(e)) from None


def fetch_ahead(entries):
    """Start copying the objects among `entries` (in order) not copied or on their way."""
    global _pool, _folder
    for entry in entries:
        if entry["kind"] == "object" and entry["url"] not in _copies:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(AHEAD)
                _folder = tempfile.mkdtemp(prefix="gptmill-objects-")
                atexit.register(shutil.rmtree, _folder, True)  # copies of a build stopped early
            _copies[entry["url"]] = _pool.submit(copy, entry)


@contextlib.contextmanager
def local_copy(source):
    future = _copies.pop(source["url"], None)
    path = future.result() if future is not None else copy(source)
    try:
        yield path
    finally:
        os.remove(path)
