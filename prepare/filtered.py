"""`prepare filtered`: the documents the filters removed, each with the rule that dropped it, the value it measured
and the threshold, and the start of its text read again from its input (redacted as the build would have)."""

import itertools

import click

from prepare import format as fmt
from prepare.dups import same_file
from prepare.filtering import filters
from prepare.readers import iter_documents
from prepare.readers.base import SourceError, SourceStats


def show(data_dir, rule, limit, chars):
    """Print the first `limit` documents filtered (by `rule`, or any), input by input."""
    manifest = fmt.read_manifest(data_dir)
    sources = fmt.read_sources(data_dir, manifest)
    shown = 0
    for record in sorted(sources.values(), key=lambda r: r["id"]):
        wanted = [d for d in record.get("dedup", {}).get("removed", [])
                  if d["kind"] == "filtered" and rule in (None, d["rule"])][: limit - shown]
        texts = read_documents(record, {d["at"] for d in wanted}, manifest)
        for doc in wanted:
            click.echo(f"{record['id']} #{doc['at']} ({doc['split']}, {doc['tokens']:,} tokens): "
                       f"{why(doc, manifest.options)}")
            text = texts.get(doc["at"])
            start = " ".join(text[: chars * 2].split())[:chars] if text is not None else "(input changed or gone)"
            click.echo(f"  {start}{'...' if text is not None and len(text) > chars else ''}")
            shown += 1
        if shown == limit:
            return
    if not shown:
        built = "" if filters(manifest.options) else " (built without --filter or --languages)"
        click.echo(f"{data_dir}: no documents filtered{' by ' + rule if rule else ''}{built}")


def why(doc, options):
    """'gopher_words 2 against 50 (language en)', or for language ID, the language and score against the options."""
    if doc["rule"] == "language" and doc["language"] not in options["languages"]:
        return f"language {doc['language']} (score {doc['value']:g}) is not among {', '.join(options['languages'])}"
    if doc["rule"] == "language":
        return f"language {doc['language']} scored {doc['value']:g} against {doc['threshold']:g}"
    language = f" (language {doc['language']})" if "language" in doc else ""
    return f"{doc['rule']} {doc['value']:g} against {doc['threshold']:g}{language}"


def read_documents(record, positions, manifest):
    """{position: text} of an input's documents at `positions`, read again in one pass (and redacted as the build
    did), or {} if the input is gone or changed since."""
    if not positions or (record["kind"] == "file" and not same_file(record)):
        return {}
    opts = {**manifest.options, "strict": False, "skip_bad_records": True}
    texts = {}
    try:
        documents = iter_documents(record, opts, SourceStats(), lambda message: None)
        for at, text in enumerate(itertools.islice(documents, max(positions) + 1)):
            if at in positions:
                texts[at] = text
    except SourceError:
        return {}
    if manifest.options.get("redact"):
        from prepare.filters.redact import redact

        texts = {at: redact(text, manifest.options["redact"])[0] for at, text in texts.items()}
    return texts
