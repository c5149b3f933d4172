"""`python -m prepare`: build, inspect and verify token datasets."""

import itertools
import json
import os

import click
import numpy as np

from prepare import clitools, format as fmt
from prepare.build import build as build_dataset
from prepare.dedup import METHODS, removed_totals
from prepare.plan import BuildError
from prepare.sources import PRESETS, SourceError
from prepare.storage import commands as bucket
from prepare.storage.store import StorageError, is_url
from prepare.tokenizer import TokenizerError

fail = clitools.fail

USER_ERRORS = (SourceError, BuildError, fmt.DatasetError, TokenizerError, StorageError)
user_errors = clitools.user_errors(USER_ERRORS, "interrupted: the dataset is as it was before this run")


def parse_suites(value):
    """--decontaminate hellaswag,core -> ["core", "hellaswag"] (sorted: the recorded option does not depend on
    the order given)."""
    if value is None:
        return None
    names = sorted({name.strip() for name in value.split(",") if name.strip()})
    unknown = [name for name in names if name not in ("hellaswag", "core")]
    if unknown or not names:
        raise click.BadParameter(f"{value!r}: choose among hellaswag, core (comma-separated)")
    return names


def default_out(source):
    if source in PRESETS and not os.path.exists(source):
        name = source
    elif source.startswith("hf:"):
        name = source[3:].split(":")[0].rstrip("/").split("/")[-1].lower()
    else:
        name = os.path.basename(os.path.normpath(source.split("*")[0])).split(".")[0] or "corpus"
    return os.path.join("data", name)


