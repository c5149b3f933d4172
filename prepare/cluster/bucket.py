"""A cluster job on machines that share only a bucket (`--out s3://...`, docs/storage.md).

A task stages the bookkeeping of the generation in force (manifest, source segments, index parts, tokenizer: no
token file) in a local temporary directory, runs there as on a shared file system, then uploads its claim, its
token files and, last, its result into the bucket's tasks/ folder. `prepare commit URL` takes the bucket's writer
lock, stages the bookkeeping and every result, commits there (each token file checked against the bucket's
listing, never downloaded; no compaction, which would bring every file through one machine), and publishes the
new generation as a push does. `prepare abort URL` removes the job's results and lets gc take its files.
"""

import os
import tempfile

from prepare import format as fmt
from prepare.cluster.commit import commit
from prepare.cluster.job import run_task
from prepare.storage import gc
from prepare.storage.lock import BucketLock
from prepare.storage.push import publish, pull
from prepare.storage.remote import read_pointer
from prepare.storage.store import Bucket
from prepare.storage.transfer import download, run_all


def stage(bucket, folder):
    """The bookkeeping of the bucket's generation in force in `folder` (empty for a prefix with no dataset).
    Returns the pointer's Object (None without one)."""
    _, pointer = read_pointer(bucket)
    if pointer is None:
        os.makedirs(os.path.join(folder, fmt.TOKENS))
    else:
        pull(bucket.url(), folder, tokens=False)
    return pointer


def run_task_in_bucket(sources, url, opts, task, tasks, workers, rebuild=False):
    """Task `task` of `tasks` with its results in the bucket. Returns its summary."""
    bucket = Bucket(url)
    with tempfile.TemporaryDirectory(prefix="gptmill-task-") as scratch:
        data_dir = os.path.join(scratch, "data")
        stage(bucket, data_dir)
        summary = run_task(sources, data_dir, opts, task, tasks, workers, rebuild)
        (job,) = fmt.jobs(data_dir)
        folder = os.path.join(data_dir, fmt.TASKS, job)
        names = sorted(os.listdir(folder))
        claims = [n for n in names if n.endswith(fmt.CLAIM_SUFFIX)]
        for name in claims:  # first: gc keeps a claimed run's token files
            bucket.upload(f"{fmt.TASKS}/{job}/{name}", os.path.join(folder, name))
        tokens = sorted(os.listdir(os.path.join(data_dir, fmt.TOKENS)))
        claimed = {n[: -len(fmt.CLAIM_SUFFIX)] for n in claims}
        mine = [n for n in tokens if fmt.run_of(n) in claimed]
        run_all(lambda n: bucket.upload(f"{fmt.TOKENS}/{n}", fmt.token_path(data_dir, n)), mine)
        results = [n for n in names if n not in claims]
        for name in sorted(results, key=lambda n: n.endswith(".json")):  # the result itself last
            bucket.upload(f"{fmt.TASKS}/{job}/{name}", os.path.join(folder, name))
    return summary


def commit_in_bucket(url, opts, wait=False):
    """`prepare commit URL`: the job based on the bucket's generation in force, published as one generation.
    Returns (manifest in force, tasks committed)."""
    bucket = Bucket(url)
    with BucketLock(bucket, "commit", wait) as lock, tempfile.TemporaryDirectory(prefix="gptmill-commit-") as scratch:
        data_dir = os.path.join(scratch, "data")
        pointer = stage(bucket, data_dir)
        job_files = [o for o in bucket.list(fmt.TASKS)]

        def fetch(found):
            path = os.path.join(data_dir, *found.key.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            download(bucket, found.key, path, found.size)

        run_all(fetch, job_files)
        sizes = {o.key.split("/", 1)[1]: o.size for o in bucket.list(fmt.TOKENS)}
        manifest, results = commit(data_dir, {**opts, "compact_at": None}, token_sizes=sizes)
        publish(bucket, data_dir, manifest, lock, pointer)
        bucket.delete(o.key for o in job_files)
        return manifest, results


def abort_in_bucket(url, wait=False):
    """`prepare abort URL`: every job's results and claims go, then gc. Returns (jobs, objects removed)."""
    bucket = Bucket(url)
    with BucketLock(bucket, "abort", wait):
        job_files = bucket.list(fmt.TASKS)
        bucket.delete(o.key for o in job_files)
        if read_pointer(bucket)[1] is None:  # a first job: no token file is named
            unnamed = bucket.list(fmt.TOKENS)
            bucket.delete(o.key for o in unnamed)
            removed = len(unnamed)
        else:
            removed, _ = gc.collect(bucket)
        return sorted({o.key.split("/")[1] for o in job_files}), removed
