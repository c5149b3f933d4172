"""prepare: round trips, incremental reruns, crash and concurrency safety, verification and bad input."""

import ast
import dataclasses
import fcntl
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time

from pathlib import Path

import click
import numpy as np
import pytest

from conftest import REPO, documents, prepare, prepare_process, snapshot, sources as records, token_files, write
from prepare import format as fmt
from prepare.workers import is_val
from prepare.readers import text as text_reader
from prepare.sources import stdlib_files


def manifest(data_dir):
    return fmt.read_manifest(data_dir)


# Round trips: decoding the shards gives back exactly the input documents.


def test_round_trip_one_document_per_file(corpus, tmp_path):
    root, texts = corpus
    out = tmp_path / "out"
    prepare("build", root, "--out", out, "--workers", 2)
    assert documents(out) == sorted(texts.values())
    m = manifest(out)
    assert m.dtype == "uint16" and m.tokenizer.eot_token == 50256
    assert m.documents["val"] >= 1, "a tiny corpus still gets a val split"
    assert sum(m.documents.values()) == len(texts)
    assert [s["id"] for s in records(out)] == sorted(str(root / n) for n in texts)


def test_round_trip_separators(tmp_path):
    stories = ["Once upon a time.", "A second story\nover two lines.", "Third."]
    eot = write(tmp_path / "eot.txt", "\n<|endoftext|>\n".join(stories) + "\n<|endoftext|>\n")
    prepare("build", eot, "--out", tmp_path / "a", "--doc-sep", "<|endoftext|>")
    assert documents(tmp_path / "a") == sorted(stories)
    blank = write(tmp_path / "blank.txt", "\n\n\n".join(stories) + "\n")
    prepare("build", blank, "--out", tmp_path / "b", "--doc-sep", "blank")
    assert documents(tmp_path / "b") == sorted(stories)


def test_separator_split_is_independent_of_read_chunks(tmp_path, monkeypatch):
    stories = [f"story {i} " + "word " * (i % 7) for i in range(300)]
    path = write(tmp_path / "s.txt", "".join(s + "\n<|endoftext|>\n" for s in stories))
    monkeypatch.setattr(text_reader, "TEXT_CHUNK", 37)  # separators land across chunk boundaries
    prepare("build", path, "--out", tmp_path / "out", "--doc-sep", "<|endoftext|>", "--workers", 1)
    assert documents(tmp_path / "out") == sorted(s.strip() for s in stories)


