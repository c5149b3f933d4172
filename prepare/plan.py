"""What a build must do: the inputs the SOURCE arguments name now, compared input by input with the records
in force. Unchanged inputs are left alone; new and changed inputs are tokenized; an input that only grew (a
JSONL file with records appended) has only its new records tokenized; the documents of changed and deleted
inputs are retired."""

import dataclasses
import os
import sys

from prepare import format as fmt
from prepare.cap import CAPPED_KINDS, beyond_cap
from prepare.dedup import reconsidered
from prepare.readers.base import special_kind
from prepare.sources import content_hash, content_key, expand_source, prefix_sha256
from prepare.storage.objects import same_object
from prepare.tokenizer import eot_token, install, is_directory_spec, load_encoding, mismatch, pattern_hash, ranks_hash

# What shaped the tokens (recorded in the manifest): a change means the tokens are stale.
OPTIONAL = ("filter", "filter_threshold", "languages", "min_language_score", "language_model", "redact")  # off: None
SHAPING_OPTIONS = ("doc_sep", "text_field", "val_fraction", "dedup", "decontaminate", *OPTIONAL)


def shaping(opts):
    """The options a dataset records: those that shaped its tokens (an optional one only when given, so that the
    datasets built before it existed compare equal)."""
    return {k: opts.get(k) for k in SHAPING_OPTIONS if k not in OPTIONAL or opts.get(k) is not None}


class BuildError(Exception):
    pass


def open_build(data_dir, opts, rebuild):
    """(tokenizer, manifest in force or None, its input records), after checking the options match."""
    encoding = load_encoding(opts["encoding"])
    trained = is_directory_spec(opts["encoding"])
    tokenizer = fmt.Tokenizer(encoding.name, ranks_hash(encoding), encoding.n_vocab, eot_token(encoding), trained,
                              pattern_hash(encoding))
    old = fmt.read_manifest(data_dir) if os.path.exists(fmt.manifest_path(data_dir)) else None
    if old and not rebuild:
        wanted = {"encoding": encoding.name, "tokenizer": "as it was", **{k: opts.get(k) for k in SHAPING_OPTIONS}}
        changed = mismatch(dataclasses.asdict(old.tokenizer), encoding)
        built = {"encoding": old.tokenizer.name, "tokenizer": changed or "as it was", **old.options}
        differ = [f"{k} {built.get(k)!r} -> {wanted[k]!r}" if k != "tokenizer" else f"tokenizer: {built[k]}"
                  for k in wanted if built.get(k) != wanted[k]]
        if differ:
            raise BuildError(f"{data_dir} was built with other options ({'; '.join(differ)}); pass --rebuild to redo "
                             f"it")
    if trained:  # the dataset carries its tokenizer: a run, its checkpoints and exports need nothing else
        install(encoding, os.path.join(data_dir, fmt.TOKENIZER))
    return tokenizer, old, fmt.read_sources(data_dir, old)


def current_inputs(sources, opts, skipped=None):
    """The inputs the SOURCE arguments name now, by identity, each listed once. --max-tokens caps Hugging Face
    datasets only (Hub files or save_to_disk), and is part of their identity. Files of a directory or glob that
    are not regular files are skipped with a warning, and appended to `skipped`."""
    inputs, skipped = {}, [] if skipped is None else skipped
    for source in sources:
        before = len(skipped)
        entries = expand_source(source, opts["split"], skipped)
        for path in skipped[before:]:
            print(f"warning: {path}: not a regular file ({special_kind(os.stat(path).st_mode)}), skipped",
                  file=sys.stderr)
        for entry in entries:
            if entry["kind"] in CAPPED_KINDS:
                entry["max_tokens"] = opts["max_tokens"]
            inputs.setdefault(entry["id"], entry)
    return inputs


@dataclasses.dataclass
class Work:
    """One input to tokenize: from its start, or (`resume_at` > 0) from where a grown JSONL file's old
    records end."""

    entry: dict
    before: dict | None = None  # its record, if the input was prepared before
    resume_at: int = 0


def plan(old_sources, inputs, rebuild):
    """(records kept as they are, records refreshed (touched but identical), work, ids deleted)."""
    previous = {} if rebuild else old_sources
    kept, refreshed, work = {}, {}, []
    for source_id, entry in inputs.items():
        before = previous.get(source_id)
        same_cap = before is not None and before.get("max_tokens") == entry.get("max_tokens")
        if same_cap and entry["kind"] in ("file", "disk") and \
                (before["size"], before["mtime_ns"]) == (entry["size"], entry["mtime_ns"]):
            kept[source_id] = before
            continue
        if same_cap and entry["kind"] == "hub_file" and before["blob_id"] == entry["blob_id"]:
            kept[source_id] = before
            continue
        if same_cap and entry["kind"] == "object" and same_object(before, entry):  # never downloaded again
            kept[source_id] = before
            continue
        if before is None:  # new: hashed by whoever reads it, in parallel with the tokenizing
            work.append(Work(entry))
            continue
        key = content_key(entry)
        if key:
            entry[key] = content_hash(entry)
        if same_cap and key and before.get(key) == entry[key]:
            refreshed[source_id] = {**before, **entry}  # touched but identical: size and mtime only
        elif same_cap and before.get("resume_at") and entry["size"] > before["size"] and \
                prefix_sha256(entry, before["resume_at"]) == before["prefix_sha256"]:
            work.append(Work(entry, before, before["resume_at"]))
        else:
            work.append(Work(entry, before))
    deleted = sorted(set(old_sources) - set(inputs)) if not rebuild else sorted(old_sources)
    work.sort(key=lambda w: w.entry["id"])
    return kept, refreshed, beyond_cap(work, {**kept, **refreshed}), deleted


def reconsider(old_sources, inputs, kept, refreshed, work, deleted):
    """The plan of a build that screens documents (--dedup, --decontaminate): a grown input is read again
    whole (its documents are compared as a fresh build compares them), and an unchanged input with a document
    dropped as the twin of one that is no longer kept is read again too (prepare/dedup/removed.py). Returns (kept,
    refreshed, work)."""
    for item in work:
        item.resume_at = 0
    retired = set(deleted) | {w.entry["id"] for w in work if w.before}
    again = [i for i in reconsidered(old_sources, retired) if i in kept or i in refreshed]
    for source_id in again:
        work.append(Work(inputs[source_id], old_sources[source_id]))
    kept = {k: r for k, r in kept.items() if k not in again}
    refreshed = {k: r for k, r in refreshed.items() if k not in again}
    work.sort(key=lambda w: w.entry["id"])
    return kept, refreshed, work
