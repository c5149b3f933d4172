"""`prepare push` and `prepare pull`, and what `gc`, `commit`, `abort`, `unpin` and `info` do when their
dataset is a bucket URL (prepare/cli.py hands those over here)."""

import functools
import sys

import click

from prepare import clitools, format as fmt
from prepare.plan import BuildError
from prepare.storage.store import StorageError, is_url

user_errors = clitools.user_errors((StorageError, fmt.DatasetError, BuildError), "interrupted: nothing was published")


def for_urls(handler):
    """A decorator of a command taking DATA_DIR: given a bucket URL instead, `handler` runs (same arguments)."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(**kwargs):
            return (handler if is_url(kwargs["data_dir"]) else command)(**kwargs)

        return wrapper

    return decorate


def progress_bar(total, what):
    """A progress callback over `total` files: a bar on a terminal, nothing under cron."""
    if not total or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="file", desc=what, leave=False)
    return lambda _: bar.update(1), bar.close


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("url")
@click.option("--wait", is_flag=True, help="Wait for another writer of the bucket dataset instead of stopping.")
@user_errors
def push(data_dir, url, wait):
    """Publish the generation in force of DATA_DIR at URL (s3://BUCKET/PREFIX, gs://...): the files the bucket
    lacks, then the generation, then the pointer to it; then collect what no reader needs."""
    from prepare.storage.push import push as push_dataset

    moved = push_dataset(data_dir, url, wait)
    click.echo(moved.line("push", url))


@click.command()
@click.argument("url")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--wait", is_flag=True, help="Wait for another prepare writing DATA_DIR instead of stopping.")
@user_errors
def pull(url, data_dir, wait):
    """Copy the generation in force at URL into DATA_DIR (made if missing): only the files it lacks, each
    checked against its sha256, then published there as a build would."""
    from prepare.storage.push import pull as pull_dataset

    moved = pull_dataset(url, data_dir, wait)
    click.echo(moved.line("pull", data_dir))


def gc(data_dir, wait):
    from prepare.storage.gc import gc as collect

    removed, freed = collect(data_dir, wait)
    click.echo(f"{data_dir}: {removed} objects removed, {freed / 1e6:.1f} MB freed")


def commit(data_dir, wait, compact_at):
    """A bucket dataset's commit never compacts (cluster/bucket.py says why)."""
    from prepare.cluster.bucket import commit_in_bucket

    url = data_dir
    manifest, results = commit_in_bucket(url, {}, wait)
    inputs = sum(r["summary"]["inputs"] for r in results)
    tokens = sum(r["summary"]["tokens"] for r in results)
    click.echo(f"{url}: {len(results)} tasks committed ({inputs} inputs, {tokens:,} tokens tokenized); "
               f"generation {manifest.generation} now in force")


def abort(data_dir, wait):
    from prepare.cluster.bucket import abort_in_bucket

    url = data_dir
    abandoned, removed = abort_in_bucket(url, wait)
    click.echo(f"{url}: {len(abandoned)} jobs abandoned ({', '.join(abandoned) or 'none in progress'}), "
               f"{removed} objects removed")


def unpin(data_dir, name, wait):
    from prepare import format as fmt
    from prepare.storage import remote
    from prepare.storage.gc import collect
    from prepare.storage.lock import BucketLock
    from prepare.storage.store import Bucket

    url = data_dir
    bucket = Bucket(url)
    with BucketLock(bucket, "unpin", wait):
        if name not in remote.read_pins(bucket):
            raise fmt.DatasetError(f"{url}: no pin {name!r}; `prepare info {url}` lists the pins")
        bucket.delete([f"{fmt.PINS}/{name}.json"])
        removed, freed = collect(bucket)
    click.echo(f"{url}: pin {name} released; {removed} objects removed, {freed / 1e6:.1f} MB freed")


def build(sources, url, opts, task_number, tasks, executor, workers, rebuild):
    """`prepare build ... --out URL`: one task of a cluster job into the bucket (docs/storage.md says why a
    whole build writes a directory, which `prepare push` publishes)."""
    from prepare.cluster.bucket import run_task_in_bucket

    if task_number is None or tasks is None or executor != "local":
        clitools.fail(f"--out {url}: a build writes a directory; publish it with `python -m prepare push DIR {url}`, "
                      f"or run a cluster job into the bucket (--tasks N --task I, then `prepare commit {url}`)")
    if task_number >= tasks:
        clitools.fail(f"--task {task_number}: tasks are numbered 0 to {tasks - 1}")
    summary = run_task_in_bucket(sources, url, opts, task_number, tasks, workers, rebuild)
    click.echo(f"{url}: task {task_number} of {tasks} tokenized {summary['inputs']} inputs, {summary['tokens']:,} "
               f"tokens in {summary['seconds']:.1f} s; `python -m prepare commit {url}` once all tasks are done")