def test_round_trip_jsonl_parquet_and_datasets(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"text": f"record number {i} ✓", "id": i} for i in range(50)]
    jsonl = write(tmp_path / "in" / "r.jsonl", "".join(json.dumps(r) + "\n" for r in records[:20]))
    with gzip.open(tmp_path / "in" / "r.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in records[20:30])
    pq.write_table(pa.Table.from_pylist(records[30:40]), tmp_path / "in" / "r.parquet")
    prepare("build", str(tmp_path / "in" / "r.*"), "--out", tmp_path / "files")
    assert documents(tmp_path / "files") == sorted(r["text"] for r in records[:40])

    # The same code path that streams Hub datasets, on a local `datasets` directory.
    local = datasets.load_dataset("json", data_files=jsonl, split="train")
    local.save_to_disk(str(tmp_path / "ds"))
    prepare("build", tmp_path / "ds", "--out", tmp_path / "disk")
    assert documents(tmp_path / "disk") == sorted(r["text"] for r in records[:20])

    datasets.DatasetDict({"train": local, "test": local.select(range(3))}).save_to_disk(str(tmp_path / "dd"))
    prepare("build", f"hf:{tmp_path / 'dd'}", "--split", "test", "--out", tmp_path / "dd_out")
    assert documents(tmp_path / "dd_out") == sorted(r["text"] for r in records[:3])
    result = prepare("build", f"hf:{tmp_path / 'dd'}", "--split", "nope", "--out", tmp_path / "x", ok=False)
    assert "no split 'nope'" in result.stderr and "train" in result.stderr


def test_uint32_path(tmp_path):
    """An encoding whose ids exceed 65535 (here a tiktoken plugin: gpt2 with end-of-text at 100000)."""
    write(tmp_path / "plugin" / "tiktoken_ext" / "gptmill_wide.py", (
        "from prepare.tokenizer import load_encoding\n"
        "def wide():\n"
        "    gpt2 = load_encoding('gpt2')\n"
        "    return {'name': 'gpt2_wide', 'pat_str': gpt2._pat_str, 'mergeable_ranks': gpt2._mergeable_ranks,\n"
        "            'special_tokens': {'<|endoftext|>': 100000}}\n"
        "ENCODING_CONSTRUCTORS = {'gpt2_wide': wide}\n"
    ))
    texts = ["first document", "second document, a little longer"]
    for i, t in enumerate(texts):
        write(tmp_path / "c" / f"{i}.txt", t)
    out = tmp_path / "out"
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path / 'plugin'}"}
    proc = prepare_process("build", tmp_path / "c", "--out", out, "--encoding", "gpt2_wide", env=env)
    assert proc.wait() == 0, proc.stderr.read()
    m = manifest(out)
    assert m.dtype == "uint32" and m.tokenizer.vocab_size == 100001
    tokens = np.concatenate([np.fromfile(fmt.token_path(out, name), np.uint32) for name in m.files])
    assert (tokens == 100000).sum() == 2 and tokens.max() == 100000
    proc = prepare_process("verify", out, env=env)
    assert proc.wait() == 0, proc.stderr.read()


def test_info_json(corpus, tmp_path):
    root, texts = corpus
    prepare("build", root, "--out", tmp_path / "out")
    info = json.loads(prepare("info", tmp_path / "out", "--json").stdout)
    assert (info["tokenizer"], info["dtype"], info["vocab_size"], info["eot_token"]) == ("gpt2", "uint16", 50257, 50256)
    assert len(info["sources"]) == info["inputs"] == len(texts)
    m = manifest(tmp_path / "out")
    assert (info["generation"], info["dead_tokens"], info["files"]) == (1, 0, len(m.files))
    for split in fmt.SPLITS:
        assert info["splits"][split] == {
            "tokens": m.tokens(split), "documents": m.documents[split], "extents": len(m.extents[split]),
            "files": sum(f.split == split for f in m.files.values()),
        }
    assert "train" in prepare("info", tmp_path / "out").stdout


# Splits and shards.


def test_val_split_by_document_hash_is_stable(tmp_path):
    docs = [f"document {i}: " + "text " * (i % 13) for i in range(400)]
    for i, d in enumerate(docs[:200]):
        write(tmp_path / "c" / f"{i:03d}.txt", d)
    prepare("build", tmp_path / "c", "--out", tmp_path / "out", "--val-fraction", 0.1)
    val_before = documents(tmp_path / "out", "val")
    assert val_before == sorted(d for d in docs[:200] if is_val(d.encode(), 0.1))
    assert 5 < len(val_before) < 40
    for i, d in enumerate(docs[200:], 200):
        write(tmp_path / "c" / f"{i:03d}.txt", d)
    prepare("build", tmp_path / "c", "--out", tmp_path / "out", "--val-fraction", 0.1)
    val_after = documents(tmp_path / "out", "val")
    assert set(val_before) <= set(val_after), "adding documents never moves one out of val"
    assert val_after == sorted(d for d in docs if is_val(d.encode(), 0.1))


def test_single_document_corpus_gets_val_tail(tmp_path):
    text = "All the world's a stage, and all the men and women merely players. " * 50
    write(tmp_path / "one.txt", text)
    prepare("build", tmp_path / "one.txt", "--out", tmp_path / "out", "--val-fraction", 0.1)
    m = manifest(tmp_path / "out")
    assert m.tokens("val") > 0.05 * (m.tokens("train") + m.tokens("val"))
    assert "".join(documents(tmp_path / "out", "train") + documents(tmp_path / "out", "val")) == text
    prepare("verify", tmp_path / "out")  # the checksum of a file whose last document was taken back: read again


