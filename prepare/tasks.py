"""One corpus on many machines: the work split into tasks that any scheduler can run, and one commit.

Task i of N takes the inputs whose identity hashes to i (a capped Hub dataset's files go together, so that
the files chosen under --max-tokens are those a single process would choose), plans them against the
generation in force, tokenizes them into token files of its own (named by a run id, so tasks never collide)
and finally writes its result, atomically: `tasks/g<generation>-of-<N>/task-<i>.json`, holding the records,
the deletions, the retired ranges and the token files of its part. A task killed before that leaves only
files no manifest names. `commit` takes the dataset's lock, checks that all N results of the generation in
force are there, and publishes them as one new generation. Ray is a ready executor of the same tasks.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time

import numpy as np

from prepare import dedup, format as fmt
from prepare.build import Builder, check_output_dir, dataset_lock, finish_commits, load_screens, screens
from prepare.pipeline import ranges_without, tokenize_inputs
from prepare.plan import BuildError, current_inputs, open_build, plan, reconsider
from prepare.maintain import collect_garbage
from prepare.readers.base import SourceError

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
        raise SourceError(f"{e} (on {socket.gethostname()}: with several machines the inputs must be on shared storage)") from None
    mine = {k: r for k, r in old_sources.items() if task_of(r, tasks, opts) == task}
    kept, refreshed, work, deleted = plan(mine, inputs, rebuild)
    if screens(opts) and not rebuild:
        kept, refreshed, work = reconsider(old_sources, inputs, kept, refreshed, work, deleted)
    builder = Builder(data_dir, old, old_sources, tokenizer, {**opts, "commit_every": float("inf")}, rebuild)
    builder.stage(old_sources, refreshed, deleted, work, rebuild)
    # A task drops the documents the dataset already holds (as a single build would); duplicates between
    # tasks, and within one, are the commit's to resolve, in the single build's order.
    builder.screening(own_lookup=False)
    if opts.get("dedup"):
        builder.placements = []
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
    result = {
        "generation": generation, "tasks": tasks, "task": task, "rebuild": rebuild,
        "tokenizer": dataclasses.asdict(tokenizer), "options": builder.manifest.options,
        "files": [dataclasses.asdict(f) for f in files], "records": list(builder.records.values()),
        "deleted": builder.deleted, "retired": [[split, e.file, e.start, e.end] for split, e in builder.retired],
        "shard_tokens": opts["shard_tokens"], "removed": builder.removed_now, "removed_tasks": builder.removed_tasks,
        "placements": write_placements(data_dir, generation, tasks, task, builder.placements),
        "summary": {"inputs": summary.inputs, "documents": summary.documents, "tokens": summary.tokens,
                    "text_bytes": summary.text_bytes, "seconds": time.perf_counter() - start},
    }
    path = result_path(data_dir, generation, tasks, task)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fmt.write_atomic(path, json.dumps(result).encode())
    return result["summary"]


def write_placements(data_dir, generation, tasks, task, placements):
    """A task's documents written, for the commit: their features in task-<i>.dedup.npz, the rest returned
    (for the result): [input id, position, split, file, start, end, bytes] each. None without --dedup."""
    if placements is None:
        return None
    path = result_path(data_dir, generation, tasks, task)[: -len(".json")] + ".dedup.npz"
    exact = np.stack([p[6] for p in placements]) if placements else np.zeros((0, 2), np.uint64)
    signatures = np.stack([p[7] for p in placements]) if placements else np.zeros((0, dedup.PERMUTATIONS), np.uint32)
    with open(path + fmt.TMP_SUFFIX, "wb") as f:
        np.savez(f, exact=exact, signatures=signatures)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + fmt.TMP_SUFFIX, path)
    return {"file": os.path.basename(path), "documents": [[*p[:6], p[8]] for p in placements]}


def resolve_duplicates(data_dir, builder, results):
    """Drop, as one build would, the documents of the tasks that repeat one kept earlier in input order (of
    another task or the same one): their ranges are retired and their inputs' records say why. The kept ones
    become the commit's index part."""
    docs, exact, signatures = [], [], []
    for r in results:
        placements = r.get("placements")
        if not placements:
            continue
        with np.load(os.path.join(job_dir(data_dir, r["generation"], r["tasks"]), placements["file"])) as arrays:
            exact.append(arrays["exact"])
            signatures.append(arrays["signatures"])
        docs += placements["documents"]
    if not docs:
        builder.index = dedup.Index(data_dir, [], {}, None, builder.opts.get("dedup") == "near")
        return
    order = sorted(range(len(docs)), key=lambda k: (docs[k][0], docs[k][1]))
    docs = [docs[k] for k in order]
    exact, signatures = np.concatenate(exact)[order], np.concatenate(signatures)[order]
    sizes = np.array([d[6] for d in docs], np.int64)
    features = dedup.Features(exact, signatures, np.zeros(len(docs), np.int64), sizes)
    index = builder.index = dedup.Index(data_dir, [], {}, None, builder.opts.get("dedup") == "near")
    stamps = [dedup.stamp_of(builder.sources[d[0]]) for d in docs]
    for doc, found in zip(docs, index.decide(features, [d[0] for d in docs], [d[1] for d in docs], stamps)):
        if found is None:
            continue
        source_id, position, split, file, start, end, size = doc
        kind, twin, jaccard = found
        record = builder.sources[source_id]
        record = {**record, "documents": {**record["documents"], split: record["documents"][split] - 1},
                  "tokens": {**record["tokens"], split: record["tokens"][split] - (end - start)},
                  "ranges": ranges_without(record["ranges"], [split, file, start, end]),
                  "dedup": {**record["dedup"], "removed": sorted(record["dedup"]["removed"] + [
                      {"at": position, "kind": kind, "split": split, "tokens": end - start, "bytes": size, "twin": twin,
                       "jaccard": round(jaccard, 4)}], key=lambda d: d["at"])}}
        builder.record(record)
        builder.retired.append((split, fmt.Extent(file, start, end)))
        totals = builder.removed_now.setdefault(kind, {"documents": 0, "tokens": 0, "bytes": 0})
        totals["documents"] += 1
        totals["tokens"] += end - start
        totals["bytes"] += size


