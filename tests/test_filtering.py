"""Document filters in a build: on a crafted corpus, exactly the documents the rules and language ID condemn are
dropped and recorded with rule, value and threshold; addresses are redacted before tokenizing; info and `prepare
filtered` show it; a change of option needs --rebuild; a rerun filters only new inputs; a killed build and a
cluster job give the dataset one build gives."""

import json
import os
import random
import shutil
import signal
import time

import pytest

from conftest import documents, prepare, prepare_process, sources, write
from prepare import format as fmt
from prepare.filtering import unpack_languages
from prepare.filters import first_failed, rules_of
from prepare.filters.language import LanguageID
from prepare.filters.redact import redact

WORDS = ("river garden window market letter morning teacher village bridge winter summer doctor kitchen station "
         "forest mountain painter engine harbor library student picture country evening farmer journey silver "
         "candle meadow thunder orchard castle lantern sailor weather pocket basket ladder mirror pillow wheel "
         "bottle button carpet cellar chimney cottage dragon feather finger flower garage hammer helmet island "
         "jacket kettle lemon magnet needle ocean parrot pepper planet rabbit ribbon saddle shadow shovel spider "
         "stable tiger tunnel valley violin wagon walnut whistle yellow").split()
STOP = "the and of to that is with have from this".split()
VERBS = "walked found carried painted opened watched followed built crossed remembered".split()
GERMAN = ("Der alte Mann ging jeden Morgen mit seinem Hund durch den Wald und sah die Sonne über den Bergen aufgehen. "
          "Die Kinder spielten im Garten, während ihre Mutter in der Küche das Mittagessen vorbereitete. ")
FILTERS = ["--filter", "gopher,c4,fineweb", "--languages", "en", "--redact", "email,ip", "--val-fraction", 0.5,
           "--workers", 1]
SETS = ["gopher", "c4", "fineweb"]