@click.group()
def cli():
    """Turn corpora into token shards that `python -m train` reads."""


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), help="Dataset directory [default: data/<name of the first SOURCE>].")
@click.option("--encoding", default="gpt2", show_default=True, help="tiktoken encoding name, or a tokenizer directory made by `prepare tokenizer`.")
@click.option("--text-field", default="text", show_default=True, help="Field holding the text in .jsonl, .parquet and Hugging Face records.")
@click.option("--split", default="train", show_default=True, help="Split to read from Hugging Face datasets.")
@click.option("--doc-sep", default=None, help="Split text files into documents on lines equal to this string, or on blank lines with 'blank'. [default: one document per file]")
@click.option("--val-fraction", default=0.01, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Fraction of documents that go to val, chosen by a hash of each document.")
@click.option("--shard-tokens", default=100_000_000, show_default=True, type=click.IntRange(1), help="Tokens per shard at most (a longer document gets a shard of its own).")
@click.option("--max-tokens", default=None, type=click.IntRange(1), help="Take at most this many tokens from each Hugging Face dataset (a Hub dataset: whole data files, in order, until the cap is reached).")
@click.option("--commit-every", default="5m", show_default=True, callback=clitools.parse_duration, help="Work between commits, e.g. 90s, 5m or seconds: a killed run loses at most this much (inputs are committed whole).")
@click.option("--compact-at", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Compact when retired tokens pass this share of the token files (1 never).")
@click.option("--workers", default=os.cpu_count(), show_default=True, type=click.IntRange(1), help="Tokenizer processes.")
@click.option("--skip-bad-records", is_flag=True, help="Count and skip malformed JSONL lines and records without the text field instead of failing.")
@click.option("--strict", is_flag=True, help="Fail on invalid UTF-8 instead of replacing it.")
@click.option("--dedup", type=click.Choice(list(METHODS)), help="Drop a document whose text equals (exact: lowercased, whitespace removed) or nearly equals (near: MinHash LSH over word 5-grams, estimated Jaccard >= 0.8; implies exact) one already kept; recorded, a change needs --rebuild. See docs/dedup.md.")
@click.option("--decontaminate", callback=lambda ctx, param, value: parse_suites(value), help="Drop documents that share a 13-gram of words with an item of these tasks (hellaswag, core, comma-separated), read from `train score`'s cache; recorded, a change needs --rebuild.")
@click.option("--rebuild", is_flag=True, help="Tokenize every input again, ignoring what is already prepared.")
@click.option("--wait", is_flag=True, help="Wait for another prepare writing the same dataset instead of stopping.")
@click.option("--tasks", type=click.IntRange(1), help="Split the work into this many tasks (for several machines); with --task, run one of them.")
@click.option("--task", type=click.IntRange(0), help="Run only task TASK of --tasks and leave its result for `prepare commit`.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="ray: run the --tasks tasks on Ray (with retries) and commit.")
@click.option("--ray-address", help="Ray cluster to use [default: RAY_ADDRESS, else a local Ray].")
@user_errors
def build(sources, out, workers, rebuild, wait, tasks, task, executor, ray_address, **opts):
    """Tokenize SOURCES into a dataset directory, doing only what changed since the last run.

    A SOURCE is a file, a directory, a quoted glob ('corpus/**/*.txt'), a preset
    (stdlib, tinystories, fineweb-edu) or hf:NAME[:CONFIG] (a Hub dataset or a save_to_disk directory).
    """
    for source in sources:
        if source in PRESETS and not os.path.exists(source) and opts["max_tokens"] is None:
            opts["max_tokens"] = PRESETS[source]["options"].get("max_tokens")
    data_dir = out or default_out(sources[0])
    if is_url(data_dir):
        return bucket.build(list(sources), data_dir, opts, task, tasks, executor, workers, rebuild)
    if task is not None or executor == "ray":
        from prepare.build import check_output_dir
        from prepare import cluster

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
        click.echo(f"{data_dir}: task {task} of {tasks} tokenized {summary['inputs']} inputs, {summary['tokens']:,} tokens "
                   f"in {summary['seconds']:.1f} s; `python -m prepare commit {data_dir}` once all tasks are done")
        return
    if tasks is not None:
        fail("--tasks needs --task I (one task, for an array scheduler) or --executor ray")
    build_dataset(list(sources), data_dir, opts, workers, rebuild=rebuild, wait=wait)


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Tokenizer directory to write, e.g. tokenizers/NAME (its name is the folder's).")
@click.option("--vocab-size", required=True, type=click.IntRange(257, 1 << 20), help="Ids in all: 256 bytes, the merges, and end-of-text (up to 65,536 keeps uint16 token files).")
@click.option("--pattern", default="gpt4", show_default=True, type=click.Choice(["gpt4", "gpt2"]), help="How text is split before merging: GPT-4's (cl100k) pattern or GPT-2's.")
@click.option("--max-chars", default=300_000_000, show_default=True, type=click.IntRange(1), help="Characters to learn from at most, taken from every input in proportion to its size.")
@click.option("--text-field", default="text", show_default=True, help="Field holding the text in .jsonl, .parquet and Hugging Face records.")
@click.option("--split", default="train", show_default=True, help="Split to read from Hugging Face datasets.")
@click.option("--doc-sep", default=None, help="Split text files into documents on lines equal to this string, or on blank lines with 'blank'. [default: one document per file]")
@click.option("--skip-bad-records", is_flag=True, help="Count and skip malformed JSONL lines and records without the text field instead of failing.")
@click.option("--strict", is_flag=True, help="Fail on invalid UTF-8 instead of replacing it.")
@user_errors
def tokenizer(sources, out, vocab_size, pattern, max_chars, **opts):
    """Train a byte-level BPE tokenizer on SOURCES (the kinds `build` reads) and write it to --out, for
    `build --encoding DIR`. The same inputs and options give the same tokenizer, byte for byte."""
    from prepare import bpe

    encoding, chars, documents, seconds = bpe.train(list(sources), out, vocab_size, pattern, max_chars, {**opts, "max_tokens": None})
    short = f" (the text held only {encoding.n_vocab - 1} distinct merges and bytes)" if encoding.n_vocab < vocab_size else ""
    click.echo(f"{out}: {encoding.n_vocab:,} ids{short}, learned from {documents:,} documents, {chars:,} characters in "
               f"{seconds:.1f} s; end-of-text is {encoding.n_vocab - 1}; use it with `prepare build --encoding {out}`")


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--encoding", "encodings", multiple=True, help="Tokenizer to compare (repeatable) [default: gpt2, cl100k_base, o200k_base where they load offline].")
@click.option("--max-documents", default=10_000, show_default=True, type=click.IntRange(1), help="Val documents to encode at most.")
@user_errors
def compare(data_dir, encodings, max_documents):
    """Bytes per token of the dataset's tokenizer and of others, on the dataset's val documents: what a
    vocabulary buys (more bytes per token: shorter sequences for the same text)."""
    import dataclasses

    from prepare.tokenizer import encode_to_numpy, load_encoding, open_encoding

    snapshot = fmt.open_snapshot(data_dir)
    try:
        own = open_encoding(dataclasses.asdict(snapshot.manifest.tokenizer), os.path.join(data_dir, fmt.TOKENIZER))
        documents = val_documents(snapshot, own, max_documents)
    finally:
        snapshot.close()
    if not documents:
        fail(f"{data_dir}: the val split holds no document to compare on")
    size = sum(len(d.encode("utf-8")) for d in documents)
    rows = [(f"{own.name} (the dataset's)", own)]
    for spec in encodings or ("gpt2", "cl100k_base", "o200k_base"):
        try:
            rows.append((spec, load_encoding(spec)))
        except TokenizerError:
            if encodings:
                raise
            click.echo(f"  {spec}: skipped (tiktoken downloads it on first use, and it is not in its cache)")
    click.echo(f"{data_dir}: {len(documents):,} val documents, {size:,} bytes")
    base = None
    for name, encoding in rows:
        tokens = sum(len(encode_to_numpy(encoding, d)) for d in documents)
        base = base or tokens
        click.echo(f"  {name:40s} vocabulary {encoding.n_vocab:>7,}: {tokens:>10,} tokens, {size / tokens:.3f} bytes per token ({tokens / base:.2f}x the dataset's tokens)")


def val_documents(snapshot, encoding, limit):
    """The texts of the val split's documents (at most `limit`), decoded from its tokens."""
    eot = snapshot.manifest.tokenizer.eot_token
    documents = []
    for extent in snapshot.manifest.extents["val"]:
        tokens = snapshot.open_tokens(extent.file)[extent.start : extent.end]
        for piece in np.split(tokens, np.flatnonzero(tokens == eot)):
            if len(piece) > 1:
                documents.append(encoding.decode(piece[1:].tolist()))
                if len(documents) == limit:
                    return documents
    return documents


@cli.command("commit")
@click.argument("data_dir", type=click.Path())
@click.option("--compact-at", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Compact when retired tokens pass this share of the token files.")
@click.option("--wait", is_flag=True, help="Wait for a prepare writing the dataset instead of stopping.")
@user_errors
@bucket.for_urls(bucket.commit)
def commit_tasks(data_dir, compact_at, wait):
    """Publish the results of every task of a job (`build --tasks N --task I`) as one generation."""
    from prepare import cluster

    manifest, results = cluster.commit(data_dir, {"compact_at": compact_at}, wait)
    inputs = sum(r["summary"]["inputs"] for r in results)
    tokens = sum(r["summary"]["tokens"] for r in results)
    click.echo(f"{data_dir}: {len(results)} tasks committed ({inputs} inputs, {tokens:,} tokens tokenized); "
               f"generation {manifest.generation} now in force")


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--wait", is_flag=True, help="Wait for a prepare writing the dataset instead of stopping.")
@user_errors
@bucket.for_urls(bucket.abort)
def abort(data_dir, wait):
    """Abandon the cluster job in DATA_DIR (stop its tasks first): remove its results and the token files its
    tasks wrote. The generation in force is untouched."""
    from prepare import cluster

    if not os.path.isdir(data_dir):
        fail(f"{data_dir}: no such dataset directory")
    abandoned, removed = cluster.abort(data_dir, wait)
    click.echo(f"{data_dir}: {len(abandoned)} jobs abandoned ({', '.join(abandoned) or 'none in progress'}), {removed} files removed")


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
    manifest = fmt.read_manifest(data_dir)
    sources = fmt.read_sources(data_dir, manifest)
    tokenizer = manifest.tokenizer
    splits = {
        split: {"tokens": manifest.tokens(split), "documents": manifest.documents[split], "extents": len(manifest.extents[split]),
                "files": sum(f.split == split for f in manifest.files.values())}
        for split in fmt.SPLITS
    }
    summary = {
        "generation": manifest.generation, "tokenizer": tokenizer.name, "dtype": manifest.dtype,
        "vocab_size": tokenizer.vocab_size, "eot_token": tokenizer.eot_token, "options": manifest.options,
        "splits": splits, "dead_tokens": manifest.dead_tokens(), "files": len(manifest.files),
        "inputs": len(sources), "sources": sorted(sources.values(), key=lambda r: r["id"]), "jobs": fmt.jobs(data_dir),
        "pins": fmt.read_pins(data_dir),
        "removed": {"dataset": removed_totals(sources.values()), "latest_build": manifest.removed},
    }
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    file_tokens = sum(f.tokens for f in manifest.files.values())
    trained = f", trained: {os.path.join(data_dir, fmt.TOKENIZER)}" if tokenizer.trained else ""
    click.echo(f"{data_dir}: generation {manifest.generation}, {tokenizer.name} tokens (vocabulary {tokenizer.vocab_size}, "
               f"end-of-text {tokenizer.eot_token}{trained}) as {manifest.dtype}")
    for split, s in splits.items():
        click.echo(f"  {split:5s} {s['tokens']:>14,} tokens {s['documents']:>10,} documents in {s['extents']:>5} extents of {s['files']} files")
    click.echo(f"  {len(manifest.files)} token files, {file_tokens:,} tokens of which {manifest.dead_tokens():,} retired "
               f"({manifest.dead_tokens() / max(file_tokens, 1):.0%}; `prepare compact` copies the live ones)")
    skipped = sum(bool(r.get("skipped", {}).get("binary")) for r in sources.values())
    click.echo(f"  {len(sources)} inputs ({skipped} skipped as binary), options {json.dumps(manifest.options)}")
    if manifest.options.get("dedup") or manifest.options.get("decontaminate"):
        click.echo(f"  removed from the dataset: {removed_line(summary['removed']['dataset'])}")
        click.echo(f"  removed by the latest build: {removed_line(manifest.removed)}")
    for job in summary["jobs"]:
        click.echo(f"  cluster job in progress: {job}; `prepare commit` publishes it, `prepare abort` abandons it")
    for name, pin in summary["pins"].items():
        click.echo(f"  pinned by {pin['run']}: generations {', '.join(map(str, pin['generations']))}; `prepare unpin {data_dir} {name}` releases them")


def removed_line(totals):
    """'exact 3 documents (1.2 kB, 310 tokens), near ..., contaminated ... (hellaswag 1)'."""
    parts = []
    for kind in (*METHODS, "contaminated"):
        t = totals.get(kind, {"documents": 0, "tokens": 0, "bytes": 0})
        parts.append(f"{kind} {t['documents']:,} documents ({t['bytes']:,} bytes, {t['tokens']:,} tokens)")
    tasks = totals.get("tasks") or {}
    return ", ".join(parts) + (f" ({', '.join(f'{k} {v}' for k, v in tasks.items())})" if tasks else "")


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
    from prepare.dedup import jaccard

    manifest = fmt.read_manifest(data_dir)
    sources = fmt.read_sources(data_dir, manifest)
    shown = 0
    for record in sorted(sources.values(), key=lambda r: r["id"]):
        for doc in record.get("dedup", {}).get("removed", []):
            if doc["kind"] not in METHODS or kind not in (None, doc["kind"]):
                continue
            twin_id, _, twin_at = doc["twin"]
            removed, kept = read_document(record, doc["at"], manifest), read_document(sources.get(twin_id), twin_at, manifest)
            true = f"{jaccard(removed, kept):.3f}" if removed is not None and kept is not None else "unknown (input changed since)"
            click.echo(f"{record['id']} #{doc['at']} ({doc['kind']}, {doc['split']}, {doc['tokens']:,} tokens) removed as a twin of "
                       f"{twin_id} #{twin_at}: estimated Jaccard {doc['jaccard']:.3f}, true {true}")
            columns = [wrap(text, width, lines) for text in (removed, kept)]
            click.echo(f"  {'removed':<{width}} | kept")
            for left, right in itertools.zip_longest(*columns, fillvalue=""):
                click.echo(f"  {left:<{width}} | {right}")
            shown += 1
            if shown == show:
                return
    if not shown:
        click.echo(f"{data_dir}: no duplicates removed" + ("" if manifest.options.get("dedup") else " (built without --dedup)"))


def read_document(record, position, manifest):
    """Document `position` of an input, read again, or None if the input is gone or changed since."""
    from prepare.sources import SourceError, SourceStats, iter_documents

    if record is None or (record["kind"] == "file" and not same_file(record)):
        return None
    opts = {**manifest.options, "strict": False, "skip_bad_records": True}
    try:
        return next(itertools.islice(iter_documents(record, opts, SourceStats(), lambda message: None), position, None), None)
    except SourceError:
        return None


def same_file(record):
    try:
        st = os.stat(record["path"])
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (record["size"], record["mtime_ns"])


def wrap(text, width, lines):
    """The first `lines` lines of `text` cut into `width`-character pieces."""
    if text is None:
        return ["(input changed or gone)"]
    out = [line[a : a + width] for line in text.splitlines() for a in range(0, max(len(line), 1), width)]
    return out[:lines] + (["..."] if len(out) > lines else [])


@cli.command()
@click.argument("data_dir", type=click.Path())
@user_errors
def verify(data_dir):
    """Check every token file (size, checksum, token ids) and every live extent; exit 1 naming the first bad one."""
    manifest = fmt.read_manifest(data_dir)
    for token_file in manifest.files.values():
        problem = fmt.verify_file(data_dir, manifest, token_file)
        if problem:
            raise fmt.DatasetError(f"{fmt.token_path(data_dir, token_file.name)}: {problem}; rerun prepare with --rebuild")
    extents = sum(len(manifest.extents[s]) for s in fmt.SPLITS)
    click.echo(f"{data_dir}: {len(manifest.files)} token files and {extents} extents verified (generation {manifest.generation})")


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--shard-tokens", default=100_000_000, show_default=True, type=click.IntRange(1), help="Tokens per new token file at most (a longer document gets a file of its own).")
@click.option("--wait", is_flag=True, help="Wait for a prepare writing the dataset instead of stopping.")
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
@click.option("--wait", is_flag=True, help="Wait for a prepare writing the dataset instead of stopping.")
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
@click.option("--wait", is_flag=True, help="Wait for a prepare writing the dataset instead of stopping.")
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
