"""The report's sections, each a table and a plot of one question about a dataset. A section whose dataset has
nothing to show (no language ID, nothing removed) still appears, saying why, so that a reader sees it was looked
for. The removed totals and the languages are `prepare info`'s own figures (info.summary), never recounted."""

import collections
import dataclasses
import os
import random
import re

import numpy as np

from prepare import format as fmt
from prepare.dedup.methods import KINDS
from prepare.filtering import unpack_languages
from prepare.report import plots

TOP_INPUTS = 12
TOP_LANGUAGES = 12
MIXED = "inputs of several languages"
LENGTH_SAMPLE_TOKENS = 50_000_000  # more live tokens than this: the lengths of a random sample of extents


@dataclasses.dataclass
class Section:
    title: str
    columns: list
    rows: list  # each a list of cells, one per column
    image: str | None = None  # a PNG data URI
    note: str = ""


def tokens_by_input(sources):
    """Tokens of each input, the largest first, the rest summed as "others"."""
    records = sorted(sources.values(), key=lambda r: (-sum(r["tokens"].values()), r["id"]))
    rows = top([[r["id"], r["tokens"]["train"], r["tokens"]["val"], sum(r["documents"].values())] for r in records],
               TOP_INPUTS, "inputs")
    section = Section("Tokens by input", ["input", "train tokens", "val tokens", "documents"], rows)
    if not any(row[1] + row[2] for row in rows):
        section.note = "no tokens in this dataset"
        return section
    labels = [short(row[0]) for row in rows]
    section.image = plots.horizontal_bars(labels, [("train", [r[1] for r in rows], plots.TRAIN),
                                                   ("val", [r[2] for r in rows], plots.VAL)], "tokens")
    return section


def top(rows, n, what):
    """The first `n` rows, and the rest summed column by column into one row "others (k what)"."""
    rest = rows[n:]
    if not rest:
        return rows
    return rows[:n] + [[f"others ({len(rest):,} {what})", *(sum(column) for column in zip(*(r[1:] for r in rest)))]]


def short(name, width=40):
    return name if len(name) <= width else "..." + name[-(width - 3):]


def document_lengths(snapshot, seed=0):
    """Tokens per live document, read from the token files: each document starts with the end-of-text token. Past
    LENGTH_SAMPLE_TOKENS, a random sample of whole extents."""
    manifest = snapshot.manifest
    extents = [e for split in fmt.SPLITS for e in manifest.extents[split]]
    live = sum(e.tokens for e in extents)
    if live > LENGTH_SAMPLE_TOKENS:
        random.Random(seed).shuffle(extents)
        taken, budget = [], LENGTH_SAMPLE_TOKENS
        for extent in extents:
            if budget <= 0:
                break
            taken.append(extent)
            budget -= extent.tokens
        extents = taken
    lengths = [extent_lengths(snapshot, e) for e in extents]
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    section = Section("Document lengths", ["documents", "tokens", "min", "median", "mean", "90th %", "99th %", "max"],
                      [])
    if not len(lengths):
        section.note = "no documents in this dataset"
        return section
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    section.rows = [[len(lengths), int(lengths.sum()), int(lengths.min()), p50, float(lengths.mean()), p90, p99,
                     int(lengths.max())]]
    measured = int(lengths.sum())
    section.note = "every live document of both splits" if measured == live else \
        f"a random sample of whole extents: {measured:,} of the {live:,} live tokens"
    section.image = plots.length_histogram(lengths)
    return section


def extent_lengths(snapshot, extent):
    tokens = snapshot.open_tokens(extent.file)[extent.start:extent.end]
    starts = np.flatnonzero(tokens == snapshot.manifest.tokenizer.eot_token)
    return np.diff(np.append(starts, len(tokens)))