def test_token_files_respect_cap_and_hold_whole_documents(tmp_path):
    docs = [("word " * (i % 50 + 1)).strip() for i in range(300)]
    path = write(tmp_path / "d.txt", "".join(d + "\n\n" for d in docs))
    prepare("build", path, "--out", tmp_path / "out", "--doc-sep", "blank", "--shard-tokens", 500, "--val-fraction", 0.05)
    m = manifest(tmp_path / "out")
    train_files = [f for f in m.files.values() if f.split == "train"]
    assert len(train_files) > 5 and len(m.extents["train"]) == len(train_files)
    for f in train_files:
        assert f.tokens <= 500
        assert os.path.getsize(fmt.token_path(tmp_path / "out", f.name)) == 2 * f.tokens
        assert fmt.sha256_file(fmt.token_path(tmp_path / "out", f.name)) == f.sha256
    assert documents(tmp_path / "out") == sorted(docs)


# Incremental reruns.


def test_rerun_is_byte_identical_noop(corpus, tmp_path):
    root, _ = corpus
    prepare("build", root, "--out", tmp_path / "out")
    before = snapshot(tmp_path / "out")
    result = prepare("build", root, "--out", tmp_path / "out")
    assert "up to date" in result.stdout and "nothing tokenized" in result.stdout
    assert snapshot(tmp_path / "out") == before


def test_touched_but_unchanged_file_is_not_retokenized(corpus, tmp_path):
    root, _ = corpus
    prepare("build", root, "--out", tmp_path / "out")
    before = token_files(tmp_path / "out")
    os.utime(root / "a.txt", ns=(1, 1))
    result = prepare("build", root, "--out", tmp_path / "out")
    assert "tokenized 0 inputs" in result.stdout
    assert token_files(tmp_path / "out") == before
    assert next(s for s in records(tmp_path / "out") if s["id"].endswith("a.txt"))["mtime_ns"] == 1


def test_add_change_delete_inputs(corpus, tmp_path):
    root, texts = corpus
    out = tmp_path / "out"
    prepare("build", root, "--out", out, "--val-fraction", 0.3, "--compact-at", 1)
    old_files = token_files(out)

    write(root / "new.txt", "A brand new document.")
    result = prepare("build", root, "--out", out, "--val-fraction", 0.3, "--compact-at", 1)
    assert "tokenized 1 inputs" in result.stdout
    now = token_files(out)
    assert all(now[n] == b for n, b in old_files.items()), "adding an input leaves existing files as they were"
    assert len(now) > len(old_files)
    assert documents(out) == sorted([*texts.values(), "A brand new document."])

    write(root / "a.txt", "The fox changed its mind.")
    os.remove(root / "sub" / "e.txt")
    result = prepare("build", root, "--out", out, "--val-fraction", 0.3, "--compact-at", 1)
    assert "tokenized 1 inputs" in result.stdout, "the deleted input needs no tokenizing, the changed one does"
    expected = {**texts, "a.txt": "The fox changed its mind.", "new.txt": "A brand new document."}
    del expected["sub/e.txt"]
    assert documents(out) == sorted(expected.values())
    assert [s["id"] for s in records(out)] == sorted(str(root / n) for n in expected)
    assert set(token_files(out)) == set(manifest(out).files), "files no extent needs are collected"
    prepare("verify", out)


