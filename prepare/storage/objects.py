"""Sources in a bucket: what `s3://bucket/crawl/**/*.jsonl.gz` names, each object an input whose identity is
what the store reports (ETag, version where the bucket keeps versions, size), and a local copy of one while it
is tokenized. An object whose identity is unchanged is never downloaded again: the plan compares identities
before anything is read (like a Hub file's blob id)."""

import dataclasses
import os
import re
import tempfile

from prepare.storage.store import Bucket, parse
from prepare.storage.transfer import download

GLOB = re.compile(r"[*?\[]")


def glob_regex(pattern):
    """A regex for a glob over keys: `*` and `?` stay within one path part, `**/` spans any number of parts."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:[^/]*/)*", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def expand_objects(url, file_format):
    """The inputs a bucket URL names: one object, every object below a prefix, or those a glob matches (sorted),
    as identity dicts. `file_format(key)` says how each is read. Raises FileNotFoundError when none is named."""
    location = parse(url)
    glob = GLOB.search(location.prefix)
    if glob is None:
        parent, _, name = location.prefix.rpartition("/")
        bucket = Bucket(dataclasses.replace(location, prefix=parent))
        found = bucket.head(name) if name else None
        objects = [found] if found is not None else [o for o in bucket.list(name) if not o.key.endswith("/")]
    else:
        literal = location.prefix[: location.prefix.rfind("/", 0, glob.start()) + 1]
        bucket = Bucket(dataclasses.replace(location, prefix=literal.strip("/")))
        matches = glob_regex(location.prefix[len(literal):])
        objects = [o for o in bucket.list() if matches.match(o.key)]
    if not objects:
        raise FileNotFoundError(url)
    return [object_input(bucket, o, file_format) for o in objects]


def object_input(bucket, found, file_format):
    url = bucket.url(found.key)
    return {"kind": "object", "id": url, "url": url, "size": found.size, "etag": found.etag, "version": found.version,
            "format": file_format(found.key)}


def same_object(before, entry):
    """Whether an input recorded as `before` is the object listed as `entry` (no byte read)."""
    return all(before.get(k) == entry.get(k) for k in ("size", "etag", "version"))


def fetch_object(entry, folder=None):
    """A local copy of one object input, in a temporary file the caller removes (named like the object, so
    that its suffix says its format); the object must still be the one listed (If-Match on its ETag), else
    store.Conflict."""
    location = parse(entry["url"])
    fd, path = tempfile.mkstemp(prefix="gptmill-", suffix="-" + os.path.basename(location.prefix), dir=folder)
    os.close(fd)
    try:
        bucket = Bucket(dataclasses.replace(location, prefix=""))
        download(bucket, location.prefix, path, entry["size"], etag=entry["etag"])
    except BaseException:
        os.remove(path)
        raise
    return path
