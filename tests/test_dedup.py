"""Clean corpora: exact and near duplicates and contaminated documents dropped before they are written, by
the rules of docs/dedup.md, incrementally, under a kill, beside gc and a cluster job; and shown."""

import json
import os
import random
import signal
import time

import numpy as np
import pytest

from conftest import documents, prepare, prepare_process, sources, token_files, write
from prepare import dedup, format as fmt
from prepare.workers import is_val
from train.downstream import decontamination_notes


def words_of(text):
    return text.lower().split()


def true_jaccard(a, b):
    """Jaccard similarity of the word 5-gram sets, computed here independently of prepare."""
    x = {tuple(a[i : i + 5]) for i in range(len(a) - 4)}
    y = {tuple(b[i : i + 5]) for i in range(len(b) - 4)}
    return len(x & y) / len(x | y)


def jsonl(path, texts):
    return write(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))


def removed(data_dir):
    """{(input id, position): removal entry} over the live records."""
    return {(r["id"], d["at"]): d for r in sources(data_dir) for d in r.get("dedup", {}).get("removed", [])}


VOCABULARY = [f"w{i}" for i in range(4000)]


def random_document(rng, length=200):
    return " ".join(rng.choice(VOCABULARY) for _ in range(length))


def edited(rng, text, rate):
    """`text` with a share `rate` of its words replaced by random words."""
    words = text.split()
    for k in rng.sample(range(len(words)), round(rate * len(words))):
        words[k] = rng.choice(VOCABULARY)
    return " ".join(words)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A JSONL corpus of originals each followed by a copy edited at a known rate (true Jaccard from 0.3 to 1),
    and unrelated look-alikes (the same vocabulary and length): built with --dedup near."""
    rng = random.Random(38)
    texts, pairs = [], []
    for k in range(700):
        original = random_document(rng)
        copy = edited(rng, original, rng.choice([0, 0.005, 0.01]) if k < 100 else rng.uniform(0.01, 0.12))
        pairs.append((len(texts), len(texts) + 1, true_jaccard(original.split(), copy.split())))
        texts += [original, copy]
    texts += [random_document(rng) for _ in range(100)]
    root = tmp_path_factory.mktemp("planted")
    jsonl(root / "in" / "corpus.jsonl", texts)
    prepare("build", root / "in", "--out", root / "data", "--dedup", "near", "--val-fraction", 0.1, "--workers", 1)
    return root, texts, pairs


def test_near_copies_are_removed_by_the_curve_the_docs_print(planted):
    root, texts, pairs = planted
    path = str(root / "in" / "corpus.jsonl")
    dropped = {at for (source, at) in removed(root / "data") if source == path}
    assert all(a not in dropped for a, _, _ in pairs), "the first copy, in input order, is kept"
    high = [b for _, b, j in pairs if j >= 0.9]
    assert len(high) > 80 and all(b in dropped for b in high), "every copy with true Jaccard >= 0.9 is removed"
    low = [b for _, b, j in pairs if j < 0.5] + list(range(2 * len(pairs), len(texts)))
    assert len(low) > 100 and not dropped & set(low), "no document whose best match is below 0.5 is removed"
    # Between: each bin's removed share is the combined curve's (LSH candidate, then the estimate >= T)
    # averaged over the bin's pairs, within binomial noise.
    for lo in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85):
        hi = {0.7: 0.75, 0.75: 0.8, 0.8: 0.85, 0.85: 0.9}.get(lo, lo + 0.1)
        members = [(b, j) for _, b, j in pairs if lo <= j < hi]
        expected = np.array([dedup.removal_probability(j) for _, j in members])
        observed = sum(b in dropped for b, _ in members)
        noise = 3 * np.sqrt((expected * (1 - expected)).sum()) + 2
        assert len(members) >= 20 and abs(observed - expected.sum()) <= noise, (lo, hi, len(members), observed, expected.sum())
        print(f"true Jaccard [{lo}, {hi}): {len(members)} copies, {observed} removed, {expected.sum():.1f} expected")
    # What is recorded and shown: an estimate near the truth, the twin, the sizes.
    for (_, at), doc in removed(root / "data").items():
        assert doc["kind"] == ("exact" if texts[at] == texts[at - 1] else "near")
        assert doc["twin"][2] == at - 1 and doc["jaccard"] >= dedup.DUPLICATE_JACCARD
        assert abs(doc["jaccard"] - true_jaccard(texts[at].split(), texts[at - 1].split())) < 0.2
        assert doc["bytes"] == len(texts[at].encode())
    assert documents(root / "data") == sorted(t for k, t in enumerate(texts) if k not in dropped)


def test_info_and_dups_show_what_was_removed(planted):
    root, texts, _ = planted
    data = root / "data"
    info = json.loads(prepare("info", data, "--json").stdout)
    entries = list(removed(data).values())
    for kind in ("exact", "near"):
        mine = [d for d in entries if d["kind"] == kind]
        totals = {"documents": len(mine), "tokens": sum(d["tokens"] for d in mine), "bytes": sum(d["bytes"] for d in mine)}
        assert info["removed"]["dataset"][kind] == info["removed"]["latest_build"][kind] == totals and mine
    m = fmt.read_manifest(data)
    kept = m.tokens("train") + m.tokens("val")
    assert sum(r["tokens"]["train"] + r["tokens"]["val"] for r in sources(data)) == kept
    assert "near {:,} documents".format(sum(d["kind"] == "near" for d in entries)) in prepare("info", data).stdout
    shown = prepare("dups", data, "--show", 3, "--lines", 2).stdout
    blocks = [line for line in shown.splitlines() if "removed as a twin of" in line]
    assert len(blocks) == 3
    for line in blocks:
        at = int(line.split(" #")[1].split()[0])
        truth = true_jaccard(texts[at].split(), texts[at - 1].split())
        assert f"true {truth:.3f}" in line, (line, truth)
    assert texts[1][:40] in shown or texts[3][:40] in shown


def test_exact_dedup_normalises_case_and_whitespace_only(tmp_path):
    base = "The Quick brown fox\n  jumps over the lazy dog."
    texts = [base, base.lower(), "the quick brown fox jumps   over the lazy dog.", "The quick brown fox jumps over the lazy dog!",
             "something else entirely", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG."]
    jsonl(tmp_path / "in" / "a.jsonl", texts)
    prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--dedup", "exact")
    assert documents(tmp_path / "data") == sorted([texts[0], texts[3], texts[4]])
    assert {at: d["kind"] for (_, at), d in removed(tmp_path / "data").items()} == {1: "exact", 2: "exact", 5: "exact"}
    # A near-duplicate (the '!') survives exact dedup; a change of --dedup needs --rebuild.
    result = prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--dedup", "near", ok=False)
    assert "dedup 'exact' -> 'near'" in result.stderr and "--rebuild" in result.stderr and len(result.stderr.splitlines()) == 1
    prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--dedup", "near", "--rebuild")
    assert fmt.read_manifest(tmp_path / "data").options["dedup"] == "near"


def test_nightly_runs_keep_the_copy_in_the_dataset_and_reconsider_orphans(tmp_path):
    rng = random.Random(1)
    a, b, c = (random_document(rng, 300) for _ in range(3))
    root, out = tmp_path / "in", tmp_path / "data"
    args = ["--out", out, "--dedup", "near", "--compact-at", 1]
    write(root / "m.txt", a)
    write(root / "n.txt", b)
    prepare("build", root, *args)
    files = token_files(out)

    # Night 2: a new input with a near copy of a (at 1% edits) and of nothing else; the copy sorts first in
    # input order, but the copy already in the dataset stays: nothing written before is removed.
    write(root / "a_copy.txt", edited(rng, a, 0.01))
    write(root / "z.txt", c)
    result = prepare("build", root, *args)
    assert "removed 0 exact and 1 near" in result.stdout
    assert documents(out) == sorted([a, b, c])
    assert all(token_files(out)[n] == data for n, data in files.items()), "never retroactive"
    (twin,) = [d["twin"] for d in removed(out).values()]
    assert twin[0] == str(root / "m.txt")

    # Night 3: m.txt changes (a gone): the copy dropped because of it is read again, and kept, being first
    # in input order; m.txt's new version is its near twin, and is dropped.
    copy = open(root / "a_copy.txt").read()
    a2 = edited(rng, a, 0.004)
    write(root / "m.txt", a2)
    result = prepare("build", root, *args)
    assert "tokenized 2 inputs" in result.stdout
    assert documents(out) == sorted([copy, b, c])
    assert [d["twin"][0] for d in removed(out).values()] == [str(root / "a_copy.txt")]

    # Night 4: the copy's input deleted: m.txt, dropped as its twin, is read again and kept.
    os.remove(root / "a_copy.txt")
    prepare("build", root, *args)
    assert documents(out) == sorted([a2, b, c]) and removed(out) == {}

    # Night 5: a changed input never matches its own old version.
    b2 = edited(rng, b, 0.004)
    write(root / "n.txt", b2)
    prepare("build", root, *args)
    assert documents(out) == sorted([a2, b2, c]) and removed(out) == {}
    assert "up to date" in prepare("build", root, *args).stdout
    prepare("verify", out)


def test_a_grown_jsonl_file_is_read_again_and_never_matches_itself(tmp_path):
    rng = random.Random(7)
    texts = [random_document(rng, 100) for _ in range(5)]
    path = jsonl(tmp_path / "in" / "r.jsonl", texts)
    prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--dedup", "near")
    copy = edited(rng, texts[1], 0.0)
    write(path, json.dumps({"text": "a record appended"}) + "\n" + json.dumps({"text": copy}) + "\n", mode="a")
    result = prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--dedup", "near")
    assert "tokenized 1 inputs" in result.stdout and "removed 1 exact and 0 near" in result.stdout
    assert documents(tmp_path / "data") == sorted(texts + ["a record appended"])
    assert [(at, d["twin"][0::2]) for (_, at), d in removed(tmp_path / "data").items()] == [(6, [path, 1])]


def test_near_twins_across_train_and_val_keep_the_earlier_copy(tmp_path):
    rng = random.Random(2)
    texts = []
    for _ in range(60):
        original = random_document(rng, 120)
        texts += [original, edited(rng, original, 0.01)]
    jsonl(tmp_path / "in" / "t.jsonl", texts)
    prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--dedup", "near", "--val-fraction", 0.5)
    gone = removed(tmp_path / "data")
    assert {at for _, at in gone} == set(range(1, 120, 2))
    across = [at for (_, at), d in gone.items() if is_val(texts[at].encode(), 0.5) != is_val(texts[at - 1].encode(), 0.5)]
    assert across, "some twins straddle the splits"
    for at in across:  # the earlier copy stays, in whichever split it is
        split = "val" if is_val(texts[at - 1].encode(), 0.5) else "train"
        assert texts[at - 1] in documents(tmp_path / "data", split)
        assert gone[(str(tmp_path / "in" / "t.jsonl"), at)]["split"] != split


def test_a_killed_dedup_build_reruns_to_the_same_dataset(tmp_path):
    rng = random.Random(3)
    root = tmp_path / "in"
    base = [random_document(rng, 150) for _ in range(40)]
    for i in range(30):
        jsonl(root / f"{i:03d}.jsonl", [edited(rng, base[(i * 7 + j) % 40], 0.01) if j % 3 else random_document(rng, 150)
                                        for j in range(20)])
    args = ["--dedup", "near", "--commit-every", 0, "--workers", 1]
    prepare("build", root, "--out", tmp_path / "clean", "--dedup", "near", "--workers", 1)  # one commit: the index in memory
    out = tmp_path / "killed"
    proc = prepare_process("build", root, "--out", out, *args)
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(out / fmt.MANIFEST) and fmt.read_manifest(out).generation >= 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(sources(out)) < 30, "the kill lands mid-run"
    prepare("build", root, "--out", out, *args)
    assert documents(out) == documents(tmp_path / "clean")
    strip = lambda d: {k: v for k, v in d.items() if k != "twin"} | {"twin": d["twin"][0::2]}
    assert {k: strip(d) for k, d in removed(out).items()} == {k: strip(d) for k, d in removed(tmp_path / "clean").items()}
    m = fmt.read_manifest(out)
    assert sorted(os.listdir(out / fmt.INDEX)) == sorted(p[0] for p in m.index), "debris of the kill is collected"
    assert sum(rows for _, rows in m.index) >= sum(m.documents.values())


def test_cluster_tasks_and_commit_equal_a_single_build_beside_gc(tmp_path):
    rng = random.Random(4)
    base = [random_document(rng, 120) for _ in range(30)]
    root = tmp_path / "in"
    inputs = [[edited(rng, base[(i * 5 + j) % 30], 0.01) if j % 2 else random_document(rng, 120) for j in range(10)] for i in range(24)]
    args = ["--dedup", "near", "--val-fraction", 0.2, "--workers", 1]
    single, out = tmp_path / "single", tmp_path / "cluster"
    for i in range(12):
        jsonl(root / f"{i:02d}.jsonl", inputs[i])
    for data in (single, out):
        prepare("build", root, "--out", data, *args)
    for i in range(12, 24):  # the second half: duplicates within a task, across tasks and of the dataset
        jsonl(root / f"{i:02d}.jsonl", inputs[i])
    prepare("build", root, "--out", single, *args)
    for task in (2, 0):
        prepare("build", root, "--out", out, *args, "--tasks", 3, "--task", task)
    prepare("gc", out)
    prepare("build", root, "--out", out, *args, "--tasks", 3, "--task", 1)
    prepare("commit", out)
    for split in fmt.SPLITS:
        assert documents(out, split) == documents(single, split)
    assert removed(out).keys() == removed(single).keys()
    info = lambda d: json.loads(prepare("info", d, "--json").stdout)["removed"]  # noqa: E731
    assert info(out) == info(single)
    prepare("verify", out)
    # The nightly run after the cluster build: a new copy of a kept document is dropped, nothing else read.
    jsonl(root / "zz.jsonl", [base[0], random_document(rng, 120)])
    result = prepare("build", root, "--out", out, *args)
    assert "tokenized 1 inputs" in result.stdout and "removed 0 exact and 1 near" in result.stdout


def test_an_exact_dedup_job_commits_with_tasks_that_wrote_nothing(tmp_path):
    """A task with no document to write hands the commit features as wide as those of the others (none but
    exact keys under --dedup exact), so the job commits as one build of the same inputs."""
    rng = random.Random(7)
    root, out, single = tmp_path / "in", tmp_path / "cluster", tmp_path / "single"
    kept = random_document(rng, 40)
    for i, text in enumerate([kept, kept.upper(), random_document(rng, 40)]):
        write(root / f"{i}.txt", text)
    args = ["--dedup", "exact", "--workers", 1]
    for task in range(6):  # three inputs, six tasks: some have nothing to write
        prepare("build", root, "--out", out, *args, "--tasks", 6, "--task", task)
    prepare("commit", out)
    prepare("build", root, "--out", single, *args)
    assert documents(out) == documents(single) and len(documents(out)) == 2
    assert removed(out).keys() == removed(single).keys()


def test_a_commit_where_a_batch_begins_a_new_input_beside_index_parts(tmp_path, monkeypatch):
    """A commit due where a batch of the main process's reading begins the next input writes the inputs before
    it and no document; with index parts on disk, the screens then look up no document (they failed to)."""
    from prepare import reading

    rng = random.Random(8)
    root, out = tmp_path / "in", tmp_path / "data"
    for i in range(3):
        write(root / f"a{i}.txt", random_document(rng, 60))
    prepare("build", root, "--out", out, "--dedup", "near", "--workers", 1)
    monkeypatch.setattr(reading, "WORKER_READS", 0)  # every input read by the main process...
    monkeypatch.setattr(reading, "BATCH_CHARS", 1)  # ...a document to a batch
    twin = random_document(rng, 60)
    for i, text in enumerate([twin, random_document(rng, 60), twin]):
        write(root / f"b{i}.txt", text)
    result = prepare("build", root, "--out", out, "--dedup", "near", "--workers", 1, "--commit-every", 0)
    assert "tokenized 3 inputs (3 unchanged): 2 documents" in result.stdout and "3 commits" in result.stdout
    assert "removed 1 exact and 0 near" in result.stdout
    assert len(documents(out)) == 5


def test_gc_removes_index_parts_no_generation_names(tmp_path):
    rng = random.Random(5)
    root, out = tmp_path / "in", tmp_path / "data"
    for i in range(6):
        write(root / f"{i}.txt", random_document(rng))
    prepare("build", root, "--out", out, "--dedup", "near")
    write(out / fmt.INDEX / fmt.index_part_name("0123456789ab", 0), "an index part of a build killed before it published")
    named = {p[0] for p in fmt.read_manifest(out).index}
    prepare("gc", out)
    assert set(os.listdir(out / fmt.INDEX)) == named


def write_task_files(cache, hellaswag_items, core_rows):
    """HellaSwag's val JSONL and an eval bundle with one multiple-choice CORE task, in their published formats."""
    write(cache / "hellaswag" / "hellaswag_val.jsonl", "".join(
        json.dumps({"ind": k, "ctx": ctx, "endings": endings, "label": 0, "split": "val"}) + "\n"
        for k, (ctx, endings) in enumerate(hellaswag_items)))
    bundle = cache / "eval_bundle"
    write(bundle / "eval_data" / "code" / "mc.jsonl", "".join(json.dumps(r) + "\n" for r in core_rows))
    write(bundle / "core.yaml", "icl_tasks:\n- label: mc_code\n  dataset_uri: code/mc.jsonl\n  num_fewshot: [0]\n"
          "  icl_task_type: multiple_choice\n  continuation_delimiter: \"\\nAnswer: \"\n")
    write(bundle / "eval_meta_data.csv", "Eval Task,Random baseline\nmc_code,25\n")
    return cache


