"""`prepare info`: what a dataset directory holds (generation, live and retired tokens, files, inputs and the
encoders that wrote them, what the filters, dedup and decontamination removed, the languages read, cluster jobs
and pins), as a summary or as one JSON object."""

import collections
import json
import os

import click

from prepare import format as fmt
from prepare.dedup import removed_totals
from prepare.dedup.methods import KINDS
from prepare.filtering import filters, unpack_languages


def summary(data_dir, manifest, sources):
    """The dataset's figures as a JSON-ready dict."""
    tokenizer = manifest.tokenizer
    splits = {
        split: {"tokens": manifest.tokens(split), "documents": manifest.documents[split],
                "extents": len(manifest.extents[split]),
                "files": sum(f.split == split for f in manifest.files.values())}
        for split in fmt.SPLITS
    }
    return {
        "generation": manifest.generation, "tokenizer": tokenizer.name, "dtype": manifest.dtype,
        "vocab_size": tokenizer.vocab_size, "eot_token": tokenizer.eot_token, "options": manifest.options,
        "splits": splits, "dead_tokens": manifest.dead_tokens(), "files": len(manifest.files),
        "inputs": len(sources), "sources": sorted(sources.values(), key=lambda r: r["id"]), "jobs": fmt.jobs(data_dir),
        "pins": fmt.read_pins(data_dir), "encoders": encoders(sources.values()),
        "removed": {"dataset": removed_totals(sources.values()), "latest_build": manifest.removed},
        "languages": languages_read(sources.values()),
    }


def languages_read(records):
    """{language: documents} of every document read of the live inputs (kept or removed), most first: {} without
    language ID."""
    found = collections.Counter()
    for record in records:
        packed = record.get("dedup", {}).get("languages")
        if packed:
            found.update(code for code, _ in unpack_languages(packed))
    return dict(found.most_common())


def encoders(records):
    """{encoder: {"inputs": n, "tokens": n}} of the inputs' records, by the encoder that wrote each (a record made
    before gptmill recorded it has none: "not recorded")."""
    found = {}
    for record in records:
        totals = found.setdefault(record.get("encoder", "not recorded"), {"inputs": 0, "tokens": 0})
        totals["inputs"] += 1
        totals["tokens"] += sum(record["tokens"].values())
    return dict(sorted(found.items()))


def show(data_dir, as_json):
    """Print the summary: a few lines, or the JSON object."""
    manifest = fmt.read_manifest(data_dir)
    figures = summary(data_dir, manifest, fmt.read_sources(data_dir, manifest))
    if as_json:
        click.echo(json.dumps(figures, indent=1))
        return
    tokenizer = manifest.tokenizer
    file_tokens = sum(f.tokens for f in manifest.files.values())
    trained = f", trained: {os.path.join(data_dir, fmt.TOKENIZER)}" if tokenizer.trained else ""
    click.echo(f"{data_dir}: generation {manifest.generation}, {tokenizer.name} tokens (vocabulary "
               f"{tokenizer.vocab_size}, end-of-text {tokenizer.eot_token}{trained}) as {manifest.dtype}")
    for split, s in figures["splits"].items():
        click.echo(f"  {split:5s} {s['tokens']:>14,} tokens {s['documents']:>10,} documents in {s['extents']:>5} "
                   f"extents of {s['files']} files")
    click.echo(f"  {len(manifest.files)} token files, {file_tokens:,} tokens of which {manifest.dead_tokens():,} "
               f"retired ({manifest.dead_tokens() / max(file_tokens, 1):.0%}; `prepare compact` copies the live ones)")
    skipped = sum(bool(r.get("skipped", {}).get("binary")) for r in figures["sources"])
    click.echo(f"  {figures['inputs']} inputs ({skipped} skipped as binary), options {json.dumps(manifest.options)}")
    written = [f"{name} ({e['inputs']:,} inputs, {e['tokens']:,} tokens)" for name, e in figures["encoders"].items()]
    click.echo(f"  tokenized by {', '.join(written) or 'no encoder yet'}")
    if manifest.options.get("dedup") or manifest.options.get("decontaminate"):
        click.echo(f"  removed from the dataset: {removed_line(figures['removed']['dataset'])}")
        click.echo(f"  removed by the latest build: {removed_line(manifest.removed)}")
    show_filtered(figures, manifest)
    for job in figures["jobs"]:
        click.echo(f"  cluster job in progress: {job}; `prepare commit` publishes it, `prepare abort` abandons it")
    for name, pin in figures["pins"].items():
        click.echo(f"  pinned by {pin['run']}: generations {', '.join(map(str, pin['generations']))}; "
                   f"`prepare unpin {data_dir} {name}` releases them")


def show_filtered(figures, manifest):
    """The lines of the filters: what they removed by rule and by language, the languages read, the redactions."""
    options = manifest.options
    for where, totals in (("the dataset", figures["removed"]["dataset"]), ("the latest build", manifest.removed)):
        if filters(options):
            click.echo(f"  filtered from {where}: {counts(totals.get('filtered', {}))}")
            for table in ("rules", "languages"):
                listed = ", ".join(f"{name} {counts(t)}" for name, t in totals.get(table, {}).items())
                click.echo(f"    by {table[:-1]}: {listed or 'none'}")
        if options.get("redact"):
            redacted = totals.get("redacted", {})
            click.echo(f"  redacted in {where}: " + ", ".join(f"{k} {redacted.get(k, 0):,}" for k in options["redact"]))
    if figures["languages"]:
        read = ", ".join(f"{code} {n:,}" for code, n in figures["languages"].items())
        click.echo(f"  languages of the documents read (kept or removed): {read}")


def counts(totals):
    documents, size, tokens = (totals.get(k, 0) for k in ("documents", "bytes", "tokens"))
    return f"{documents:,} documents ({size:,} bytes, {tokens:,} tokens)"


def removed_line(totals):
    """'exact 3 documents (1.2 kB, 310 tokens), near ..., contaminated ... (hellaswag 1)'."""
    parts = []
    for kind in KINDS:
        t = totals.get(kind, {"documents": 0, "tokens": 0, "bytes": 0})
        parts.append(f"{kind} {t['documents']:,} documents ({t['bytes']:,} bytes, {t['tokens']:,} tokens)")
    tasks = totals.get("tasks") or {}
    return ", ".join(parts) + (f" ({', '.join(f'{k} {v}' for k, v in tasks.items())})" if tasks else "")