def commit(data_dir, opts, wait=False):
    """Publish the results of every task of the job based on the generation in force, as one generation.
    Returns (manifest in force, tasks committed)."""
    with dataset_lock(data_dir, wait):
        old = fmt.read_manifest(data_dir) if os.path.exists(fmt.manifest_path(data_dir)) else None
        generation = old.generation if old else 0
        root = os.path.join(data_dir, fmt.TASKS)
        jobs = sorted(os.listdir(root)) if os.path.isdir(root) else []
        current = [j for j in jobs if j.startswith(f"g{generation:06d}-of-")]
        if not current:
            stale = f" (results of tasks based on older generations, {', '.join(jobs)}, cannot be committed: rerun those tasks)" if jobs else ""
            raise BuildError(f"{data_dir}: no task results to commit for generation {generation}{stale}")
        if len(current) > 1:
            raise BuildError(f"{data_dir}: results of jobs with different --tasks ({', '.join(current)}); remove all but one")
        tasks = int(current[0].rsplit("-", 1)[1])
        missing = [i for i in range(tasks) if not os.path.exists(result_path(data_dir, generation, tasks, i))]
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            raise BuildError(f"{data_dir}: {len(missing)} of {tasks} tasks have not finished: {shown}; run them "
                             f"(same SOURCES and options, --tasks {tasks} --task I), then commit again")
        results = [read_result(data_dir, generation, tasks, i) for i in range(tasks)]
        first = results[0]
        odd = next((r["task"] for r in results if (r["tokenizer"], r["options"], r["rebuild"]) != (first["tokenizer"], first["options"], first["rebuild"])), None)
        if odd is not None:
            raise BuildError(f"{data_dir}: task {odd} ran with other options or encoding than task 0; rerun it")
        rebuild = first["rebuild"]
        old_sources = fmt.read_sources(data_dir, old)
        builder = Builder(data_dir, old, old_sources, fmt.Tokenizer(**first["tokenizer"]), {**opts, **first["options"]}, rebuild)
        files = []
        for r in results:
            for f in map(lambda f: fmt.TokenFile(**f), r["files"]):
                path = fmt.token_path(data_dir, f.name)
                if not os.path.exists(path) or os.path.getsize(path) != f.tokens * np.dtype(builder.dtype).itemsize:
                    raise BuildError(f"{path}: a token file of task {r['task']} is missing or incomplete; rerun that task")
                files.append(f)
            for record in r["records"]:
                builder.record(record)
            for source_id in r["deleted"]:
                builder.sources.pop(source_id, None)
                builder.deleted.append(source_id)
            builder.retired += [(split, fmt.Extent(file, a, b)) for split, file, a, b in r["retired"]]
            for kind, totals in (r.get("removed") or {}).items():
                mine = builder.removed_now.setdefault(kind, {"documents": 0, "tokens": 0, "bytes": 0})
                for key, value in totals.items():
                    mine[key] += value
            builder.removed_tasks.update(r.get("removed_tasks") or {})
        if screens(builder.opts):
            resolve_duplicates(data_dir, builder, results)
        builder.commit(files)
        shutil.rmtree(os.path.join(root, current[0]))  # the job is published: its files are the manifest's now
        opts = {**opts, "shard_tokens": first["shard_tokens"]}
        manifest = finish_commits(data_dir, builder.manifest, opts) if builder.commits else (old or builder.manifest)
        return manifest, results