def test_decontamination_drops_documents_sharing_a_13_gram_with_a_task(tmp_path, monkeypatch):
    rng = random.Random(6)
    ctx = random_document(rng, 20)
    ending = random_document(rng, 10)
    query, choice = random_document(rng, 15), random_document(rng, 3)
    cache = write_task_files(tmp_path / "cache", [(ctx, [ending, "no", "not this", "nor this"])],
                             [{"query": query, "choices": [choice, "other"], "gold": 0}])
    monkeypatch.setenv("GPTMILL_CACHE", str(cache))
    ctx_words, query_words = ctx.split(), query.split()
    texts = {
        "hella.txt": random_document(rng, 50) + " " + " ".join(ctx_words[10:]).upper() + " " + ending + " " + random_document(rng, 50),
        "short.txt": random_document(rng, 50) + " " + " ".join(ctx_words[:12]) + " " + random_document(rng, 50),
        # 13 words across the delimiter: the query's last 10, "answer", the choice's first 2
        "core.txt": " ".join(query_words[5:]) + "\nANSWER: " + choice + " and more text",
        "clean.txt": random_document(rng, 80),
    }
    for name, text in texts.items():
        write(tmp_path / "in" / name, text)
    result = prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--decontaminate", "hellaswag,core")
    assert "0 exact and 0 near duplicates, 2 contaminated" in result.stdout
    assert documents(tmp_path / "data") == sorted([texts["short.txt"], texts["clean.txt"]])
    info = json.loads(prepare("info", tmp_path / "data", "--json").stdout)
    assert info["removed"]["dataset"]["tasks"] == {"hellaswag": 1, "mc_code": 1}
    assert info["options"]["decontaminate"] == ["core", "hellaswag"]
    assert decontamination_notes([tmp_path / "data"], ["hellaswag", "core"]) == []
    prepare("build", tmp_path / "in", "--out", tmp_path / "half", "--decontaminate", "core")
    (note,) = decontamination_notes([tmp_path / "half"], ["hellaswag", "core"])
    assert "not decontaminated against hellaswag " in note
    # Another order of the same suites is the same option; a missing or broken task file is one line.
    assert "up to date" in prepare("build", tmp_path / "in", "--out", tmp_path / "data", "--decontaminate", "core,hellaswag").stdout
    write(cache / "hellaswag" / "hellaswag_val.jsonl", "{not json\n")
    result = prepare("build", tmp_path / "in", "--out", tmp_path / "other", "--decontaminate", "hellaswag", ok=False)
    assert result.stderr.startswith("error: --decontaminate: ") and "hellaswag_val.jsonl:1" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not os.path.exists(tmp_path / "other")
    result = prepare("build", tmp_path / "in", "--out", tmp_path / "other", "--decontaminate", "mmlu", ok=False)
    assert "hellaswag, core" in result.output


def test_dups_on_a_dataset_without_dedup_says_so(tmp_path):
    write(tmp_path / "in" / "a.txt", "one document")
    prepare("build", tmp_path / "in", "--out", tmp_path / "data")
    assert "built without --dedup" in prepare("dups", tmp_path / "data").stdout
    result = prepare("dups", tmp_path / "nowhere", ok=False)
    assert len(result.stderr.splitlines()) == 1 and "no such dataset directory" in result.stderr
