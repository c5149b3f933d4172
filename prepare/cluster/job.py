"""A cluster job's tasks. Task i of N takes the inputs whose identity hashes to i (a capped Hub dataset's files go
together, so that the files chosen under --max-tokens are those a single process would choose), plans them against
the generation in force, tokenizes them into token files of its own (named by a run id, so tasks never collide)
and finally writes its result, atomically: `tasks/g<generation>-of-<N>/task-<i>.json`, holding the records, the
deletions, the retired ranges and the token files of its part. A task killed before that leaves only files no
manifest names."""

import dataclasses
import hashlib
import json
import os
import socket
import time

from prepare import format as fmt
from prepare.build import Builder
from prepare.cluster.duplicates import write_placements
from prepare.pipeline import tokenize_inputs
from prepare.plan import BuildError, current_inputs, open_build, plan, reconsider
from prepare.screening import load_screens, screens
from prepare.readers.base import SourceError

RESULT_KEYS = {"generation", "tasks", "task", "rebuild", "tokenizer", "options", "files", "records", "deleted",
               "retired", "shard_tokens", "summary"}


def task_of(entry, tasks, opts):
    """The task an input belongs to: a stable function of its identity."""
    capped = opts["max_tokens"] and entry["kind"] == "hub_file"
    key = entry["group"] if capped else entry["id"]
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % tasks


def job_dir(data_dir, generation, tasks):
    return os.path.join(data_dir, fmt.TASKS, f"g{generation:06d}-of-{tasks}")


def result_path(data_dir, generation, tasks, task):
    return os.path.join(job_dir(data_dir, generation, tasks), f"task-{task:05d}.json")


def run_task(sources, data_dir, opts, task, tasks, workers, rebuild=False):
    """Do task `task` of `tasks` and write its result. Returns its summary (inputs, documents, tokens, bytes)."""
    start = time.perf_counter()
    if not os.path.isdir(data_dir):
        raise BuildError(f"{socket.gethostname()}: cannot see {data_dir}; every task needs --out (and the inputs) on "
                         f"storage all machines share (NFS, Lustre, a mounted bucket)")
    tokenizer, old, old_sources = open_build(data_dir, opts, rebuild)
    opts = load_screens(opts)
    generation = old.generation if old else 0
    try:
        inputs = {k: e for k, e in current_inputs(sources, opts).items() if task_of(e, tasks, opts) == task}
    except SourceError as e:
        raise SourceError(f"{e} (on {socket.gethostname()}: with several machines the inputs must be on shared "
                          f"storage)") from None
    mine = {k: r for k, r in old_sources.items() if task_of(r, tasks, opts) == task}
    kept, refreshed, work, deleted = plan(mine, inputs, rebuild)
    if screens(opts) and not rebuild:
        kept, refreshed, work = reconsider(old_sources, inputs, kept, refreshed, work, deleted)
    builder = Builder(data_dir, old, old_sources, tokenizer, {**opts, "commit_every": float("inf")}, rebuild)
    builder.stage(old_sources, refreshed, deleted, work, rebuild)
    # A task drops the documents the dataset already holds (as a single build would); duplicates between
    # tasks, and within one, are the commit's to resolve, in the single build's order.
    builder.open_screening(work, own_lookup=False, placements=bool(opts.get("dedup")))
    # The claim comes before any token file: garbage collection keeps a claimed run's files (a temporary one
    # being written too) until the job is committed or aborted, and builds wait for either.
    job = os.path.basename(job_dir(data_dir, generation, tasks))
    os.makedirs(job_dir(data_dir, generation, tasks), exist_ok=True)
    fmt.write_atomic(fmt.claim_path(data_dir, job, builder.run_id), f"task {task} on {socket.gethostname()}\n".encode())
    try:
        # The val fallback of a corpus with no val document needs the whole corpus: it is the single build's.
        summary = tokenize_inputs(builder, work, kept, opts, workers, val_fallback=False)
        files = [f for w in builder.writers.values() for f in w.take_closed()]
    except BaseException:
        builder.discard()
        raise
    result = task_result(builder, generation, tasks, task, rebuild, files)
    placements = builder.screening.placements() if builder.screening is not None else None
    result["placements"] = write_placements(result_path(data_dir, generation, tasks, task), placements)
    result["summary"] = {"inputs": summary.inputs, "documents": summary.documents, "tokens": summary.tokens,
                         "text_bytes": summary.text_bytes, "seconds": time.perf_counter() - start}
    path = result_path(data_dir, generation, tasks, task)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fmt.write_atomic(path, json.dumps(result).encode())
    return result["summary"]


def task_result(builder, generation, tasks, task, rebuild, files):
    """What a task hands the commit: what its builder would have committed."""
    removed = builder.screening.removed if builder.screening is not None else None
    return {
        "generation": generation, "tasks": tasks, "task": task, "rebuild": rebuild,
        "tokenizer": dataclasses.asdict(builder.manifest.tokenizer), "options": builder.manifest.options,
        "files": [dataclasses.asdict(f) for f in files], "records": list(builder.records.values()),
        "deleted": builder.deleted, "retired": [[split, e.file, e.start, e.end] for split, e in builder.retired],
        "shard_tokens": builder.opts["shard_tokens"], "removed": removed.kinds if removed else {},
        "removed_tasks": removed.tasks if removed else {}, "removed_by": removed.to_json() if removed else {},
    }


def read_result(data_dir, generation, tasks, task):
    path = result_path(data_dir, generation, tasks, task)
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise BuildError(f"{path}: unreadable task result ({e}); rerun task {task}") from None
    if not isinstance(result, dict) or RESULT_KEYS - set(result) or result["task"] != task:
        raise BuildError(f"{path}: not the result of task {task} of this gptmill; rerun task {task}")
    for f in result["files"]:
        fmt.plain_name(f.get("name") if isinstance(f, dict) else f, path, "token file")
    return result
