"""Datasets under cron: work in proportion to change, immutable files, readers never broken by a prepare
running beside them, progress that survives a kill, Hub datasets as many inputs, and the tools."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, documents, prepare, prepare_process, sources, token_files, write
from prepare import format as fmt
from train.cli import cli as train_cli
from train.data import open_dataset


def jsonl(path, texts, mode="w"):
    return write(path, "".join(json.dumps({"text": t}) + "\n" for t in texts), mode)


def tokenized(result):
    return int(re.search(r"tokenized (\d+) inputs", result.stdout)[1])


def new_tokens(before, after):
    """Tokens in token files that `after` has and `before` had not (bytes written, in tokens)."""
    return sum(len(data) // 2 for name, data in after.items() if name not in before)


@pytest.fixture
def five_jsonl(tmp_path):
    root = tmp_path / "in"
    texts = {f"{n}.jsonl": [f"file {n} record {i}: " + "some words " * (i % 9 + 1) for i in range(60)] for n in "abcde"}
    for name, lines in texts.items():
        jsonl(root / name, lines)
    return root, texts


def test_one_input_of_many_costs_only_its_own_tokens(five_jsonl, tmp_path):
    root, texts = five_jsonl
    out = tmp_path / "out"
    args = ["--out", out, "--shard-tokens", 400, "--compact-at", 1]
    prepare("build", root, *args)
    full = manifest_tokens(out)

    # A record appended to one file: only the new record and the one before it (which may have been cut
    # off mid-write) are tokenized; nothing else is read or written.
    before = token_files(out)
    jsonl(root / "c.jsonl", ["file c, an appended record"], mode="a")
    result = prepare("build", root, *args)
    assert tokenized(result) == 1
    written = new_tokens(before, token_files(out))
    assert 0 < written < 60, f"{written} tokens written for one appended record (a full build is {full})"
    assert all(token_files(out)[n] == b for n, b in before.items() if n in fmt.read_manifest(out).files)
    assert documents(out) == sorted(sum(texts.values(), []) + ["file c, an appended record"])

    # One file changed in the middle: only it is tokenized again.
    before = token_files(out)
    changed = list(texts["b.jsonl"])
    changed[10] = "file b, a record rewritten"
    jsonl(root / "b.jsonl", changed)
    result = prepare("build", root, *args)
    assert tokenized(result) == 1
    assert new_tokens(before, token_files(out)) < full / 4
    # One file deleted: nothing is tokenized, nothing but metadata written.
    before = token_files(out)
    os.remove(root / "e.jsonl")
    result = prepare("build", root, *args)
    assert tokenized(result) == 0 and new_tokens(before, token_files(out)) == 0
    expected = texts["a.jsonl"] + changed + texts["c.jsonl"] + ["file c, an appended record"] + texts["d.jsonl"]
    assert documents(out) == sorted(expected)
    info = json.loads(prepare("info", out, "--json").stdout)
    assert info["dead_tokens"] > 0 and info["generation"] == 4
    prepare("verify", out)


def manifest_tokens(out):
    m = fmt.read_manifest(out)
    return m.tokens("train") + m.tokens("val")


def test_a_published_name_never_holds_other_bytes(five_jsonl, tmp_path):
    root, texts = five_jsonl
    out = tmp_path / "out"
    seen = {}

    def record():
        for name, data in token_files(out).items():
            if not name.endswith(fmt.TMP_SUFFIX):
                assert seen.setdefault(name, data) == data, f"{name} was published with other bytes"

    steps = [
        lambda: None,
        lambda: jsonl(root / "f.jsonl", ["a new file"]),
        lambda: jsonl(root / "a.jsonl", ["a rewritten"] * 3),
        lambda: jsonl(root / "c.jsonl", ["appended"], mode="a"),
        lambda: os.remove(root / "d.jsonl"),
    ]
    for step in steps:
        step()
        prepare("build", root, "--out", out, "--shard-tokens", 300, "--compact-at", 1)
        record()
    prepare("compact", out)
    record()
    assert fmt.read_manifest(out).dead_tokens() == 0
    assert len(seen) > len(token_files(out)), "retired files were collected, and never reborn under their names"


def test_compaction_copies_live_tokens_without_tokenizing(five_jsonl, tmp_path, monkeypatch):
    root, texts = five_jsonl
    out = tmp_path / "out"
    prepare("build", root, "--out", out, "--compact-at", 1)
    os.remove(root / "a.jsonl")
    os.remove(root / "b.jsonl")
    prepare("build", root, "--out", out, "--compact-at", 1)
    kept = documents(out)
    assert fmt.read_manifest(out).dead_tokens() > 0
    from prepare import workers

    monkeypatch.setattr(workers, "tokenize_batch", None)  # compaction must not tokenize
    result = prepare("compact", out)
    assert "live tokens copied" in result.stdout
    m = fmt.read_manifest(out)
    assert m.dead_tokens() == 0 and documents(out) == kept and sum(len(e) for e in m.extents.values()) == len(m.files)
    prepare("verify", out)
    # Records point at the copies: deleting another input after compaction removes exactly its documents.
    os.remove(root / "c.jsonl")
    monkeypatch.undo()
    prepare("build", root, "--out", out, "--compact-at", 1)
    assert documents(out) == sorted(texts["d.jsonl"] + texts["e.jsonl"])
    # Automatic compaction at a threshold.
    os.remove(root / "d.jsonl")
    result = prepare("build", root, "--out", out, "--compact-at", 0.2)
    assert fmt.read_manifest(out).dead_tokens() == 0 and documents(out) == sorted(texts["e.jsonl"])


def test_compaction_cuts_its_files_at_shard_tokens_between_documents(tmp_path):
    rng = np.random.default_rng(0)
    texts = {i: " ".join(rng.choice("red green blue cyan black white".split(), 90 + 7 * i)) for i in range(30)}
    for i, text in texts.items():
        write(tmp_path / "c" / f"{i:02d}.txt", text)
    out = tmp_path / "out"
    prepare("build", tmp_path / "c", "--out", out, "--compact-at", 1, "--val-fraction", 0.01)  # one file, one extent
    for i in range(0, 30, 4):
        os.remove(tmp_path / "c" / f"{i:02d}.txt")
    prepare("build", tmp_path / "c", "--out", out, "--compact-at", 1, "--val-fraction", 0.01)
    kept = documents(out)
    assert max(e.tokens for e in fmt.read_manifest(out).extents["train"]) > 800
    prepare("compact", out, "--shard-tokens", 800)
    m = fmt.read_manifest(out)
    longest_document = max(len(t.split()) for t in texts.values()) * 2 + 1
    assert m.dead_tokens() == 0 and documents(out) == kept and len(m.files) > 3
    assert all(f.tokens <= 800 for f in m.files.values()) and longest_document < 800
    prepare("verify", out)
    # Records point at the copies, also where an input's documents were cut between two files.
    for i in (1, 13, 29):
        os.remove(tmp_path / "c" / f"{i:02d}.txt")
    prepare("build", tmp_path / "c", "--out", out, "--compact-at", 1, "--val-fraction", 0.01)
    expected = sorted(t for i, t in texts.items() if i % 4 and i not in (1, 13, 29))
    assert documents(out) == expected


def test_a_dataset_copied_without_its_leases_trains_and_gc_leaves_a_stray_file(dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns(fmt.LEASES))
    snapshot, splits = open_dataset(copy, 32)  # the reader makes the missing lease of the generation in force
    assert splits["train"].windows and os.path.exists(fmt.lease_path(copy, snapshot.manifest.generation))
    snapshot.close()
    write(copy / fmt.LEASES / "README", "not a lease")
    prepare("gc", copy)
    assert os.path.exists(copy / fmt.LEASES / "README")


def test_a_reader_keeps_its_snapshot_while_prepare_changes_and_collects(five_jsonl, tmp_path):
    from train.evaluate import all_windows

    root, texts = five_jsonl
    out = tmp_path / "out"
    prepare("build", root, "--out", out, "--val-fraction", 0.2)
    reader, splits = open_dataset(out, 16)
    before = [w.copy() for w in all_windows(splits["val"])]
    old_files = set(reader.manifest.files)
    for name in "abcd":
        os.remove(root / f"{name}.jsonl")
    jsonl(root / "z.jsonl", ["entirely new"] * 50)
    proc = prepare_process("build", root, "--out", out, "--val-fraction", 0.2, "--compact-at", 0)
    assert proc.wait(120) == 0, proc.stderr.read()
    assert prepare_process("gc", out).wait(60) == 0
    assert old_files & set(os.listdir(out / fmt.TOKENS)) == old_files, "files of a leased generation stay"
    assert all(np.array_equal(a, b) for a, b in zip(before, all_windows(splits["val"])))
    reader.close()
    result = prepare("gc", out)
    assert not old_files & set(os.listdir(out / fmt.TOKENS)), "collected once the reader is gone"
    assert "files removed" in result.stdout


def test_training_runs_to_its_end_while_prepare_rewrites_the_dataset(dataset, stdlib_sources, vocabulary, tmp_path):
    """A fit logs the same losses on a dataset prepare is changing as on a frozen copy of it."""
    live, frozen = tmp_path / "live", tmp_path / "frozen"
    shutil.copytree(dataset, live)
    shutil.copytree(dataset, frozen)
    corpus = tmp_path / "corpus"
    shutil.copytree(stdlib_sources, corpus)
    args = ["--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32, "--batch-size", 8, "--no-compile",
            "--device", "cpu", "--no-samples", "--eval-windows", 16, "--max-steps", 100, "--eval-every", 25]
    env = {**os.environ, "PYTHONPATH": REPO}
    fit = subprocess.Popen([sys.executable, "-m", "train", "fit", "--data", live, "--out", tmp_path / "run", *map(str, args)],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.01)
    fit.send_signal(signal.SIGSTOP)  # paused mid-run: every change below lands while it runs, however fast it is
    names = sorted(os.listdir(corpus))
    changes = [
        lambda: shutil.copy(corpus / names[0], corpus / "added.py"),
        lambda: write(corpus / names[1], "changed\n" * 100),
        lambda: os.remove(corpus / names[2]),
    ]
    for change in changes:  # add, change, delete, then compact and collect, all while the fit runs
        change()
        prepare("build", corpus, "--out", live, "--encoding", vocabulary, "--shard-tokens", 20_000, "--val-fraction", 0.1,
                "--compact-at", 0)
    prepare("gc", live)
    assert len(open(tmp_path / "run" / "metrics.jsonl").readlines()) < 100, "the changes must land while the fit runs"
    fit.send_signal(signal.SIGCONT)
    out, err = fit.communicate(timeout=300)
    assert fit.returncode == 0, err
    result = CliRunner().invoke(train_cli, ["fit", "--data", str(frozen), "--out", str(tmp_path / "frozen_run"), *map(str, args)])
    assert result.exit_code == 0, result.output

    def losses(run):
        return [(m["loss"], m.get("val_loss")) for m in map(json.loads, open(run / "metrics.jsonl"))]

    assert losses(tmp_path / "run") == losses(tmp_path / "frozen_run")
    assert fmt.read_manifest(live).generation > fmt.read_manifest(frozen).generation


def test_a_killed_build_keeps_what_it_committed(tmp_path):
    root = tmp_path / "in"
    for i in range(300):
        jsonl(root / f"{i:03d}.jsonl", [f"input {i} record {j} " + "text " * 50 for j in range(40)])
    out = tmp_path / "out"
    proc = prepare_process("build", root, "--out", out, "--commit-every", 0, "--workers", 1)
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(out / fmt.MANIFEST) and fmt.read_manifest(out).generation >= 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = len(sources(out))
    assert 0 < committed < 300, "the kill must land mid-run, after some commits"
    prepare("verify", out)
    result = prepare("build", root, "--out", out, "--commit-every", 0)
    assert tokenized(result) == 300 - committed, "the rerun tokenizes only what was not committed"
    assert len(documents(out)) == 300 * 40
    assert set(token_files(out)) == set(fmt.read_manifest(out).files), "debris of the kill is collected"


def test_a_bad_input_mid_run_keeps_what_was_committed(tmp_path):
    root = tmp_path / "in"
    for name in "abcde":
        jsonl(root / f"{name}.jsonl", [f"{name} {i}" for i in range(20)])
    write(root / "c.jsonl", '{"text": "fine"}\n{"text": broken\n')
    out = tmp_path / "out"
    result = prepare("build", root, "--out", out, "--commit-every", 0, ok=False)
    assert f"{root / 'c.jsonl'}:2" in result.stderr and result.stderr.count("\n") == 1
    assert [os.path.basename(s["id"]) for s in sources(out)] == ["a.jsonl", "b.jsonl"]
    prepare("verify", out)
    result = prepare("build", root, "--out", out, "--commit-every", 0, "--skip-bad-records")
    assert tokenized(result) == 3
    assert len(documents(out)) == 4 * 20 + 1


# Hugging Face Hub datasets, offline: the Hub's API answers from local files.


class FakeHub:
    """A Hub dataset repository with data files under data/, at a revision that changes on each commit."""

    def __init__(self, root):
        self.root, self.revision, self.blobs = root, 0, {}

    def commit(self, files):
        self.revision += 1
        for path, rows in files.items():
            import pyarrow as pa
            import pyarrow.parquet as pq

            local = self.root / f"r{self.revision}" / path
            os.makedirs(local.parent, exist_ok=True)
            pq.write_table(pa.Table.from_pylist([{"text": t} for t in rows]), local)
            self.blobs[path] = (fmt.sha256_file(local)[:40], str(local))

    def install(self, monkeypatch):
        import datasets
        import huggingface_hub

        hub = self
        sha = lambda: f"{hub.revision:040d}"
        monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, name: types.SimpleNamespace(sha=sha()))
        monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", lambda self, name, paths, **kw: [
            types.SimpleNamespace(path=p, blob_id=hub.blobs[p][0], size=os.path.getsize(hub.blobs[p][1])) for p in paths])
        monkeypatch.setattr(datasets, "load_dataset_builder", lambda name, config, revision: types.SimpleNamespace(
            config=types.SimpleNamespace(data_files={"train": [f"hf://datasets/{name}@{revision}/{p}" for p in sorted(hub.blobs)]})))
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda name, path, **kw: hub.blobs[path][1])


def test_a_hub_dataset_is_its_data_files(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub")
    shards = {f"data/train-{i}.parquet": [f"shard {i} row {j} " + "word " * 20 for j in range(30)] for i in range(4)}
    hub.commit(shards)
    hub.install(monkeypatch)
    out = tmp_path / "out"
    result = prepare("build", "hf:someone/stories", "--out", out)
    assert tokenized(result) == 4 and documents(out) == sorted(sum(shards.values(), []))
    assert {s["path_in_repo"] for s in sources(out)} == set(shards)

    hub.commit({})  # a commit that touches no data file (a README edit)
    assert "up to date" in prepare("build", "hf:someone/stories", "--out", out).stdout
    hub.commit({"data/train-2.parquet": ["replaced"]})
    result = prepare("build", "hf:someone/stories", "--out", out)
    assert tokenized(result) == 1
    assert documents(out) == sorted(shards["data/train-0.parquet"] + shards["data/train-1.parquet"] + ["replaced"] + shards["data/train-3.parquet"])


def test_max_tokens_of_a_hub_dataset_is_a_choice_of_files(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub")
    shards = {f"data/train-{i}.parquet": [f"shard {i} row {j} " + "word " * 20 for j in range(30)] for i in range(5)}
    hub.commit(shards)
    hub.install(monkeypatch)
    out = tmp_path / "out"
    per_file = None
    for workers in (1, 2):  # the choice does not depend on how many documents are in flight
        shutil.rmtree(out, ignore_errors=True)
        prepare("build", "hf:someone/stories", "--out", out, "--max-tokens", 1500, "--workers", workers)
        chosen = sorted(s["path_in_repo"] for s in sources(out))
        per_file = per_file or sum(sum(s["tokens"].values()) for s in sources(out)) / len(chosen)
        assert chosen == sorted(shards)[: len(chosen)] and 1 < len(chosen) < 5
        assert all(s["max_tokens"] == 1500 for s in sources(out))
        assert manifest_tokens(out) >= 1500 > manifest_tokens(out) - per_file, "the fewest whole files that reach the cap"
    assert "up to date" in prepare("build", "hf:someone/stories", "--out", out, "--max-tokens", 1500).stdout