def test_changed_options_need_rebuild(corpus, tmp_path):
    root, _ = corpus
    prepare("build", root, "--out", tmp_path / "out")
    before = snapshot(tmp_path / "out")
    result = prepare("build", root, "--out", tmp_path / "out", "--val-fraction", 0.2, ok=False)
    assert "--rebuild" in result.stderr and "val_fraction" in result.stderr
    assert snapshot(tmp_path / "out") == before
    prepare("build", root, "--out", tmp_path / "out", "--val-fraction", 0.2, "--rebuild")
    assert manifest(tmp_path / "out").options["val_fraction"] == 0.2
    assert set(token_files(tmp_path / "out")) == set(manifest(tmp_path / "out").files)


# Crash and concurrency safety, with real processes.


def stdlib_corpus(tmp_path, count):
    """Copies of CPython's own stdlib sources: real text every machine has."""
    files = stdlib_files()[:count]
    for i, f in enumerate(files):
        write(tmp_path / "std" / f"{i:04d}.py", open(f, "rb").read(), mode="wb")
    return tmp_path / "std"


def test_sigkill_midrun_then_rerun_equals_uninterrupted(tmp_path):
    corpus = stdlib_corpus(tmp_path, 600)
    args = ["--shard-tokens", 100_000, "--workers", 2]
    half = sorted(os.listdir(corpus))[:300]
    first = tmp_path / "first"
    os.makedirs(first)
    for name in half:
        os.link(corpus / name, first / name)

    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    for out in (clean, crashed):
        prepare("build", first, "--out", out, *args)
    # Both datasets start from the same manifest; both grow to the full corpus, one killed on the way.
    for name in sorted(os.listdir(corpus))[300:]:
        os.link(corpus / name, first / name)
    previous = snapshot(crashed)
    proc = prepare_process("build", first, "--out", crashed, *args)
    wait_for_shard_beyond(crashed, previous)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert open(crashed / fmt.MANIFEST, "rb").read() == previous[fmt.MANIFEST][0], "the old manifest is intact"
    for name, (data, _) in previous.items():
        assert open(crashed / name, "rb").read() == data, f"{name} changed under a crash"
    prepare("verify", crashed)

    prepare("build", first, "--out", clean, *args)
    prepare("build", first, "--out", crashed, *args)
    a, b = manifest(crashed), manifest(clean)
    assert (a.documents, {s: a.tokens(s) for s in fmt.SPLITS}) == (b.documents, {s: b.tokens(s) for s in fmt.SPLITS})
    assert documents(crashed) == documents(clean)
    assert set(token_files(crashed)) == set(a.files), "debris of the crash is gone"
    prepare("verify", crashed)