def prose(rng, sentences=12):
    """English prose that every rule keeps: varied words, stop words, sentences ending in full stops."""
    def sentence():
        w = lambda: rng.choice(WORDS)  # noqa: E731
        verb, stop = rng.choice(VERBS), rng.choice(STOP)
        return f"The {w()} {verb} {stop} {w()} {w()} and the {w()} {rng.choice(VERBS)} with a {w()} {w()}."
    return "\n".join(" ".join(sentence() for _ in range(3)) for _ in range(sentences // 3))


def crafted(rng):
    """An input's documents, each with the rule that drops it (None: kept), one per rule tried."""
    listing = "\n".join(" ".join(rng.sample(WORDS, 3)) for _ in range(30))
    return [
        (prose(rng), None),
        (" ".join(prose(rng, 3).split()[:30]), "gopher.min_words"),
        (prose(rng) + "\nThe function { returns the value }.", "c4.curly_bracket"),
        (prose(rng) + "\nLorem ipsum dolor sit amet.", "c4.lorem_ipsum"),
        (prose(rng, 6) + "\n" + listing, "fineweb.line_punct_ratio"),
        (prose(rng) + "\nClick here to accept all cookies on this site." * 8, "gopher.dup_lines"),
        (GERMAN * 4, "language"),
        (prose(rng) + "\nWrite to jane.doe@mail.com or 8.8.8.8, and to joe@work.net for more.", None),
    ]


def jsonl(path, texts):
    return write(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))


def removed(data_dir):
    return {(r["id"], d["at"]): d for r in sources(data_dir) for d in r.get("dedup", {}).get("removed", [])}


def strip(record):
    """An input's record less what names this build's files and run."""
    kept = {k: v for k, v in record.items() if k not in ("ranges", "tail")}
    return kept | {"dedup": {**record["dedup"], "stamp": None}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Three crafted inputs built with every filter, language ID and redaction: (root, {input: [(text, rule)]})."""
    root = tmp_path_factory.mktemp("filtering")
    rng, inputs = random.Random(46), {}
    for i in range(3):
        docs = crafted(rng)
        inputs[jsonl(root / "in" / f"{i}.jsonl", [t for t, _ in docs])] = docs
    prepare("build", root / "in", "--out", root / "data", *FILTERS)
    return root, inputs


def test_the_build_drops_exactly_the_condemned_documents_with_rule_value_and_threshold(built):
    root, inputs = built
    data, rules, model = root / "data", rules_of(SETS, {}), LanguageID()
    gone = removed(data)
    assert {k: d["rule"] for k, d in gone.items()} == {(i, at): rule for i, docs in inputs.items()
                                                       for at, (_, rule) in enumerate(docs) if rule}
    for (i, at), doc in gone.items():
        text = inputs[i][at][0]
        code, score = model.predict(text)
        assert doc["kind"] == "filtered" and doc["language"] == code
        if doc["rule"] == "language":
            assert (code, doc["value"], doc["threshold"]) == ("de", round(score, 6), 0.65)
        else:
            name, value, threshold = first_failed(text, rules)
            assert (doc["rule"], doc["value"], doc["threshold"]) == (name, round(value, 6), threshold)
    kept = [redact(t, ["email", "ip"])[0] for docs in inputs.values() for t, rule in docs if rule is None]
    assert documents(data) == sorted(kept)
    for record in sources(data):
        languages = unpack_languages(record["dedup"]["languages"])
        assert [code for code, _ in languages] == [model.predict(t)[0] for t, _ in inputs[record["id"]]]
        assert all(abs(s - model.predict(t)[1]) <= 5e-4 for (_, s), (t, _) in zip(languages, inputs[record["id"]]))
        assert record["dedup"]["redacted"] == {"email": 2, "ip": 1}


def test_redaction_changes_the_tokens_before_they_are_written(built):
    root, _ = built
    written = "\n".join(documents(root / "data"))
    assert "jane.doe@mail.com" not in written and "8.8.8.8" not in written
    assert written.count("email@example.com") == 3 and written.count("firstname.lastname@example.org") == 3


def test_info_counts_what_each_rule_and_language_removed(built):
    root, inputs = built
    data = root / "data"
    info = json.loads(prepare("info", data, "--json").stdout)
    entries = list(removed(data).values())

    def by(key):
        return {v: {k: sum(d[k] if k != "documents" else 1 for d in entries if d[key] == v)
                    for k in ("documents", "tokens", "bytes")} for v in {d[key] for d in entries}}

    for where in ("dataset", "latest_build"):
        totals = info["removed"][where]
        assert totals["rules"] == by("rule") and totals["languages"] == by("language")
        assert totals["filtered"]["documents"] == len(entries) == 18
        assert totals["redacted"] == {"email": 6, "ip": 3}
    assert info["languages"] == {"en": 21, "de": 3}
    text = prepare("info", data).stdout
    assert "filtered from the dataset: 18 documents" in text and "gopher.min_words 3 documents" in text
    assert "languages of the documents read (kept or removed): en 21, de 3" in text


def test_prepare_filtered_lists_removed_documents_with_rule_value_threshold_and_text(built):
    root, inputs = built
    shown = prepare("filtered", root / "data", "--limit", 50, "--chars", 30).stdout
    for i, docs in inputs.items():
        for at, (text, rule) in enumerate(docs):
            assert (f"{i} #{at} " in shown) == (rule is not None)
    assert "language de (score " in shown and "is not among en" in shown
    assert "gopher.min_words 30 against 50 (language en)" in shown
    one = prepare("filtered", root / "data", "--rule", "c4.lorem_ipsum", "--limit", 2).stdout.splitlines()
    assert len(one) == 4 and all("c4.lorem_ipsum" in line for line in one[0::2])
    assert "Lorem ipsum" not in one[1] and one[1].strip().startswith("The ")


def test_a_changed_filter_needs_rebuild_and_a_rerun_filters_only_new_inputs(built, tmp_path):
    root, _ = built
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    result = prepare("build", root / "in", "--out", data, *FILTERS[:1], "gopher", *FILTERS[2:], ok=False)
    assert "filter ['gopher', 'c4', 'fineweb'] -> ['gopher']" in result.output and "--rebuild" in result.output
    before = sources(data)
    rng = random.Random(7)
    docs = crafted(rng)
    jsonl(tmp_path / "more" / "3.jsonl", [t for t, _ in docs])
    out = prepare("build", root / "in", tmp_path / "more", "--out", data, *FILTERS).stdout
    assert "tokenized 1 inputs (3 unchanged)" in out and "filtered 6;" in out
    after = {r["id"]: r for r in sources(data)}
    assert all(after[r["id"]] == r for r in before), "the inputs built before are not read again"
    new = after[str(tmp_path / "more" / "3.jsonl")]["dedup"]["removed"]
    assert [(d["at"], d["rule"]) for d in new] == [(at, rule) for at, (_, rule) in enumerate(docs) if rule]
    info = json.loads(prepare("info", data, "--json").stdout)["removed"]
    assert info["latest_build"]["filtered"]["documents"] == 6 and info["dataset"]["filtered"]["documents"] == 24
    rebuilt = prepare("build", root / "in", "--out", data, "--filter", "gopher", "--workers", 1, "--rebuild").stdout
    assert "filtered 9;" in rebuilt  # gopher's 2 rules of each input, and the German pages' repetition


def test_a_killed_filtered_build_reruns_to_the_same_dataset(tmp_path):
    rng = random.Random(9)
    for i in range(30):
        jsonl(tmp_path / "in" / f"{i:02d}.jsonl", [t for t, _ in crafted(rng)])
    args = [*FILTERS, "--commit-every", 0]
    prepare("build", tmp_path / "in", "--out", tmp_path / "clean", *FILTERS)
    out = tmp_path / "killed"
    proc = prepare_process("build", tmp_path / "in", "--out", out, *args)
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(out / fmt.MANIFEST)
                                          and fmt.read_manifest(out).generation >= 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(sources(out)) < 30, "the kill lands mid-run"
    prepare("build", tmp_path / "in", "--out", out, *args)
    assert documents(out) == documents(tmp_path / "clean")
    assert [strip(r) for r in sources(out)] == [strip(r) for r in sources(tmp_path / "clean")]


def test_cluster_tasks_filter_their_inputs_and_commit_as_one_build(built, tmp_path):
    root, _ = built
    out = tmp_path / "cluster"
    for task in (1, 0, 2):
        prepare("build", root / "in", "--out", out, *FILTERS, "--tasks", 3, "--task", task)
    prepare("commit", out)
    for split in fmt.SPLITS:
        assert documents(out, split) == documents(root / "data", split)
    assert [strip(r) for r in sources(out)] == [strip(r) for r in sources(root / "data")]
    info = lambda d: json.loads(prepare("info", d, "--json").stdout)  # noqa: E731
    assert info(out)["removed"] == info(root / "data")["removed"] and info(out)["languages"] == {"en": 21, "de": 3}
