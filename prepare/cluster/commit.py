"""Ending a cluster job: `prepare commit` takes the dataset's lock, checks that all N results of the generation
in force are there and alike, and publishes them as one new generation; `prepare abort` abandons the job, and
garbage collection then removes the token files its tasks wrote."""

import os
import shutil

import numpy as np

from prepare import format as fmt
from prepare.build import Builder, dataset_lock, finish_commits
from prepare.cluster.duplicates import resolve_duplicates
from prepare.cluster.job import job_dir, read_result, result_path
from prepare.maintain import collect_garbage
from prepare.plan import BuildError


def commit(data_dir, opts, wait=False, token_sizes=None):
    """Publish the results of every task of the job based on the generation in force, as one generation.
    Returns (manifest in force, tasks committed). `token_sizes`: name -> size of the token files where they are
    not in `data_dir` (a bucket's, cluster/bucket.py)."""
    with dataset_lock(data_dir, wait):
        old = fmt.read_manifest(data_dir) if os.path.exists(fmt.manifest_path(data_dir)) else None
        generation = old.generation if old else 0
        tasks = job_in_force(data_dir, generation)
        results = read_results(data_dir, generation, tasks)
        first = results[0]
        builder = Builder(data_dir, old, fmt.read_sources(data_dir, old), fmt.Tokenizer(**first["tokenizer"]),
                          {**opts, **first["options"]}, first["rebuild"])
        builder.open_screening([], in_force=False)  # each task compared its documents with the dataset's already
        files = [f for r in results for f in take_result(data_dir, builder, r, token_sizes)]
        if builder.screening is not None:
            resolve_duplicates(job_dir(data_dir, generation, tasks), builder, results)
        builder.commit(files)
        shutil.rmtree(job_dir(data_dir, generation, tasks))  # the job is published: its files are the manifest's now
        opts = {**opts, "shard_tokens": first["shard_tokens"]}
        manifest = finish_commits(data_dir, builder.manifest, opts) if builder.commits else (old or builder.manifest)
        return manifest, results


def job_in_force(data_dir, generation):
    """The number of tasks of the one job based on `generation`."""
    root = os.path.join(data_dir, fmt.TASKS)
    jobs = sorted(os.listdir(root)) if os.path.isdir(root) else []
    current = [j for j in jobs if j.startswith(f"g{generation:06d}-of-")]
    if not current:
        stale = (f" (results of tasks based on older generations, {', '.join(jobs)}, cannot be committed: rerun "
                 f"those tasks)" if jobs else "")
        raise BuildError(f"{data_dir}: no task results to commit for generation {generation}{stale}")
    if len(current) > 1:
        raise BuildError(f"{data_dir}: results of jobs with different --tasks ({', '.join(current)}); remove all "
                         f"but one")
    return int(current[0].rsplit("-", 1)[1])


def read_results(data_dir, generation, tasks):
    """The results of every task of the job, all of them there and run with the same options and encoding."""
    missing = [i for i in range(tasks) if not os.path.exists(result_path(data_dir, generation, tasks, i))]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise BuildError(f"{data_dir}: {len(missing)} of {tasks} tasks have not finished: {shown}; run them "
                         f"(same SOURCES and options, --tasks {tasks} --task I), then commit again")
    results = [read_result(data_dir, generation, tasks, i) for i in range(tasks)]
    shaped = [(r["tokenizer"], r["options"], r["rebuild"]) for r in results]
    odd = next((r["task"] for r, shape in zip(results, shaped) if shape != shaped[0]), None)
    if odd is not None:
        raise BuildError(f"{data_dir}: task {odd} ran with other options or encoding than task 0; rerun it")
    return results


def take_result(data_dir, builder, result, token_sizes=None):
    """Stage a task's records, deletions, retired ranges and removal totals in `builder`. Returns its token files,
    each checked to be whole (in `data_dir`, or by `token_sizes`)."""
    files = []
    for f in map(lambda f: fmt.TokenFile(**f), result["files"]):
        path = fmt.token_path(data_dir, f.name)
        if token_sizes is not None:
            path, size = f"{fmt.TOKENS}/{f.name} (in the bucket)", token_sizes.get(f.name)
        else:
            size = os.path.getsize(path) if os.path.exists(path) else None
        if size != f.tokens * np.dtype(builder.dtype).itemsize:
            raise BuildError(f"{path}: a token file of task {result['task']} is missing or incomplete; rerun that task")
        files.append(f)
    for record in result["records"]:
        builder.record(record)
    for source_id in result["deleted"]:
        builder.delete(source_id)
    builder.retire_ranges(result["retired"])
    if builder.screening is not None:
        builder.screening.removed.merge(result.get("removed") or {}, result.get("removed_tasks") or {},
                                        result.get("removed_by"))
    return files


def abort(data_dir, wait=False):
    """Abandon every job in progress: its results and claims go, and garbage collection then removes the token
    files its tasks wrote (never one a generation in force or leased names). Returns (jobs, files removed)."""
    with dataset_lock(data_dir, wait):
        abandoned = fmt.jobs(data_dir)
        for job in abandoned:
            shutil.rmtree(os.path.join(data_dir, fmt.TASKS, job))
        if os.path.exists(fmt.manifest_path(data_dir)):
            removed, _ = collect_garbage(data_dir)
        else:
            removed = remove_unnamed(data_dir)
        return abandoned, removed


def remove_unnamed(data_dir):
    """Every token file of a dataset that has no manifest yet (a first job abandoned): none is named."""
    folder = os.path.join(data_dir, fmt.TOKENS)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for name in names:
        os.remove(os.path.join(folder, name))
    return len(names)
