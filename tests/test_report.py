"""`prepare report`: the page is written, is well-formed HTML holding every section with a PNG inside it, and its
tables give `prepare info`'s numbers, the token files' documents and each generation kept; an empty section says
why; a missing dataset is one error line."""

import base64
import html.parser
import json
import random

import pytest

from conftest import prepare, sources
from prepare import format as fmt
from prepare.filtering import pack_languages
from prepare.report import sections
from test_filtering import crafted, jsonl

TITLES = ["Tokens by input", "Document lengths", "Languages", "Removed", "Generations"]
OPTIONS = ["--filter", "gopher,c4,fineweb", "--languages", "en", "--redact", "email,ip", "--dedup", "exact",
           "--val-fraction", 0.5, "--workers", 1]
VOID = {"meta", "img", "br"}


class Page(html.parser.HTMLParser):
    """The sections of a report: {title: {"image": src, "note": text, "rows": [[cell]]}}, checking that every
    element opened is closed in order."""

    def __init__(self, text):
        super().__init__()
        self.open, self.sections, self.section = [], {}, None
        self.feed(text)
        self.close()
        assert not self.open, f"unclosed {self.open}"

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.open.append(tag)
        if tag == "section":
            self.section = {"image": None, "note": "", "rows": []}
        elif tag == "img":
            self.section["image"] = dict(attrs)["src"]
        elif tag == "tr":
            self.section["rows"].append([])

    def handle_endtag(self, tag):
        assert self.open.pop() == tag, f"</{tag}> closes another element"

    def handle_data(self, data):
        inner = self.open[-1] if self.open else None
        if inner == "h2":
            self.sections[data] = self.section
        elif inner == "p" and self.section is not None:
            self.section["note"] += data
        elif inner == "td":
            self.section["rows"][-1].append(number(data))


def number(cell):
    try:
        return float(cell.replace(",", "")) if "." in cell else int(cell.replace(",", ""))
    except ValueError:
        return cell


def read_page(path):
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>")
    page = Page(text).sections
    assert list(page) == TITLES
    return page


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """Two builds of crafted inputs (with every filter, language ID and dedup), the first generation pinned as a
    run following the dataset would, a report after each: (data dir, the second report's path)."""
    root = tmp_path_factory.mktemp("report")
    rng, data = random.Random(46), root / "data"
    jsonl(root / "in" / "0.jsonl", [t for t, _ in crafted(rng)])
    prepare("build", root / "in", "--out", data, *OPTIONS)
    first = prepare("report", data).stdout
    assert first.startswith(f"wrote {data / 'report.html'} (") and first.rstrip().endswith(
        "sections tokens by input, document lengths, languages, removed, generations")
    fmt.pin(data, "follower", str(root / "run"), 1)
    jsonl(root / "in" / "1.jsonl", [t for t, _ in crafted(rng)] * 2)  # the second copy of each: exact duplicates
    prepare("build", root / "in", "--out", data, *OPTIONS)  # report.html in the dataset directory is no stray file
    prepare("report", data, "--out", root / "page.html")
    return data, root / "page.html"


def test_every_section_has_its_heading_and_a_png(reported):
    _, path = reported
    for title, section in read_page(path).items():
        assert section["image"].startswith("data:image/png;base64,"), title
        assert base64.b64decode(section["image"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n"), title


def test_the_tables_give_info_figures_and_the_token_files_documents(reported):
    data, path = reported
    page, info = read_page(path), json.loads(prepare("info", data, "--json").stdout)
    removed = info["removed"]["dataset"]
    rows = {row[0]: row[1:] for row in page["Removed"]["rows"][1:]}
    assert rows == {**{kind: [removed[kind][k] for k in ("documents", "bytes", "tokens")] for kind in
                       ("exact", "near", "contaminated", "filtered")},
                    **{f"filtered: {rule}": [t["documents"], t["bytes"], t["tokens"]]
                       for rule, t in removed["rules"].items()}}
    assert rows["exact"][0] > 0 and len(removed["rules"]) >= 5
    assert removed["redacted"] == {"email": 6, "ip": 3}
    assert page["Removed"]["note"] == "addresses redacted: email 6, ip 3"
    languages = {row[0]: row[1:] for row in page["Languages"]["rows"][1:]}
    splits = info["splits"]
    live = sum(s["tokens"] for s in splits.values())
    assert languages == {code: [n, *(removed["languages"][code][k] for k in ("documents", "bytes", "tokens")),
                                live if code == "en" else 0] for code, n in info["languages"].items()}
    lengths = page["Document lengths"]["rows"][1]
    assert lengths[:2] == [sum(s["documents"] for s in splits.values()), live]
    assert page["Tokens by input"]["rows"][1:] == sorted(
        ([r["id"], r["tokens"]["train"], r["tokens"]["val"], sum(r["documents"].values())] for r in sources(data)),
        key=lambda row: (-row[1] - row[2], row[0]))
    generations = [fmt.read_manifest_file(fmt.generation_path(data, g)) for g in (1, 2)]
    assert page["Generations"]["rows"][1:] == [[m.generation, m.tokens("train"), m.tokens("val"),
                                                m.documents["train"], m.documents["val"]] for m in generations]
    assert generations[1].tokens("train") > generations[0].tokens("train")


def test_past_the_budget_the_lengths_are_those_of_a_sample_of_whole_extents(reported, monkeypatch):
    data, _ = reported
    monkeypatch.setattr(sections, "LENGTH_SAMPLE_TOKENS", 1)
    snapshot = fmt.open_snapshot(data)
    try:
        section = sections.document_lengths(snapshot)
        extents = [e.tokens for split in fmt.SPLITS for e in snapshot.manifest.extents[split]]
    finally:
        snapshot.close()
    assert len(extents) > 1 and section.rows[0][1] in extents
    measured = section.rows[0][1]
    assert section.note == f"a random sample of whole extents: {measured:,} of the {sum(extents):,} live tokens"


def test_a_dataset_without_screens_says_so_and_a_missing_one_is_one_error_line(tmp_path):
    jsonl(tmp_path / "in" / "a.jsonl", ["One short story about a cat.", "Another one about a dog."])
    prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--workers", 1)
    page = read_page(prepare("report", tmp_path / "data").stdout.split()[1])
    assert page["Languages"]["note"] == "no language ID in this dataset's builds (build with --languages to record it)"
    assert page["Languages"]["image"] is None and page["Removed"]["image"] is None
    assert page["Removed"]["note"].startswith("nothing removed (built without --dedup")
    for missing in (tmp_path / "nowhere", tmp_path / "in"):
        result = prepare("report", missing, ok=False)
        assert result.output.count("\n") == 1 and result.output.startswith(f"error: {missing}: no ")


def test_live_tokens_go_to_the_one_language_of_an_input_else_to_the_mixed_inputs():
    def record(tokens, codes, removed_at=()):
        return {"tokens": {"train": tokens, "val": 1}, "dedup": {
            "languages": pack_languages(codes, [0.9] * len(codes)), "removed": [{"at": at} for at in removed_at]}}

    records = [record(10, ["en", "de", "en"], removed_at=[1]), record(4, ["en", "de"]), record(6, ["de"]),
               {"tokens": {"train": 3, "val": 0}, "dedup": {}}]
    assert sections.live_tokens_by_language(records) == {"en": 11, sections.MIXED: 5, "de": 7}
