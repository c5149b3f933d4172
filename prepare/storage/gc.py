"""`prepare gc URL`: garbage collection of a dataset in a bucket, under its writer lock, keeping what the
generation in force, a generation a reader has leased, a generation a run pinned, or a cluster job not yet
committed names (remote.py says how a lease and gc's mark on a generation meet)."""

import json

from prepare import format as fmt
from prepare.storage.lock import BucketLock
from prepare.storage.remote import COLLECTING, generation_key, leases_of, read_generation, read_pins, read_pointer

GENERATION_KEY = f"{fmt.GENERATIONS}/g"


def generation_of(key):
    """The generation of a generations/ or leases/ key, or None."""
    part = key.split("/")[1] if key.count("/") >= 1 else ""
    number = part[1:].removesuffix(".json")
    return int(number) if part.startswith("g") and number.isdigit() else None


def live(bucket, lease, now):
    """Whether a lease object still holds at the store's time `now` (its own ttl past its last renewal)."""
    data, found = bucket.read(lease.key)
    if data is None:
        return False
    try:
        ttl = float(json.loads(data)["ttl"])
    except (ValueError, KeyError, TypeError):
        return False  # not a lease we wrote
    return (now - found.modified).total_seconds() < ttl


def leased(bucket, generation):
    """Mark the generation as being collected, then list its leases (after the mark: a reader that leased it
    before is listed, one after sees the mark) and look for a live one; the mark stays only if none is.
    """
    mark = f"{leases_of(generation)}/{COLLECTING}"
    bucket.write(mark, b"")
    now = bucket.head(mark).modified
    found = bucket.list(leases_of(generation))
    if any(live(bucket, lease, now) for lease in found if not lease.key.endswith("/" + COLLECTING)):
        bucket.delete([mark])
        return True
    return False


def collect(bucket):
    """Remove what no generation in use needs. Call under the writer lock. Returns (objects removed, bytes freed)."""
    current, _ = read_pointer(bucket)
    if current is None:
        return 0, 0
    objects = bucket.list()
    keep_files, keep_segments = set(current.files), {s[0] for s in current.segments}
    pinned = {g for p in read_pins(bucket).values() for g in p.get("generations", [])}
    claimed = {o.key.rsplit("/", 1)[1][: -len(fmt.CLAIM_SUFFIX)] for o in objects
               if o.key.startswith(fmt.TASKS + "/") and o.key.endswith(fmt.CLAIM_SUFFIX)}
    leases = {}
    for o in objects:
        if o.key.startswith(fmt.LEASES + "/") and generation_of(o.key) is not None:
            leases.setdefault(generation_of(o.key), []).append(o)
    generations = {generation_of(o.key) for o in objects if o.key.startswith(GENERATION_KEY)} - {None}
    gone = []
    for generation in sorted((generations | set(leases)) - {current.generation}):
        manifest = read_generation(bucket, generation) if generation in generations else None
        if manifest is not None and generation in pinned:  # a run replays from its pins: their bookkeeping stays
            keep_files |= set(manifest.files)
            keep_segments |= {s[0] for s in manifest.segments}
            continue
        if manifest is not None and leased(bucket, generation):
            keep_files |= set(manifest.files)
            continue
        if manifest is not None:
            bucket.delete([generation_key(generation)])  # first: a reader that leases it now finds it gone
        gone += bucket.list(leases_of(generation))  # its mark and expired leases
    keep = ({f"{fmt.TOKENS}/{n}" for n in keep_files} | {f"{fmt.SOURCES}/{n}" for n in keep_segments}
            | {f"{fmt.INDEX}/{p[0]}" for p in current.index})
    garbage = [o for o in objects if o.key.split("/")[0] in (fmt.TOKENS, fmt.SOURCES, fmt.INDEX) and o.key not in keep
               and not (o.key.startswith(fmt.TOKENS + "/") and fmt.run_of(o.key.split("/")[1]) in claimed)]
    garbage += gone  # the leases (expired) and the mark of each generation collected
    bucket.delete(o.key for o in garbage)
    return len(garbage), sum(o.size for o in garbage)


def gc(url, wait=False):
    """`prepare gc URL`: collect under the writer lock. Returns (objects removed, bytes freed)."""
    from prepare.storage.store import Bucket

    bucket = Bucket(url)
    with BucketLock(bucket, "gc", wait):
        return collect(bucket)
