"""`python -m prepare`: build, inspect and verify token datasets."""

import functools
import json
import os
import sys

import click

from prepare import format as fmt
from prepare.build import BuildError, build as build_dataset
from prepare.sources import PRESETS, SourceError
from prepare.tokenizer import TokenizerError

USER_ERRORS = (SourceError, BuildError, fmt.DatasetError, TokenizerError)


def fail(message):
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def user_errors(command):
    """A mistake the user can fix ends as one line on stderr and exit status 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as e:
            fail(str(e))
        except OSError as e:  # disk full, permissions on the output directory, ...
            fail(f"{e.filename or ''}: {e.strerror or e}")
        except KeyboardInterrupt:
            fail("interrupted: the dataset is as it was before this run")

    return wrapper


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
@click.option("--encoding", default="gpt2", show_default=True, help="tiktoken encoding name.")
@click.option("--text-field", default="text", show_default=True, help="Field holding the text in .jsonl, .parquet and Hugging Face records.")
@click.option("--split", default="train", show_default=True, help="Split to read from Hugging Face datasets.")
@click.option("--doc-sep", default=None, help="Split text files into documents on lines equal to this string, or on blank lines with 'blank'. [default: one document per file]")
@click.option("--val-fraction", default=0.01, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Fraction of documents that go to val, chosen by a hash of each document.")
@click.option("--shard-tokens", default=100_000_000, show_default=True, type=click.IntRange(1), help="Tokens per shard at most (a longer document gets a shard of its own).")
@click.option("--max-tokens", default=None, type=click.IntRange(1), help="Take at most this many tokens from each Hugging Face dataset.")
@click.option("--workers", default=os.cpu_count(), show_default=True, type=click.IntRange(1), help="Tokenizer processes.")
@click.option("--skip-bad-records", is_flag=True, help="Count and skip malformed JSONL lines and records without the text field instead of failing.")
@click.option("--strict", is_flag=True, help="Fail on invalid UTF-8 instead of replacing it.")
@click.option("--rebuild", is_flag=True, help="Tokenize every input again, ignoring what is already prepared.")
@click.option("--wait", is_flag=True, help="Wait for another prepare writing the same dataset instead of stopping.")
@user_errors
def build(sources, out, workers, rebuild, wait, **opts):
    """Tokenize SOURCES into a dataset directory, doing only what changed since the last run.

    A SOURCE is a file, a directory, a quoted glob ('corpus/**/*.txt'), a preset
    (stdlib, tinystories, fineweb-edu) or hf:NAME[:CONFIG] (a Hub dataset or a save_to_disk directory).
    """
    for source in sources:
        if source in PRESETS and not os.path.exists(source) and opts["max_tokens"] is None:
            opts["max_tokens"] = PRESETS[source]["options"].get("max_tokens")
    build_dataset(list(sources), out or default_out(sources[0]), opts, workers, rebuild=rebuild, wait=wait)


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a summary.")
@user_errors
def info(data_dir, as_json):
    """Summarise a dataset directory."""
    manifest = fmt.read_manifest(data_dir)
    tokenizer = manifest["tokenizer"]
    splits = {
        split: {k: manifest["splits"][split][k] for k in ("tokens", "documents")} | {"shards": len(manifest["splits"][split]["shards"])}
        for split in fmt.SPLITS
    }
    if as_json:
        summary = {
            "tokenizer": tokenizer["name"],
            "dtype": manifest["dtype"],
            "vocab_size": tokenizer["vocab_size"],
            "eot_token": tokenizer["eot_token"],
            "options": manifest["options"],
            "sources": manifest["sources"],
            "splits": splits,
        }
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(f"{data_dir}: {tokenizer['name']} tokens (vocabulary {tokenizer['vocab_size']}, end-of-text {tokenizer['eot_token']}) as {manifest['dtype']}")
    for split, s in splits.items():
        click.echo(f"  {split:5s} {s['tokens']:>14,} tokens {s['documents']:>10,} documents {s['shards']:>5} shards")
    skipped = sum(bool(s.get("skipped", {}).get("binary")) for s in manifest["sources"])
    click.echo(f"  {len(manifest['sources'])} inputs ({skipped} skipped as binary), options {json.dumps(manifest['options'])}")


@cli.command()
@click.argument("data_dir", type=click.Path())
@user_errors
def verify(data_dir):
    """Check size, checksum and token ids of every shard; exit 1 naming the first bad one."""
    manifest = fmt.read_manifest(data_dir)
    shards = [shard for split in fmt.SPLITS for shard in manifest["splits"][split]["shards"]]
    for shard in shards:
        problem = fmt.verify_shard(data_dir, manifest, shard)
        if problem:
            raise fmt.DatasetError(f"{fmt.shard_path(data_dir, shard)}: {problem}; rerun prepare with --rebuild")
    click.echo(f"{data_dir}: {len(shards)} shards verified")
