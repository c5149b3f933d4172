"""`python -m prepare`: build, inspect and verify token datasets. Each command declares its options and calls
the module of its idea."""

import os

import click

from prepare import clitools, cluster, format as fmt
from prepare.filter_options import filter_flags, filter_options
from prepare.build import build as build_dataset, check_output_dir
from prepare.dedup import METHODS
from prepare.plan import BuildError
from prepare.readers.base import SourceError
from prepare.sources import PRESETS, default_out
from prepare.storage import commands as bucket
from prepare.storage.store import StorageError, is_url
from prepare.tokenizer import CHOICES, TokenizerError

fail = clitools.fail

USER_ERRORS = (SourceError, BuildError, fmt.DatasetError, TokenizerError, StorageError)
user_errors = clitools.user_errors(USER_ERRORS, "interrupted: the dataset is as it was before this run")


def decontamination_suites(ctx, param, value):
    """--decontaminate hellaswag,core -> ["core", "hellaswag"] (sorted: the recorded option does not depend on
    the order given)."""
    if value is None:
        return None
    from prepare.evals import SUITES, TaskError, parse_suites

    try:
        return sorted(parse_suites(value))
    except TaskError:
        raise click.BadParameter(f"{value!r}: choose among {', '.join(SUITES)} (comma-separated)") from None


# The options of reading SOURCES, which `build` and `tokenizer` share.
TEXT_FIELD = click.option("--text-field", default="text", show_default=True,
                          help="Field holding the text in .jsonl, .parquet and Hugging Face records.")
SPLIT = click.option("--split", default="train", show_default=True, help="Split to read from Hugging Face datasets.")
DOC_SEP = click.option("--doc-sep", default=None, help="Split text files into documents on lines equal to this string, "
                       "or on blank lines with 'blank'. [default: one document per file]")
SKIP_BAD_RECORDS = click.option("--skip-bad-records", is_flag=True, help="Count and skip malformed JSONL lines and "
                                "records without the text field instead of failing.")
STRICT = click.option("--strict", is_flag=True, help="Fail on invalid UTF-8 instead of replacing it.")
WAIT = click.option("--wait", is_flag=True, help="Wait for a prepare writing the dataset instead of stopping.")
ENCODER = click.option("--encoder", default="auto", show_default=True, type=click.Choice(CHOICES),
                       help="What turns text into ids: auto is gigatoken where it gives tiktoken's ids (checked on a "
                       "canary set first), else tiktoken; tiktoken asks for the reference. The ids are the same.")


@click.group()
def cli():
    """Turn corpora into token shards that `python -m train` reads."""


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False),
              help="Dataset directory [default: data/<name of the first SOURCE>].")
@click.option("--encoding", default="gpt2", show_default=True,
              help="tiktoken encoding name, or a tokenizer directory made by `prepare tokenizer`.")
