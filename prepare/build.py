"""Build or update a dataset directory, doing work in proportion to what changed, and committing as it goes.

One run, top to bottom (a cluster task, prepare/cluster/, runs the same steps on its part of the inputs):
1. expand the SOURCEs into inputs, take the directory's lock, read the manifest in force and the records;
2. plan, input by input (prepare/plan.py): the documents of changed and deleted inputs are retired from the
   live extents, never rewritten; new, changed and grown inputs are to be tokenized;
3. tokenize them (prepare/pipeline.py) into new token files (prepare/writer.py), less the documents the
   screens drop (prepare/screening.py);
4. every `--commit-every`, at the end of an input, and at the end of the run, the open files are made
   durable and a new generation is published (`Builder.commit`): a kill loses at most the work since then.
A crash at any point leaves the last published generation and every file it names intact.
"""

import contextlib
import dataclasses
import fcntl
import os
import shutil
import sys
import time

from prepare import format as fmt
from prepare.maintain import collect_garbage, compact, merge_segments, subtract
from prepare.pipeline import tokenize_inputs
from prepare.plan import BuildError, current_inputs, open_build, plan, reconsider, shaping
from prepare.screening import Screening, load_screens, open_index, screens
from prepare.tokenizer import load_encoding
from prepare.writer import FileWriter