def wait_for_shard_beyond(out, previous, timeout=60):
    """Wait until the running prepare has written a new token file, so the kill lands mid-run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(n.endswith(".bin") and f"{fmt.TOKENS}/{n}" not in previous for n in os.listdir(out / fmt.TOKENS)):
            return
        time.sleep(0.002)
    raise AssertionError("prepare published no new shard in time")


def test_concurrent_runs_never_interleave(tmp_path):
    corpus = stdlib_corpus(tmp_path, 200)
    out = tmp_path / "out"
    os.makedirs(out)
    with open(out / fmt.LOCK, "a") as lock:  # another prepare holds the dataset
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = prepare_process("build", corpus, "--out", out)
        assert proc.wait(60) == 1
        assert "another prepare is writing" in proc.stderr.read()
        waiting = prepare_process("build", corpus, "--out", out, "--wait")
        assert "waiting for another prepare" in waiting.stderr.readline()  # said once it blocks on the lock
        assert waiting.poll() is None, "--wait waits for the lock"
    assert waiting.wait(60) == 0, waiting.stderr.read()

    # Two real runs started together: one builds, the other stops or finds the work done.
    import shutil

    shutil.rmtree(out)
    procs = [prepare_process("build", corpus, "--out", out, "--wait") for _ in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    prepare("verify", out)
    assert len(documents(out)) == len(os.listdir(corpus)) - sum(
        not open(corpus / n, "rb").read().strip() for n in os.listdir(corpus)
    )


# verify.


def test_verify_catches_flipped_byte_and_truncation(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    prepare("build", root, "--out", out)
    shard = Path(fmt.token_path(out, manifest(out).extents["train"][0].file))
    original = open(shard, "rb").read()
    with open(shard, "r+b") as f:
        f.seek(5)
        f.write(bytes([original[5] ^ 0xFF]))
    result = prepare("verify", out, ok=False)
    assert shard.name in result.stderr and "checksum" in result.stderr
    with open(shard, "wb") as f:
        f.write(original[:-2])
    result = prepare("verify", out, ok=False)
    assert shard.name in result.stderr and "bytes" in result.stderr
    with open(shard, "wb") as f:
        f.write(original)
    prepare("verify", out)


# Bad input: one clear line, non-zero exit, and the existing output stays as it was.


def test_missing_path_and_empty_glob(tmp_path):
    result = prepare("build", tmp_path / "nope.txt", "--out", tmp_path / "out", ok=False)
    assert "nope.txt" in result.stderr and result.stderr.count("\n") == 1
    result = prepare("build", str(tmp_path / "*.none"), "--out", tmp_path / "out", ok=False)
    assert "no files match" in result.stderr


def test_unreadable_file(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    real_open = os.open  # sources are opened with os.open (non-blocking: a FIFO must not hang the build)

    def deny(path, *args, **kwargs):
        if str(path).endswith("c.py"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    result = prepare("build", root, "--out", tmp_path / "out", ok=False)
    assert "c.py" in result.stderr and "Permission denied" in result.stderr


def test_malformed_jsonl_line(corpus, tmp_path):
    root, texts = corpus
    out = tmp_path / "out"
    prepare("build", root, "--out", out)
    before = snapshot(out)
    write(root / "bad.jsonl", '{"text": "fine"}\n{"text": broken\n{"text": "also fine"}\n')
    result = prepare("build", root, "--out", out, ok=False)
    assert f"{root / 'bad.jsonl'}:2" in result.stderr and "--skip-bad-records" in result.stderr
    assert snapshot(out) == before, "a failed run leaves the dataset as it was"
    prepare("build", root, "--out", out, "--skip-bad-records")
    source = next(s for s in records(out) if s["id"].endswith("bad.jsonl"))
    assert source["skipped"]["bad_records"] == 1
    assert documents(out) == sorted([*texts.values(), "fine", "also fine"])


def test_missing_text_field_names_the_keys(tmp_path):
    path = write(tmp_path / "r.jsonl", '{"body": "x", "id": 1}\n{"body": "y", "id": 2}\n')
    result = prepare("build", path, "--out", tmp_path / "out", ok=False)
    assert "'text'" in result.stderr and "body, id" in result.stderr and "r.jsonl:1" in result.stderr
    prepare("build", path, "--out", tmp_path / "out", "--text-field", "body")
    assert documents(tmp_path / "out") == ["x", "y"]


def test_invalid_utf8_replaced_or_strict(tmp_path):
    path = write(tmp_path / "latin.txt", "caf\xe9 au lait".encode("latin-1"), mode="wb")
    write(tmp_path / "other.txt", "another document")
    result = prepare("build", path, tmp_path / "other.txt", "--out", tmp_path / "out")
    assert "invalid UTF-8" in result.stderr
    assert documents(tmp_path / "out") == ["another document", "caf\ufffd au lait"]
    assert records(tmp_path / "out")[0]["invalid_utf8_bytes"] == 1
    result = prepare("build", path, "--out", tmp_path / "strict", "--strict", ok=False)
    assert "latin.txt" in result.stderr and "byte 3" in result.stderr


def test_binary_and_empty_files_are_skipped(corpus, tmp_path):
    root, texts = corpus
    write(root / "blob.bin", b"\x00\x01\x02binary", mode="wb")
    write(root / "empty.txt", "  \n")
    result = prepare("build", root, "--out", tmp_path / "out")
    assert "blob.bin" in result.stderr and "binary" in result.stderr
    assert documents(tmp_path / "out") == sorted(texts.values())
    sources = {os.path.basename(s["id"]): s for s in records(tmp_path / "out")}
    assert sources["blob.bin"]["skipped"]["binary"] and sources["empty.txt"]["skipped"]["empty_documents"] == 1
    assert "up to date" in prepare("build", root, "--out", tmp_path / "out").stdout


def test_unknown_encoding_lists_known(corpus, tmp_path):
    root, _ = corpus
    result = prepare("build", root, "--out", tmp_path / "out", "--encoding", "nope", ok=False)
    assert "unknown encoding 'nope'" in result.stderr and "cl100k_base" in result.stderr and "gpt2" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_refuses_a_directory_that_is_not_a_dataset(corpus, tmp_path):
    root, _ = corpus
    precious = write(tmp_path / "home" / "thesis.tex", "do not delete")
    result = prepare("build", root, "--out", tmp_path / "home", ok=False)
    assert "not a gptmill dataset" in result.stderr
    assert os.listdir(tmp_path / "home") == ["thesis.tex"] and open(precious).read() == "do not delete"
    write(tmp_path / "other" / "manifest.json", '{"something": "else"}')
    result = prepare("build", root, "--out", tmp_path / "other", ok=False)
    assert "not a gptmill manifest" in result.stderr


def test_prepare_never_imports_torch_nor_train():
    """prepare runs where torch is not installed, and train builds on it, never the reverse: no module of prepare
    names train or torch in an import, even one inside a function, and importing all of them loads neither."""
    for root, _, names in os.walk(os.path.join(REPO, "prepare")):
        for name in (n for n in names if n.endswith(".py")):
            path = os.path.join(root, name)
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
                imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                assert not [m for m in imported if m.split(".")[0] in ("train", "torch")], f"{path}:{node.lineno}"
    code = ("import importlib, pkgutil, sys, prepare\n"
            "for module in pkgutil.walk_packages(prepare.__path__, 'prepare.'):\n"
            "    if module.name != 'prepare.__main__':\n"
            "        importlib.import_module(module.name)\n"
            "sys.exit(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('train', 'torch'))) or None)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_offline_gpt2_is_tiktokens_gpt2(monkeypatch):
    import tiktoken.load

    from prepare import tokenizer

    files = tokenizer.gpt2_files()
    expected = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=files["vocab.bpe"], encoder_json_file=files["encoder.json"])
    encoding = tokenizer.load_encoding("gpt2")
    assert encoding._mergeable_ranks == expected
    assert (encoding.n_vocab, encoding.eot_token) == (50257, 50256)
    assert encoding.encode_ordinary("Hello world") == [15496, 995]
    assert encoding.decode(encoding.encode_ordinary("ünïcode 🚀")) == "ünïcode 🚀"
    monkeypatch.setitem(tokenizer.GPT2_FILES, "vocab.bpe", "0" * 64)
    with pytest.raises(tokenizer.TokenizerError, match="not the GPT-2 file tiktoken pins"):
        tokenizer.gpt2_files()


def test_bad_record_late_in_a_run_leaves_no_new_files(corpus, tmp_path, monkeypatch):
    from prepare import reading

    monkeypatch.setattr(reading, "BATCH_CHARS", 500)  # shards are published before the bad line is read
    root, _ = corpus
    out = tmp_path / "out"
    prepare("build", root, "--out", out, "--shard-tokens", 50)
    before = snapshot(out)
    lines = [json.dumps({"text": f"good record {i} " * 5}) for i in range(200)] + ["{broken"]
    write(root / "late.jsonl", "\n".join(lines) + "\n")
    result = prepare("build", root, "--out", out, "--shard-tokens", 50, "--workers", 1, ok=False)
    assert f"{root / 'late.jsonl'}:201" in result.stderr
    assert snapshot(out) == before, "shards published before the error are removed again"


def test_max_tokens_caps_hugging_face_inputs_only_and_is_recorded(tmp_path):
    import datasets

    rows = [{"text": f"record number {i} " * 5} for i in range(40)]
    local = datasets.Dataset.from_list(rows)
    local.save_to_disk(str(tmp_path / "ds"))
    text = write(tmp_path / "notes.txt", "A local text file that is never capped. " * 30)
    out = tmp_path / "out"
    prepare("build", text, f"hf:{tmp_path / 'ds'}", "--out", out, "--max-tokens", 50)
    sources = {s["kind"]: s for s in records(out)}
    assert sources["disk"]["max_tokens"] == 50 and "max_tokens" not in sources["file"]
    assert sources["file"]["tokens"]["train"] + sources["file"]["tokens"]["val"] > 50
    capped = sources["disk"]["tokens"]["train"] + sources["disk"]["tokens"]["val"]
    assert 50 <= capped < 50 + 20, "documents until the cap is reached"
    # Lifting the cap redoes the capped input, and only it; putting it back caps it again.
    result = prepare("build", text, f"hf:{tmp_path / 'ds'}", "--out", out)
    assert "tokenized 1 inputs" in result.stdout and "up to date" not in result.stdout
    assert sorted(documents(out)) == sorted([r["text"] for r in rows] + [open(text).read()])
    result = prepare("build", text, f"hf:{tmp_path / 'ds'}", "--out", out, "--max-tokens", 50)
    assert "tokenized 1 inputs" in result.stdout
    assert sum(manifest(out).tokens(s) for s in fmt.SPLITS) == capped + sources["file"]["tokens"]["train"] + sources["file"]["tokens"]["val"]


def test_summary_reports_bytes_per_second(tmp_path):
    text = "ünïcödé 🚀 " * 20_000  # 2 bytes or 4 bytes per character: characters would undercount
    path = write(tmp_path / "u.txt", text)
    result = prepare("build", path, "--out", tmp_path / "out")
    megabytes_per_s = float(re.search(r"([\d.]+) MB/s", result.stdout)[1])
    tokens_per_s = float(re.search(r"([\d,]+) tokens/s", result.stdout)[1].replace(",", ""))
    tokens = sum(manifest(tmp_path / "out").tokens(s) for s in fmt.SPLITS)
    # Both rates share the build's seconds, so their ratio is bytes per token.
    assert abs(megabytes_per_s * 1e6 * tokens / tokens_per_s - len(text.encode())) <= 0.02 * len(text.encode())


def test_verify_catches_an_id_outside_the_vocabulary_and_a_missing_end_of_text(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    prepare("build", root, "--out", out)
    m = manifest(out)
    entry = m.files[m.extents["train"][0].file]
    shard = Path(fmt.token_path(out, entry.name))
    original = np.fromfile(shard, np.uint16)
    for position, value, problem in ((3, 60000, "outside the vocabulary"), (0, 11, "end-of-text")):
        broken = original.copy()
        broken[position] = value
        broken.tofile(shard)
        # a consistent checksum: only the content check can tell
        m.files[entry.name] = dataclasses.replace(entry, sha256=fmt.sha256_file(shard))
        fmt.publish(out, m)
        result = prepare("verify", out, ok=False)
        assert shard.name in result.stderr and problem in result.stderr, result.stderr
    original.tofile(shard)


def test_one_duration_syntax_for_every_time_option():
    from prepare.clitools import parse_duration

    assert [parse_duration(None, None, v) for v in ("2s", "5m", "1.5h", "90", "0", ".5m")] == [2, 300, 5400, 90, 0, 30]
    for bad in ("2x", "m", "-1s", "1e3", ""):
        with pytest.raises(click.BadParameter):
            parse_duration(None, None, bad)
    from prepare.cli import build as build_command
    from train.cli import fit as fit_command

    for command, option in ((build_command, "--commit-every"), (fit_command, "--max-time")):
        (param,) = [p for p in command.params if option in p.opts]
        assert param.callback is parse_duration, option