@TEXT_FIELD
@SPLIT
@DOC_SEP
@click.option("--val-fraction", default=0.01, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of documents that go to val, chosen by a hash of each document.")
@click.option("--shard-tokens", default=100_000_000, show_default=True, type=click.IntRange(1),
              help="Tokens per shard at most (a longer document gets a shard of its own).")
@click.option("--max-tokens", default=None, type=click.IntRange(1),
              help="Take at most this many tokens from each Hugging Face dataset (a Hub dataset: whole data files, "
                   "in order, until the cap is reached).")
@click.option("--commit-every", default="5m", show_default=True, callback=clitools.parse_duration,
              help="Work between commits, e.g. 90s, 5m or seconds: a killed run loses at most this much (inputs are "
                   "committed whole).")
@click.option("--compact-at", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Compact when retired tokens pass this share of the token files (1 never).")
@click.option("--workers", default=os.cpu_count(), show_default=True, type=click.IntRange(1),
              help="Tokenizer workers: threads sharing gigatoken, processes with tiktoken.")
@ENCODER
@SKIP_BAD_RECORDS
@STRICT
@click.option("--dedup", type=click.Choice(list(METHODS)),
              help="Drop a document whose text equals (exact: lowercased, whitespace removed) or nearly equals (near: "
                   "MinHash LSH over word 5-grams, estimated Jaccard >= 0.8; implies exact) one already kept; "
                   "recorded, a change needs --rebuild. See docs/dedup.md.")
@click.option("--decontaminate", callback=decontamination_suites,
              help="Drop documents that share a 13-gram of words with an item of these tasks (hellaswag, core, "
                   "comma-separated), read from `train score`'s cache; recorded, a change needs --rebuild.")
@filter_flags
@click.option("--rebuild", is_flag=True, help="Tokenize every input again, ignoring what is already prepared.")
@click.option("--wait", is_flag=True, help="Wait for another prepare writing the same dataset instead of stopping.")
@click.option("--tasks", type=click.IntRange(1),
              help="Split the work into this many tasks (for several machines); with --task, run one of them.")
@click.option("--task", type=click.IntRange(0),
              help="Run only task TASK of --tasks and leave its result for `prepare commit`.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: run the --tasks tasks on Ray (with retries) and commit.")
@click.option("--ray-address", help="Ray cluster to use [default: RAY_ADDRESS, else a local Ray].")
@user_errors
def build(sources, out, workers, rebuild, wait, tasks, task, executor, ray_address, **opts):
    """Tokenize SOURCES into a dataset directory, doing only what changed since the last run.

    A SOURCE is a file, a directory, a quoted glob ('corpus/**/*.txt'), a preset
    (stdlib, tinystories, fineweb-edu) or hf:NAME[:CONFIG] (a Hub dataset or a save_to_disk directory).
    """
    filter_options(opts)
    for source in sources:
        if source in PRESETS and not os.path.exists(source) and opts["max_tokens"] is None:
            opts["max_tokens"] = PRESETS[source]["options"].get("max_tokens")
    data_dir = out or default_out(sources[0])
    if is_url(data_dir):
        return bucket.build(list(sources), data_dir, opts, task, tasks, executor, workers, rebuild)
    if task is not None or executor == "ray":
        if tasks is None:
            fail("give --tasks N with --task or --executor ray")
        if executor == "ray":
            if task is not None:
                fail("--executor ray runs every task; drop --task")
            manifest, summaries = cluster.build_on_ray(list(sources), data_dir, opts, tasks, ray_address, rebuild)
            tokens = sum(s["tokens"] for s in summaries)
            click.echo(f"{data_dir}: {tasks} tasks on Ray tokenized {sum(s['inputs'] for s in summaries)} inputs, "
                       f"{tokens:,} tokens; generation {manifest.generation} now in force")
            return
        if task >= tasks:
            fail(f"--task {task}: tasks are numbered 0 to {tasks - 1}")
        check_output_dir(data_dir, rebuild)
        summary = cluster.run_task(list(sources), data_dir, opts, task, tasks, workers, rebuild)
        click.echo(f"{data_dir}: task {task} of {tasks} tokenized {summary['inputs']} inputs, {summary['tokens']:,} "
                   f"tokens in {summary['seconds']:.1f} s; `python -m prepare commit {data_dir}` once all tasks are "
                   f"done")
        return
    if tasks is not None:
        fail("--tasks needs --task I (one task, for an array scheduler) or --executor ray")
    build_dataset(list(sources), data_dir, opts, workers, rebuild=rebuild, wait=wait)


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Tokenizer directory to write, e.g. tokenizers/NAME (its name is the folder's).")
@click.option("--vocab-size", required=True, type=click.IntRange(257, 1 << 20),
              help="Ids in all: 256 bytes, the merges, and end-of-text (up to 65,536 keeps uint16 token files).")
@click.option("--pattern", default="gpt4", show_default=True, type=click.Choice(["gpt4", "gpt2"]),
              help="How text is split before merging: GPT-4's (cl100k) pattern or GPT-2's.")
@click.option("--max-chars", default=300_000_000, show_default=True, type=click.IntRange(1),
              help="Characters to learn from at most, taken from every input in proportion to its size.")
@TEXT_FIELD
@SPLIT
@DOC_SEP
@SKIP_BAD_RECORDS
@STRICT
@user_errors
def tokenizer(sources, out, vocab_size, pattern, max_chars, **opts):
    """Train a byte-level BPE tokenizer on SOURCES (the kinds `build` reads) and write it to --out, for
    `build --encoding DIR`. The same inputs and options give the same tokenizer, byte for byte."""
    from prepare.tokenizer import training

    encoding, chars, documents, seconds = training.train(list(sources), out, vocab_size, pattern, max_chars,
                                                         {**opts, "max_tokens": None})
    short = f" (the text held only {encoding.n_vocab - 1} distinct merges and bytes)" \
        if encoding.n_vocab < vocab_size else ""
    click.echo(f"{out}: {encoding.n_vocab:,} ids{short}, learned from {documents:,} documents, {chars:,} characters "
               f"in {seconds:.1f} s; end-of-text is {encoding.n_vocab - 1}; use it with "
               f"`prepare build --encoding {out}`")


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--encoding", "encodings", multiple=True, help="Tokenizer to compare (repeatable) [default: gpt2, "
              "cl100k_base, o200k_base where they load offline].")
@click.option("--max-documents", default=10_000, show_default=True, type=click.IntRange(1),
              help="Val documents to encode at most.")
@ENCODER
@user_errors
def compare(data_dir, encodings, max_documents, encoder):
    """Bytes per token of the dataset's tokenizer and of others, on the dataset's val documents: what a
    vocabulary buys (more bytes per token: shorter sequences for the same text)."""
    from prepare.tokenizer.compare import compare as compare_tokenizers

    compare_tokenizers(data_dir, encodings, max_documents, encoder)


@cli.command("commit")
@click.argument("data_dir", type=click.Path())
@click.option("--compact-at", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Compact when retired tokens pass this share of the token files.")
@WAIT
@user_errors
@bucket.for_urls(bucket.commit)
def commit_tasks(data_dir, compact_at, wait):
    """Publish the results of every task of a job (`build --tasks N --task I`) as one generation."""
    manifest, results = cluster.commit(data_dir, {"compact_at": compact_at}, wait)
    inputs = sum(r["summary"]["inputs"] for r in results)
    tokens = sum(r["summary"]["tokens"] for r in results)
    click.echo(f"{data_dir}: {len(results)} tasks committed ({inputs} inputs, {tokens:,} tokens tokenized); "
               f"generation {manifest.generation} now in force")


@cli.command()
@click.argument("data_dir", type=click.Path())
@WAIT
@user_errors
@bucket.for_urls(bucket.abort)
def abort(data_dir, wait):
    """Abandon the cluster job in DATA_DIR (stop its tasks first): remove its results and the token files its
    tasks wrote. The generation in force is untouched."""
    if not os.path.isdir(data_dir):
        fail(f"{data_dir}: no such dataset directory")
    abandoned, removed = cluster.abort(data_dir, wait)
    click.echo(f"{data_dir}: {len(abandoned)} jobs abandoned ({', '.join(abandoned) or 'none in progress'}), "
               f"{removed} files removed")


def open_dataset_locked(data_dir, wait):
    """The dataset's lock, for commands that change it outside a build."""
    from prepare.build import dataset_lock

    fmt.read_manifest(data_dir)
    return dataset_lock(data_dir, wait)


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a summary.")
@user_errors
def info(data_dir, as_json):
    """Summarise a dataset directory: generation, live and retired tokens, files, inputs."""
    from prepare.info import show

    show(data_dir, as_json)


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--show", default=5, show_default=True, type=click.IntRange(1), help="Removed duplicates to show.")
@click.option("--kind", type=click.Choice(list(METHODS)), help="Show only this kind [default: both].")
@click.option("--width", default=60, show_default=True, type=click.IntRange(20), help="Characters per column.")
@click.option("--lines", default=8, show_default=True, type=click.IntRange(1), help="Lines of each document shown.")
@user_errors
def dups(data_dir, show, kind, width, lines):
    """Removed duplicates beside the copies kept, with the Jaccard similarity of their word 5-grams as the build
    estimated it (MinHash) and as it is (the documents read again from their inputs)."""
    from prepare.dups import show as show_duplicates

    show_duplicates(data_dir, show, kind, width, lines)


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--rule", help="Show only documents dropped by this rule (`language` for language ID).")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1), help="Documents to show at most.")
@click.option("--chars", default=160, show_default=True, type=click.IntRange(10), help="Characters of each shown.")
@user_errors
def filtered(data_dir, rule, limit, chars):
    """Documents the filters removed: the rule, the value it measured, its threshold, and the text's start."""
    from prepare.filtered import show as show_filtered

    show_filtered(data_dir, rule, limit, chars)


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="Page to write [default: DATA_DIR/report.html].")
@user_errors
def report(data_dir, out):
    """One self-contained HTML page of plots and tables: tokens by input, document lengths, languages, what was
    removed, and the generations kept."""
    from prepare.report import write_report

    path, size, titles = write_report(data_dir, out)
    click.echo(f"wrote {path} ({size / 1024:,.0f} KB): sections {', '.join(t.lower() for t in titles)}")


@cli.command()
@click.argument("data_dir", type=click.Path())
@user_errors
def verify(data_dir):
    """Check every token file (size, checksum, token ids) and every live extent; exit 1 naming the first bad one."""
    manifest = fmt.read_manifest(data_dir)
    for token_file in manifest.files.values():
        problem = fmt.verify_file(data_dir, manifest, token_file)
        if problem:
            path = fmt.token_path(data_dir, token_file.name)
            raise fmt.DatasetError(f"{path}: {problem}; rerun prepare with --rebuild")
    extents = sum(len(manifest.extents[s]) for s in fmt.SPLITS)
    click.echo(f"{data_dir}: {len(manifest.files)} token files and {extents} extents verified "
               f"(generation {manifest.generation})")


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--shard-tokens", default=100_000_000, show_default=True, type=click.IntRange(1),
              help="Tokens per new token file at most (a longer document gets a file of its own).")
@WAIT
@user_errors
def compact(data_dir, shard_tokens, wait):
    """Copy the live tokens of files that hold retired ones into new files (no tokenizing), then collect."""
    from prepare.build import check_no_job
    from prepare.maintain import compact as compact_dataset

    with open_dataset_locked(data_dir, wait):
        check_no_job(data_dir)
        copied = compact_dataset(data_dir, shard_tokens)
    click.echo(f"{data_dir}: {copied:,} live tokens copied" if copied else f"{data_dir}: nothing to compact")


@cli.command()
@click.argument("data_dir", type=click.Path())
@WAIT
@user_errors
@bucket.for_urls(bucket.gc)
def gc(data_dir, wait):
    """Remove files that neither the generation in force nor a running reader's generation needs."""
    from prepare.maintain import collect_garbage

    with open_dataset_locked(data_dir, wait):
        removed, freed = collect_garbage(data_dir)
    click.echo(f"{data_dir}: {removed} files removed, {freed / 1e6:.1f} MB freed")


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.argument("name")
@WAIT
@user_errors
@bucket.for_urls(bucket.unpin)
def unpin(data_dir, name, wait):
    """Release the generations that the run pinned as NAME (`prepare info` lists the pins), then collect."""
    from prepare.maintain import collect_garbage

    with open_dataset_locked(data_dir, wait):
        if name not in fmt.read_pins(data_dir):
            raise fmt.DatasetError(f"{data_dir}: no pin {name!r}; `prepare info {data_dir}` lists the pins")
        os.remove(fmt.pin_path(data_dir, name))
        removed, freed = collect_garbage(data_dir)
    click.echo(f"{data_dir}: pin {name} released; {removed} files removed, {freed / 1e6:.1f} MB freed")


cli.add_command(bucket.push)
cli.add_command(bucket.pull)
