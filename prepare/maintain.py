"""Keeping a dataset directory lean: retire ranges, compact dead space, merge source segments, collect
garbage. Every function here runs under the dataset's lock (a prepare build, or `prepare compact`/`gc`)."""

import bisect
import collections
import fcntl
import functools
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
    """Remove token files, source segments, index parts and old generations that neither the generation in
    force, nor a generation leased by a running reader or pinned by a run (format.pin), nor a cluster job not yet
    committed or aborted names (a job's tasks claim their run ids before writing; readers need no index part).
    Returns (files removed, bytes freed)."""
    current = fmt.read_manifest(data_dir)
    keep_files, keep_segments = set(current.files), {s[0] for s in current.segments}
    claimed = fmt.claimed_runs(data_dir)
    pinned = fmt.pinned_generations(data_dir)
    leases = os.path.join(data_dir, fmt.LEASES)
    for name in sorted(os.listdir(leases)) if os.path.isdir(leases) else []:
        generation = fmt.lease_generation(name)
        if generation is None or generation == current.generation:  # not a lease (a stray file is left alone)
            continue
        path = os.path.join(leases, name)
        if generation in pinned:  # its lease and manifest stay, and all it names
            kept = fmt.read_manifest_file(fmt.generation_path(data_dir, generation))
            keep_files |= set(kept.files)
            keep_segments |= {s[0] for s in kept.segments}
            continue
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
            if name not in keep and not (folder == fmt.TOKENS and fmt.run_of(name) in claimed):
                path = os.path.join(directory, name)
                freed += os.path.getsize(path)
                os.remove(path)
                removed += 1
    index = os.path.join(data_dir, fmt.INDEX)
    keep_parts = {p[0] for p in current.index}
    for name in os.listdir(index) if os.path.isdir(index) else []:
        if name not in keep_parts:
            path = os.path.join(index, name)
            freed += os.path.getsize(path)
            os.remove(path)
            removed += 1
    return removed, freed


def with_suppressed_missing(function, path):
    try:
        function(path)
    except FileNotFoundError:
        pass


def compact(data_dir, shard_tokens, run_id=None):
    """Copy the live extents of every file that holds dead tokens into new files of at most `shard_tokens`
    tokens (cut between documents; never re-tokenizing), point the inputs' records at the copies, publish, and
    collect the old files. Returns tokens copied."""
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
    moved = collections.defaultdict(list)  # old file -> [(start, end, new file, new start)] of each piece copied
    copied, index = 0, 0
    for split in fmt.SPLITS:
        pieces = [p for e in m.extents[split] if e.file in victims
                  for p in document_pieces(data_dir, m, e, shard_tokens)]
        new_extents = []
        for group in files_of(pieces, shard_tokens):
            name = fmt.token_file_name(split, run_id, index)
            index += 1
            new = m.files[name] = copy_pieces(data_dir, m.dtype, split, group, name, moved)
            new_extents.append(fmt.Extent(name, 0, new.tokens))
            copied += new.tokens
        m.extents[split] = [e for e in m.extents[split] if e.file not in victims] + new_extents
    fmt.fsync_dir(os.path.join(data_dir, fmt.TOKENS))
    m.files = {n: f for n, f in m.files.items() if n not in victims}
    for pieces in moved.values():
        pieces.sort()
    relocate = functools.partial(relocated, moved, {file: [p[0] for p in moved[file]] for file in victims})
    changed = []
    for record in sources.values():
        if any(r[1] in victims for r in record["ranges"]):
            record = {**record, "ranges": [piece for r in record["ranges"] for piece in relocate(r)]}
            if record.get("tail"):
                (record["tail"],) = relocate(record["tail"])  # one document: never cut
            changed.append(record)
    segment = fmt.segment_name(run_id, 0)
    fmt.write_segment(data_dir, segment, changed)
    m.segments, _ = merge_segments(data_dir, m.segments + [[segment, len(changed)]], run_id, 1)
    m.generation += 1
    fmt.publish(data_dir, m)
    collect_garbage(data_dir)
    return copied


def relocated(moved, starts, r):
    """A record's range [split, file, start, end] (whole documents) in the copies compaction made: `moved`, old
    file -> sorted [(start, end, new file, new start)], and `starts`, each copied file's piece starts. One range
    per piece it lies in, O(log pieces)."""
    split, file, start, end = r
    if file not in starts:
        return [r]
    out = []
    at = bisect.bisect_right(starts[file], start) - 1
    while at < len(moved[file]) and moved[file][at][0] < end:
        a, b, name, new_start = moved[file][at]
        piece = [split, name, new_start + max(start, a) - a, new_start + min(end, b) - a]
        if out and out[-1][1] == name and out[-1][3] == piece[2]:
            out[-1][3] = piece[3]
        else:
            out.append(piece)
        at += 1
    return out


def document_pieces(data_dir, manifest, extent, shard_tokens):
    """`extent` cut between documents into pieces of at most `shard_tokens` tokens (a longer document is a
    piece of its own)."""
    if extent.tokens <= shard_tokens:
        return [extent]
    tokens = np.memmap(fmt.token_path(data_dir, extent.file), dtype=manifest.dtype, mode="r")
    eot = manifest.tokenizer.eot_token
    starts = np.concatenate([np.flatnonzero(np.asarray(tokens[a : min(extent.end, a + COPY_TOKENS)]) == eot) + a
                             for a in range(extent.start, extent.end, COPY_TOKENS)] + [[extent.end]])
    pieces, at = [], extent.start
    while at < extent.end:
        if extent.end - at <= shard_tokens:
            end = extent.end
        else:  # at the last document start that fits; if none does, the document at `at` ends the piece alone
            last = int(starts[np.searchsorted(starts, at + shard_tokens, side="right") - 1])
            end = last if last > at else int(starts[np.searchsorted(starts, at, side="right")])
        pieces.append(fmt.Extent(extent.file, at, end))
        at = end
    return pieces


def files_of(pieces, shard_tokens):
    """Consecutive pieces grouped into new files of at most `shard_tokens` tokens (a longer piece alone)."""
    group, tokens = [], 0
    for piece in pieces:
        if group and tokens + piece.tokens > shard_tokens:
            yield group
            group, tokens = [], 0
        group.append(piece)
        tokens += piece.tokens
    if group:
        yield group


def copy_pieces(data_dir, dtype, split, pieces, name, moved):
    """Write `pieces` one after another into the new token file `name` (durably, then renamed into place),
    noting in `moved` where each went. Returns its TokenFile."""
    tmp = fmt.token_path(data_dir, name) + fmt.TMP_SUFFIX
    at, top, opened = 0, 0, {}
    with fmt.naming(tmp), open(tmp, "wb") as out:
        for piece in pieces:
            if piece.file not in opened:  # once per file: pieces can be many and small
                opened[piece.file] = np.memmap(fmt.token_path(data_dir, piece.file), dtype=dtype, mode="r")
            tokens = opened[piece.file]
            for a in range(piece.start, piece.end, COPY_TOKENS):
                chunk = np.asarray(tokens[a : min(piece.end, a + COPY_TOKENS)])
                out.write(chunk.data)
                top = max(top, int(chunk.max()))
            moved[piece.file].append((piece.start, piece.end, name, at))
            at += piece.tokens
        out.flush()
        os.fsync(out.fileno())
    new = fmt.TokenFile(name, split, at, fmt.sha256_file(tmp), top)
    os.replace(tmp, fmt.token_path(data_dir, name))
    return new
