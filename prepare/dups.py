"""`prepare dups`: removed duplicates beside the copies kept, each read again from its input, with the Jaccard
similarity of their word 5-grams as the build estimated it (MinHash) and as it is."""

import itertools
import os

import click

from prepare import format as fmt
from prepare.dedup import METHODS, jaccard
from prepare.readers import iter_documents
from prepare.readers.base import SourceError, SourceStats


def show(data_dir, limit, kind, width, lines):
    """Print the first `limit` removed duplicates (of `kind`, or both kinds) in two columns."""
    manifest = fmt.read_manifest(data_dir)
    sources = fmt.read_sources(data_dir, manifest)
    shown = 0
    for record in sorted(sources.values(), key=lambda r: r["id"]):
        for doc in record.get("dedup", {}).get("removed", []):
            if doc["kind"] not in METHODS or kind not in (None, doc["kind"]):
                continue
            twin_id, _, twin_at = doc["twin"]
            removed = read_document(record, doc["at"], manifest)
            kept = read_document(sources.get(twin_id), twin_at, manifest)
            true = f"{jaccard(removed, kept):.3f}" if removed is not None and kept is not None else \
                "unknown (input changed since)"
            click.echo(f"{record['id']} #{doc['at']} ({doc['kind']}, {doc['split']}, {doc['tokens']:,} tokens) removed "
                       f"as a twin of {twin_id} #{twin_at}: estimated Jaccard {doc['jaccard']:.3f}, true {true}")
            columns = [wrap(text, width, lines) for text in (removed, kept)]
            click.echo(f"  {'removed':<{width}} | kept")
            for left, right in itertools.zip_longest(*columns, fillvalue=""):
                click.echo(f"  {left:<{width}} | {right}")
            shown += 1
            if shown == limit:
                return
    if not shown:
        built = "" if manifest.options.get("dedup") else " (built without --dedup)"
        click.echo(f"{data_dir}: no duplicates removed{built}")


def read_document(record, position, manifest):
    """Document `position` of an input, read again, or None if the input is gone or changed since."""
    if record is None or (record["kind"] == "file" and not same_file(record)):
        return None
    opts = {**manifest.options, "strict": False, "skip_bad_records": True}
    documents = iter_documents(record, opts, SourceStats(), lambda message: None)
    try:
        return next(itertools.islice(documents, position, None), None)
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
