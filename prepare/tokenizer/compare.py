"""`prepare compare`: bytes per token of a dataset's tokenizer and of others on its val documents, what a
vocabulary buys (more bytes per token: shorter sequences for the same text)."""

import dataclasses
import os

import click
import numpy as np

from prepare import format as fmt
from prepare.tokenizer.encoder import described, encoder_for
from prepare.tokenizer.encodings import TokenizerError, load_encoding
from prepare.tokenizer.identity import open_encoding

OFFERED = ("gpt2", "cl100k_base", "o200k_base")  # compared when no --encoding is given, where they load offline


def compare(data_dir, encodings, max_documents, choice="auto"):
    """Print a line for the dataset's val documents, then one per tokenizer (the dataset's first), each encoding
    by the encoder `choice` gives it."""
    snapshot = fmt.open_snapshot(data_dir)
    try:
        own = open_encoding(dataclasses.asdict(snapshot.manifest.tokenizer), os.path.join(data_dir, fmt.TOKENIZER))
        documents = val_documents(snapshot, own, max_documents)
    finally:
        snapshot.close()
    if not documents:
        raise fmt.DatasetError(f"{data_dir}: the val split holds no document to compare on")
    size = sum(len(d.encode("utf-8")) for d in documents)
    rows = [(f"{own.name} (the dataset's)", own)]
    for spec in encodings or OFFERED:
        try:
            rows.append((spec, load_encoding(spec)))
        except TokenizerError:
            if encodings:
                raise
            click.echo(f"  {spec}: skipped (tiktoken downloads it on first use, and it is not in its cache)")
    click.echo(f"{data_dir}: {len(documents):,} val documents, {size:,} bytes")
    base = None
    for name, encoding in rows:
        chosen = encoder_for(encoding, choice)
        tokens = sum(len(chosen.encode(d)) for d in documents)
        base = base or tokens
        click.echo(f"  {name:40s} vocabulary {encoding.n_vocab:>7,}: {tokens:>10,} tokens, {size / tokens:.3f} bytes "
                   f"per token ({tokens / base:.2f}x the dataset's tokens; {described(chosen)})")


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