RESULT_KEYS = {"generation", "tasks", "task", "rebuild", "tokenizer", "options", "files", "records", "deleted", "retired",
               "shard_tokens", "summary"}


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


def abort(data_dir, wait=False):
    """Abandon every job in progress: its results and claims go, and garbage collection then removes the token
    files its tasks wrote (never one a generation in force or leased names). Returns (jobs, files removed)."""
    with dataset_lock(data_dir, wait):
        abandoned = fmt.jobs(data_dir)
        for job in abandoned:
            shutil.rmtree(os.path.join(data_dir, fmt.TASKS, job))
        removed, _ = collect_garbage(data_dir) if os.path.exists(fmt.manifest_path(data_dir)) else (remove_unnamed(data_dir), 0)
        return abandoned, removed


def remove_unnamed(data_dir):
    """Every token file of a dataset that has no manifest yet (a first job abandoned): none is named."""
    folder = os.path.join(data_dir, fmt.TOKENS)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for name in names:
        os.remove(os.path.join(folder, name))
    return len(names)


def build_on_ray(sources, data_dir, opts, tasks, address=None, rebuild=False, retries=3):
    """Run the `tasks` tasks on Ray (a local instance, or the cluster at `address` / RAY_ADDRESS), retrying
    tasks whose worker or machine died, then commit. Returns (manifest in force, summaries)."""
    try:
        import ray
    except ImportError:
        raise BuildError("--executor ray needs Ray: pip install 'gptmill[ray]'") from None
    from tqdm import tqdm

    check_output_dir(data_dir, rebuild)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level=logging.ERROR)
    remote = ray.remote(num_cpus=1, max_retries=retries)(run_task)
    pending = {remote.remote(sources, os.path.abspath(data_dir), opts, i, tasks, 1, rebuild): i for i in range(tasks)}
    summaries, start = [], time.perf_counter()
    bar = tqdm(total=tasks, unit="task", desc="tasks", disable=not sys.stderr.isatty())
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(done[0])
        try:
            summaries.append(ray.get(done[0]))
        except ray.exceptions.RayTaskError as e:  # a user error (bad input, missing path): the task's own message
            for ref in pending:
                ray.cancel(ref)
            cause = e.cause if getattr(e, "cause", None) is not None else e
            raise BuildError(f"task {task}: {cause}") from None
        tokens, text = sum(s["tokens"] for s in summaries), sum(s["text_bytes"] for s in summaries)
        seconds = time.perf_counter() - start
        bar.set_postfix_str(f"{tokens:,} tokens, {text / 1e6 / seconds:.2f} MB/s")
        bar.update(1)
    bar.close()
    manifest, _ = commit(data_dir, opts)
    return manifest, summaries