@contextlib.contextmanager
def dataset_lock(data_dir, wait):
    """Exclusive use of a dataset directory; a second prepare waits (--wait) or stops with a message. A lock
    taken on a lock file that is gone by then (a failed first build removed its directory while we waited)
    is taken again, on the directory made anew."""
    path = os.path.join(data_dir, fmt.LOCK)
    while True:
        with open(path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise BuildError(f"{data_dir}: another prepare is writing this dataset; rerun later or pass "
                                     f"--wait") from None
                print(f"waiting for another prepare to finish with {data_dir}", file=sys.stderr)
                fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                yield
                return
        os.makedirs(os.path.join(data_dir, fmt.TOKENS), exist_ok=True)


def check_no_job(data_dir):
    """Refuse to publish beside a cluster job: its tasks planned against the generation in force, which a new
    generation would make uncommittable."""
    running = fmt.jobs(data_dir)
    if running:
        raise BuildError(f"{data_dir}: a cluster job is in progress ({', '.join(running)}); `python -m prepare commit "
                         f"{data_dir}` publishes it once its tasks are done, `python -m prepare abort {data_dir}` "
                         f"abandons it")


def check_output_dir(data_dir, rebuild):
    """Refuse a directory that holds anything but a gptmill dataset, so we never delete a user's files. A
    dataset of format version 1 is upgraded by --rebuild (its files are removed), else refused."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise BuildError(f"{data_dir}: exists and is not a directory")
    if os.path.isdir(data_dir):
        foreign = [n for n in sorted(os.listdir(data_dir)) if not fmt.is_ours(n)]
        if foreign:
            raise BuildError(f"{data_dir}: holds files that are not a gptmill dataset ({', '.join(foreign[:3])}); "
                             f"choose another --out")
        if os.path.exists(fmt.manifest_path(data_dir)):
            try:
                fmt.read_manifest(data_dir)
            except fmt.DatasetError:
                if not (rebuild and fmt.is_version_1(data_dir)):
                    raise
                for name in os.listdir(data_dir):
                    if fmt.V1_SHARD.match(name) or name == fmt.MANIFEST:
                        os.remove(os.path.join(data_dir, name))
    os.makedirs(os.path.join(data_dir, fmt.TOKENS), exist_ok=True)


class Builder:
    """One run's state between commits: the manifest being extended, records to write, ranges to retire."""

    def __init__(self, data_dir, old, old_sources, tokenizer, opts, rebuild):
        self.data_dir, self.opts = data_dir, opts
        self.sources = {} if rebuild else dict(old_sources)  # every live input's record, as of the next commit
        self.run_id = fmt.new_run_id()
        self.dtype = fmt.dtype_for_vocab(tokenizer.vocab_size)
        if old is None or rebuild:
            self.manifest = fmt.Manifest(
                generation=old.generation if old else 0, tokenizer=tokenizer, dtype=self.dtype,
                options=shaping(opts), files={}, extents={s: [] for s in fmt.SPLITS},
                documents={s: 0 for s in fmt.SPLITS}, segments=[],
            )
        else:
            # The tokenizer's identity as this gptmill records it (a dataset written before has no pattern in it).
            self.manifest = dataclasses.replace(old, tokenizer=tokenizer, extents=dict(old.extents),
                                                files=dict(old.files), documents=dict(old.documents),
                                                segments=list(old.segments))
        # A commit of task results writes no tokens of its own: its writers stay unopened.
        self.writers = {s: FileWriter(data_dir, s, self.run_id, opts.get("shard_tokens", 1), self.dtype)
                        for s in fmt.SPLITS}
        self.records, self.retired, self.deleted = {}, [], []  # what the next commit writes
        self.segment_index, self.commits = 0, 0
        self.screening = None  # what the screens decided (and the index of kept documents), once opened

    def stage(self, old_sources, refreshed, deleted, work, rebuild):
        """What the plan decided before any tokenizing: refreshed records, and the documents that deleted,
        changed and grown inputs retire."""
        for record in refreshed.values():
            self.record(record)
        if rebuild:  # a rebuild starts from no records and no extents
            return
        for source_id in deleted:
            self.delete(source_id, old_sources[source_id])
        for item in work:
            if item.before:  # changed: every document goes; grown: only the last one, which is read again
                self.retire(item.before, [item.before["tail"]] if item.resume_at else None)

    def open_screening(self, work, own_lookup=True, placements=False, in_force=True):
        """Open what the screens need when the build drops documents (after `stage`, so that retired inputs are out
        of the index of kept documents). `in_force`: compare with the dataset's documents too, not only with those
        of this build (a cluster commit's tasks did that already)."""
        if screens(self.opts):
            parts, sources, stamp = (self.manifest.index, self.sources, self.run_id) if in_force else ([], {}, None)
            index = open_index(self.data_dir, parts, sources, stamp, self.opts, own_lookup)
            self.screening = Screening(self.opts, index, [w.entry["id"] for w in work], self.run_id, placements)

    def retire(self, record, ranges=None):
        """Take an input's documents (or the given ranges of them) out of the live extents."""
        self.retire_ranges(record["ranges"] if ranges is None else ranges)
        if ranges is None:
            self.sources.pop(record["id"], None)

    def retire_ranges(self, ranges):
        for split, file, start, end in ranges:
            self.retired.append((split, fmt.Extent(file, start, end)))

    def delete(self, source_id, record=None):
        """An input is gone: its record, and (given its record) its documents."""
        if record is not None:
            self.retire(record)
        self.sources.pop(source_id, None)
        self.deleted.append(source_id)

    def record(self, record):
        """An input finished (or refreshed): its record goes into the next commit."""
        self.records[record["id"]] = self.sources[record["id"]] = record

    def commit(self, extra_files=()):
        """Publish a new generation with every file closed and every input finished since the last one (and
        `extra_files`, written by tasks)."""
        new_files = [f for w in self.writers.values() for f in w.take_closed()] + list(extra_files)
        if not (new_files or self.records or self.retired or self.deleted):
            return
        fmt.fsync_dir(os.path.join(self.data_dir, fmt.TOKENS))
        m = self.manifest
        for f in new_files:
            m.files[f.name] = f
            m.extents[f.split] = m.extents[f.split] + [fmt.Extent(f.name, 0, f.tokens)]
        for split in fmt.SPLITS:
            m.extents[split] = subtract(m.extents[split], [e for s, e in self.retired if s == split])
        live = {e.file for s in fmt.SPLITS for e in m.extents[s]}
        m.files = {name: f for name, f in m.files.items() if name in live}
        m.documents = {s: sum(r["documents"][s] for r in self.sources.values()) for s in fmt.SPLITS}
        records = list(self.records.values()) + [{"id": i, "deleted": True} for i in self.deleted]
        if self.screening is not None:  # the rows kept for the inputs recorded join the index; the totals so far
            m.index = self.screening.index.commit(m.index, set(self.records), self.sources, self.run_id)
            m.removed = self.screening.removed.to_json()
        name = fmt.segment_name(self.run_id, self.segment_index)
        fmt.write_segment(self.data_dir, name, records)
        m.segments, self.segment_index = merge_segments(self.data_dir, m.segments + [[name, len(records)]],
                                                        self.run_id, self.segment_index + 1)
        m.generation += 1
        fmt.publish(self.data_dir, m)
        self.records, self.retired, self.deleted = {}, [], []
        self.commits += 1

    def discard(self):
        for writer in self.writers.values():
            writer.discard()


def build(sources, data_dir, opts, workers, rebuild=False, wait=False):
    """Bring `data_dir` up to date with `sources`. Returns the manifest now in force."""
    start = time.perf_counter()
    # An unknown encoding, a missing SOURCE or task file is reported before anything is created.
    load_encoding(opts["encoding"])
    opts = load_screens(opts)
    not_regular = []
    inputs = current_inputs(sources, opts, not_regular)
    created = not os.path.exists(data_dir)
    check_output_dir(data_dir, rebuild)
    with dataset_lock(data_dir, wait):
        try:
            return build_locked(inputs, data_dir, opts, workers, rebuild, start, len(not_regular))
        except BaseException:
            if created and not os.path.exists(fmt.manifest_path(data_dir)):  # a first build that published nothing
                remove_first_build(data_dir)
            raise


def remove_first_build(data_dir):
    """Remove what a failed first build made, under its lock (a build waiting for the lock then takes it again on
    a directory made anew, see dataset_lock): the dataset's folders and lock, and the directory if that empties
    it. Not while a cluster job's tasks, which take no lock, write there."""
    if fmt.jobs(data_dir):
        return
    for name in (fmt.TOKENS, fmt.SOURCES, fmt.GENERATIONS, fmt.LEASES, fmt.TOKENIZER, fmt.INDEX, fmt.PINS):
        shutil.rmtree(os.path.join(data_dir, name), ignore_errors=True)
    os.remove(os.path.join(data_dir, fmt.LOCK))
    with contextlib.suppress(OSError):  # something else is there: it stays
        os.rmdir(data_dir)


def build_locked(inputs, data_dir, opts, workers, rebuild, start, not_regular):
    """Under the lock: plan `inputs` against the records in force, tokenize what changed, commit."""
    check_no_job(data_dir)
    tokenizer, old, old_sources = open_build(data_dir, opts, rebuild)
    kept, refreshed, work, deleted = plan(old_sources, inputs, rebuild)
    if screens(opts) and not rebuild:
        kept, refreshed, work = reconsider(old_sources, inputs, kept, refreshed, work, deleted)
    if old and not rebuild and not work and not deleted and not refreshed:
        print(f"{data_dir}: up to date, {len(kept)} inputs unchanged, nothing tokenized")
        return old
    builder = Builder(data_dir, old, old_sources, tokenizer, opts, rebuild)
    builder.stage(old_sources, refreshed, deleted, work, rebuild)
    builder.open_screening(work)
    try:
        summary = tokenize_inputs(builder, work, kept, opts, workers)
        builder.commit()
    except BaseException:
        builder.discard()
        raise
    summary.skipped["not_regular_files"] = not_regular
    m = finish_commits(data_dir, builder.manifest, opts)
    print(summary.line(data_dir, m, time.perf_counter() - start))
    return m


def finish_commits(data_dir, manifest, opts):
    """After a build's last commit: collect garbage, compact past the threshold. Returns the manifest in force."""
    collect_garbage(data_dir)
    total = sum(f.tokens for f in manifest.files.values())
    if opts.get("compact_at") is not None and manifest.dead_tokens() > opts["compact_at"] * total:
        compact(data_dir, opts["shard_tokens"])
        return fmt.read_manifest(data_dir)
    return manifest