def languages(figures, records):
    """Documents read per language (kept or removed), what the filters removed of each, and the live tokens of
    the inputs whose live documents are all of that language."""
    filtered = figures["removed"]["dataset"].get("languages", {})
    codes = list(figures["languages"]) + [c for c in filtered if c not in figures["languages"]]
    live = live_tokens_by_language(records.values())
    rows = [[code, figures["languages"].get(code, 0), *removed_cells(filtered.get(code, {})), live.get(code, 0)]
            for code in codes]
    section = Section("Languages", ["language", "documents read", "filtered documents", "filtered bytes",
                                    "filtered tokens", "live tokens"], rows)
    if not rows:
        section.note = "no language ID in this dataset's builds (build with --languages to record it)"
        return section
    section.note = ("documents read counts every document language ID saw, kept or removed; live tokens are those "
                    "of the inputs whose live documents are all of one language (a document's split is not "
                    "recorded, so a mixed input's tokens are not told apart)")
    shown = top(rows, TOP_LANGUAGES, "languages")
    section.image = plots.horizontal_bars([r[0] for r in shown],
                                          [("not filtered", [r[1] - r[2] for r in shown], plots.TRAIN),
                                           ("filtered", [r[2] for r in shown], plots.REMOVED)], "documents")
    if MIXED in live:
        rows.append([MIXED, "", "", "", "", live[MIXED]])
    return section


def live_tokens_by_language(records):
    """{language: live tokens} of the inputs whose live documents are all of that language (language ID records
    each document's language by position), and under MIXED those of the inputs that mix languages."""
    found = collections.Counter()
    for record in records:
        packed = record.get("dedup", {}).get("languages")
        tokens = sum(record["tokens"].values())
        if packed and tokens:
            gone = {doc["at"] for doc in record["dedup"].get("removed", [])}
            codes = {code for at, (code, _) in enumerate(unpack_languages(packed)) if at not in gone}
            found[codes.pop() if len(codes) == 1 else MIXED] += tokens
    return found


def removed_cells(totals):
    return [totals.get(k, 0) for k in ("documents", "bytes", "tokens")]


def removed(figures, options):
    """What dedup, decontamination and each filter rule removed from the dataset, as `prepare info` counts it."""
    totals = figures["removed"]["dataset"]
    rows = [[kind, *removed_cells(totals.get(kind, {}))] for kind in KINDS]
    rows += [[f"filtered: {rule}", *removed_cells(t)] for rule, t in totals.get("rules", {}).items()]
    section = Section("Removed", ["removed as", "documents", "bytes", "tokens"], rows)
    notes = {"contaminated documents by task": totals.get("tasks"), "addresses redacted": totals.get("redacted")}
    section.note = "; ".join(f"{what}: {', '.join(f'{k} {n:,}' for k, n in found.items())}"
                             for what, found in notes.items() if found)
    if not any(row[1] for row in rows):
        screens = [o for o in ("dedup", "decontaminate", "filter", "languages") if options.get(o)]
        nothing = "nothing removed" + (f" by {', '.join(screens)}" if screens else
                                       " (built without --dedup, --decontaminate, --filter or --languages)")
        section.note = "; ".join(filter(None, [nothing, section.note]))
        return section
    shown = sorted((row for row in rows if row[1] and not (row[0] == "filtered" and len(rows) > len(KINDS))),
                   key=lambda row: -row[3])
    section.image = plots.horizontal_bars([row[0] for row in shown],
                                          [("tokens removed", [row[3] for row in shown], plots.REMOVED)], "tokens")
    return section


def generations(data_dir, manifest):
    """Train and val sizes of each generation the dataset still keeps (garbage collection drops old ones)."""
    folder = os.path.join(data_dir, fmt.GENERATIONS)
    names = [re.fullmatch(r"g(\d{6,})\.json", n) for n in (os.listdir(folder) if os.path.isdir(folder) else [])]
    kept = sorted(int(m[1]) for m in names if m)
    manifests = {manifest.generation: manifest}
    for generation in kept:
        if generation not in manifests:
            try:
                manifests[generation] = fmt.read_manifest_file(fmt.generation_path(data_dir, generation))
            except fmt.DatasetError:  # collected by a prepare since we listed the folder
                continue
    rows = [[g, m.tokens("train"), m.tokens("val"), m.documents["train"], m.documents["val"]]
            for g, m in sorted(manifests.items())]
    section = Section("Generations", ["generation", "train tokens", "val tokens", "train documents",
                                      "val documents"], rows)
    section.note = (f"{len(rows)} generation{'s' * (len(rows) != 1)} kept in {fmt.GENERATIONS}/: gc keeps the one in "
                    f"force and those a training run pins or reads")
    section.image = plots.generation_lines([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    return section
