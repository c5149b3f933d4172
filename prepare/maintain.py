"""Keeping a dataset directory lean: retire ranges, compact dead space, merge source segments, collect
garbage. Every function here runs under the dataset's lock (a prepare build, or `prepare compact`/`gc`)."""

import collections
import fcntl
import os

import numpy as np

from prepare import format as fmt

COPY_TOKENS = 1 << 24  # tokens copied at once by compaction: bounded memory


def subtract(extents, retired):
    """`extents` less the token ranges `retired` (Extents of the same files); order is kept."""
    cuts = collections.defaultdict(list)
    for r in retired:
        cuts[r.file].append((r.start, r.end))
    out = []
    for e in extents:
        pieces = [(e.start, e.end)]
        for a, b in sorted(cuts.get(e.file, ())):
            pieces = [(x, y) for s, t in pieces for x, y in ((s, min(t, a)), (max(s, b), t)) if x < y]
        out += [fmt.Extent(e.file, s, t) for s, t in pieces]
    return out


def merge_segments(data_dir, segments, run_id, index):
    """Merge the two newest source segments while the newer holds as many records as the older (a binary
    counter): at most log2(records) segments stay, and a record is rewritten O(log records) times over a
    dataset's life, so writing the bookkeeping costs what changed. Returns (segments, next index)."""
    segments = [list(s) for s in segments]
    while len(segments) >= 2 and segments[-1][1] >= segments[-2][1]:
        records = {}
        for name, _ in segments[-2:]:
            records.update((r["id"], r) for r in fmt.read_segment(data_dir, name))
        if len(segments) == 2:  # into the oldest segment: a deletion has nothing older left to delete
            records = {k: r for k, r in records.items() if not r.get("deleted")}
        name = fmt.segment_name(run_id, index)
        index += 1
        fmt.write_segment(data_dir, name, list(records.values()))
        segments[-2:] = [[name, len(records)]]
    return segments, index


def collect_garbage(data_dir):
    """Remove token files, source segments and old generations that neither the generation in force nor a
    generation leased by a running reader names. Returns (files removed, bytes freed)."""
    current = fmt.read_manifest(data_dir)
    keep_files, keep_segments = set(current.files), {s[0] for s in current.segments}
    leases = os.path.join(data_dir, fmt.LEASES)
    for name in sorted(os.listdir(leases)) if os.path.isdir(leases) else []:
        generation = int(name[1:])
        if generation == current.generation:
            continue
        path = os.path.join(leases, name)
        with open(path, "rb") as lease:
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a reader still uses that generation: keep what it names
                try:
                    keep_files |= set(fmt.read_manifest_file(fmt.generation_path(data_dir, generation)).files)
                except fmt.DatasetError:
                    pass
                continue
            os.remove(path)  # while we hold it, so a reader that opens it after sees it is gone
        with_suppressed_missing(os.remove, fmt.generation_path(data_dir, generation))
    removed, freed = 0, 0
    for folder, keep in ((fmt.TOKENS, keep_files), (fmt.SOURCES, keep_segments)):
        directory = os.path.join(data_dir, folder)
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if name not in keep:
                path = os.path.join(directory, name)
                freed += os.path.getsize(path)
                os.remove(path)
                removed += 1
    return removed, freed


def with_suppressed_missing(function, path):
    try:
        function(path)
    except FileNotFoundError:
        pass


def compact(data_dir, run_id=None):
    """Copy the live extents of every file that holds dead tokens into new files (never re-tokenizing), point
    the inputs' records at the copies, publish, and collect the old files. Returns tokens copied."""
    m = fmt.read_manifest(data_dir)
    sources = fmt.read_sources(data_dir, m)
    live = collections.Counter()
    for split in fmt.SPLITS:
        for e in m.extents[split]:
            live[e.file] += e.tokens
    victims = {name for name, f in m.files.items() if live[name] < f.tokens}
    if not victims:
        return 0
    run_id = run_id or fmt.new_run_id()
    moved = {}  # (file, start) of an old extent -> (new file, new start)
    copied = 0
    for index, split in enumerate(fmt.SPLITS):
        old = [e for e in m.extents[split] if e.file in victims]
        if not old:
            continue
        name = fmt.token_file_name(split, run_id, index)
        tmp = fmt.token_path(data_dir, name) + fmt.TMP_SUFFIX
        at, top = 0, 0
        with open(tmp, "wb") as out:
            for e in old:
                tokens = np.memmap(fmt.token_path(data_dir, e.file), dtype=m.dtype, mode="r")
                for a in range(e.start, e.end, COPY_TOKENS):
                    chunk = np.asarray(tokens[a : min(e.end, a + COPY_TOKENS)])
                    out.write(chunk.data)
                    top = max(top, int(chunk.max()))
                moved[(e.file, e.start)] = (name, at)
                at += e.tokens
            out.flush()
            os.fsync(out.fileno())
        new = fmt.TokenFile(name, split, at, fmt.sha256_file(tmp), top)
        os.replace(tmp, fmt.token_path(data_dir, name))
        m.files[name] = new
        m.extents[split] = [e for e in m.extents[split] if e.file not in victims] + [fmt.Extent(name, 0, at)]
        copied += at
    fmt.fsync_dir(os.path.join(data_dir, fmt.TOKENS))
    m.files = {n: f for n, f in m.files.items() if n not in victims}
    old_extents = sorted(moved)  # to find the extent that holds a range: same file, largest start not above it

    def relocate(r):
        split, file, start, end = r
        if file not in victims:
            return r
        extent_start = max(s for f, s in old_extents if f == file and s <= start)
        name, at = moved[(file, extent_start)]
        return [split, name, at + start - extent_start, at + end - extent_start]

    changed = []
    for record in sources.values():
        if any(r[1] in victims for r in record["ranges"]):
            record = {**record, "ranges": [relocate(r) for r in record["ranges"]]}
            if record.get("tail"):
                record["tail"] = relocate(record["tail"])
            changed.append(record)
    segment = fmt.segment_name(run_id, 0)
    fmt.write_segment(data_dir, segment, changed)
    m.segments, _ = merge_segments(data_dir, m.segments + [[segment, len(changed)]], run_id, 1)
    m.generation += 1
    fmt.publish(data_dir, m)
    collect_garbage(data_dir)
    return copied
