"""Every bad input a user can type, fed to every CLI: one line naming the culprit, a non-zero exit, no
traceback, and the dataset and run left exactly as they were."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import documents, prepare, prepare_process, snapshot, write
from prepare import format as fmt
from prepare.cli import cli as prepare_cli
from train.cli import cli as train_cli

TINY = ["--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 16, "--batch-size", 4,
        "--no-compile", "--device", "cpu", "--no-samples", "--eval-windows", 4, "--dtype", "fp32"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small dataset, a finished two-step run on it, and a task job's directory with one result."""
    root = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    for i in range(12):
        write(root / "src" / f"{i:02d}.txt", " ".join(rng.choice("alpha beta gamma delta".split(), 200)) + "\n")
    prepare("build", root / "src", "--out", root / "data", "--val-fraction", 0.2)
    result = CliRunner().invoke(train_cli, ["fit", "--data", str(root / "data"), "--out", str(root / "run"), *map(str, TINY),
                                            "--max-steps", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    prepare("build", root / "src", "--out", root / "job", "--tasks", 2, "--task", 0)
    # A trained tokenizer, a dataset built with it and a one-step run on that: its identity is checked.
    prepare("tokenizer", root / "src", "--vocab-size", 300, "--out", root / "tok")
    prepare("build", root / "src", "--out", root / "tdata", "--val-fraction", 0.2, "--encoding", root / "tok")
    result = CliRunner().invoke(train_cli, ["fit", "--data", str(root / "tdata"), "--out", str(root / "trun"), *map(str, TINY),
                                            "--max-steps", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


def token_file(data):
    m = fmt.read_manifest(data)
    return fmt.token_path(data, m.extents["train"][0].file)


def overwrite(path, data, offset=0):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate(path, size=None):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2 if size is None else size)


def edit_json(path, change):
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


def other_tokenizer(data):
    """As if the dataset had been made with another tokenizer (same vocabulary size)."""
    def change(m):
        m["tokenizer"].update(name="other", ranks_sha256="0" * 64)
    edit_json(fmt.manifest_path(data), change)
    m = fmt.read_manifest(data)
    edit_json(fmt.generation_path(data, m.generation), change)


def forge_token_name(data, outside):
    """The manifest's first train file renamed to a path outside the dataset, where a copy of it lies."""
    m = fmt.read_manifest(data)
    name = m.extents["train"][0].file
    shutil.copy(fmt.token_path(data, name), outside)
    forged = os.path.relpath(outside, os.path.join(data, fmt.TOKENS))

    def change(d):
        for f in d["files"]:
            f["name"] = forged if f["name"] == name else f["name"]
        d["extents"] = {s: [[forged if e[0] == name else e[0], *e[1:]] for e in d["extents"][s]] for s in fmt.SPLITS}
    edit_json(fmt.manifest_path(data), change)
    edit_json(fmt.generation_path(data, m.generation), change)


def forge_segment_name(data, outside):
    m = fmt.read_manifest(data)
    shutil.copy(os.path.join(data, fmt.SOURCES, m.segments[0][0]), outside)
    forged = os.path.relpath(outside, os.path.join(data, fmt.SOURCES))
    edit_json(fmt.manifest_path(data), lambda d: d["segments"][0].__setitem__(0, forged))


def forge_pointer(run, outside):
    """checkpoints.json's latest and best pointing at a copy of the checkpoint outside the run."""
    with open(os.path.join(run, "checkpoints.json")) as f:
        latest = json.load(f)["latest"]
    shutil.copytree(os.path.join(run, "checkpoints", latest), outside)
    forged = os.path.relpath(outside, os.path.join(run, "checkpoints"))
    edit_json(os.path.join(run, "checkpoints.json"), lambda p: p.update(latest=forged, best=forged))


def copy_tokenizer(tok, out, pat_str):
    """A copy of a tokenizer directory with another split pattern (the ranks and special tokens as they were)."""
    shutil.copytree(tok, out)
    edit_json(os.path.join(out, "encoding.json"), lambda d: d.update(pat_str=pat_str))


# Backtracks past fancy-regex's limit on any word of a few letters: tiktoken panics on it.
CATASTROPHIC = r"(?:\w|\w\w)+(?!\w)(?=\x00)|\s|\S"


def checkpoint_file(run, name):
    with open(os.path.join(run, "checkpoints.json")) as f:
        return os.path.join(run, "checkpoints", json.load(f)["latest"], name)


def result_file(job):
    folder = os.path.join(job, fmt.TASKS)
    (job_dir,) = os.listdir(folder)
    return os.path.join(folder, job_dir, "task-00000.json")


P, T = "prepare", "train"
# (id, CLI, what is done to a fresh copy of the dataset D / run R / job J / scratch S first, arguments)
CASES = [
    # prepare build
    ("build-missing-source", P, None, lambda w: ["build", w.S / "nowhere", "--out", w.S / "out"]),
    ("build-out-is-a-file", P, lambda w: write(w.S / "file", "x"), lambda w: ["build", w.src, "--out", w.S / "file"]),
    ("build-unknown-encoding", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--encoding", "nope"]),
    ("build-val-fraction-range", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--val-fraction", "1.5"]),
    ("build-shard-tokens-zero", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--shard-tokens", "0"]),
    ("build-shard-tokens-text", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--shard-tokens", "many"]),
    ("build-commit-every-bad", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--commit-every", "2x"]),
    ("build-workers-zero", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--workers", "0"]),
    ("build-task-out-of-range", P, None, lambda w: ["build", w.src, "--out", w.D, "--tasks", "2", "--task", "2"]),
    ("build-task-without-tasks", P, None, lambda w: ["build", w.src, "--out", w.D, "--task", "0"]),
    ("build-malformed-jsonl", P, lambda w: write(w.S / "bad.jsonl", '{"text": "ok"}\n{"text": \n'),
     lambda w: ["build", w.S / "bad.jsonl", "--out", w.S / "o"]),
    ("build-jsonl-wrong-field", P, lambda w: write(w.S / "f.jsonl", '{"body": "ok"}\n'),
     lambda w: ["build", w.S / "f.jsonl", "--out", w.S / "o"]),
    ("build-corrupt-manifest", P, lambda w: truncate(fmt.manifest_path(w.D)), lambda w: ["build", w.src, "--out", w.D]),
    ("build-other-options", P, None, lambda w: ["build", w.src, "--out", w.D, "--val-fraction", "0.5"]),
    ("build-deep-jsonl", P, lambda w: write(w.S / "deep.jsonl", '{"text": "ok"}\n' + "[" * 200_000 + "\n"),
     lambda w: ["build", w.S / "deep.jsonl", "--out", w.S / "o"]),
    ("build-fifo-source", P, lambda w: os.mkfifo(w.S / "pipe.txt"), lambda w: ["build", w.S / "pipe.txt", "--out", w.S / "o"]),
    ("build-device-source", P, None, lambda w: ["build", "/dev/zero", "--out", w.S / "o"]),
    ("build-tokenizer-pattern-changed", P, lambda w: (shutil.copytree(w.base / "tdata", w.S / "tdata"),
                                                      copy_tokenizer(w.base / "tok", w.S / "tok2", r"\S+|\s+")),
     lambda w: ["build", w.src, "--out", w.S / "tdata", "--encoding", w.S / "tok2", "--val-fraction", "0.2"]),
    ("build-catastrophic-pattern", P, lambda w: (copy_tokenizer(w.base / "tok", w.S / "tok2", CATASTROPHIC),
                                                 write(w.S / "long" / "word.txt", "a" * 40 + "\n")),
     lambda w: ["build", w.S / "long", "--out", w.S / "o", "--encoding", w.S / "tok2", "--workers", "2"]),
    ("build-dedup-unknown", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--dedup", "fuzzy"]),
    ("build-decontaminate-unknown", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--decontaminate", "hellaswag,mmlu"]),
    ("build-dedup-changed", P, None, lambda w: ["build", w.src, "--out", w.D, "--dedup", "near"]),
    ("build-filter-unknown", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--filter", "gopher,nice"]),
    ("build-filter-threshold-out-of-range", P, None,
     lambda w: ["build", w.src, "--out", w.S / "o", "--filter", "gopher", "--filter-threshold", "gopher.min_words=-1"]),
    ("build-language-unknown", P, None, lambda w: ["build", w.src, "--out", w.S / "o", "--languages", "en,xx"]),
    ("build-language-model-not-fasttext", P, lambda w: write(w.S / "model.bin", "not a model"),
     lambda w: ["build", w.src, "--out", w.S / "o", "--languages", "en", "--language-model", w.S / "model.bin"]),
    ("build-filter-changed", P, None, lambda w: ["build", w.src, "--out", w.D, "--filter", "c4"]),
    ("build-foreign-directory", P, lambda w: write(w.S / "home" / "thesis.tex", "x"), lambda w: ["build", w.src, "--out", w.S / "home"]),
    # prepare info / verify
    ("dups-missing-dir", P, None, lambda w: ["dups", w.S / "nowhere"]),
    ("filtered-missing-dir", P, None, lambda w: ["filtered", w.S / "nowhere"]),
    ("dups-corrupt-manifest", P, lambda w: truncate(fmt.manifest_path(w.D)), lambda w: ["dups", w.D]),
    ("info-missing-dir", P, None, lambda w: ["info", w.S / "nowhere"]),
    ("info-empty-manifest", P, lambda w: truncate(fmt.manifest_path(w.D), 0), lambda w: ["info", w.D]),
    ("info-manifest-not-a-dict", P, lambda w: write(fmt.manifest_path(w.D), "[1, 2]"), lambda w: ["info", w.D]),
    ("info-manifest-missing-key", P, lambda w: edit_json(fmt.manifest_path(w.D), lambda m: m.pop("extents")), lambda w: ["info", w.D]),
    ("info-manifest-wrong-types", P, lambda w: edit_json(fmt.manifest_path(w.D), lambda m: m.update(extents={"train": 3, "val": []})),
     lambda w: ["info", w.D]),
    ("info-manifest-future-version", P, lambda w: edit_json(fmt.manifest_path(w.D), lambda m: m.update(version=99)), lambda w: ["info", w.D]),
    ("info-corrupt-segment", P, lambda w: truncate(os.path.join(w.D, fmt.SOURCES, os.listdir(os.path.join(w.D, fmt.SOURCES))[0])),
     lambda w: ["info", w.D]),
    ("verify-truncated-token-file", P, lambda w: truncate(token_file(w.D)), lambda w: ["verify", w.D]),
    ("verify-corrupt-token-file", P, lambda w: overwrite(token_file(w.D), b"\xff\xff" * 8, 16), lambda w: ["verify", w.D]),
    ("verify-missing-token-file", P, lambda w: os.remove(token_file(w.D)), lambda w: ["verify", w.D]),
    ("verify-forged-token-name", P, lambda w: forge_token_name(w.D, w.S / "x.bin"), lambda w: ["verify", w.D]),
    ("info-forged-segment-name", P, lambda w: forge_segment_name(w.D, w.S / "x.jsonl"), lambda w: ["info", w.D]),
    ("report-missing-dir", P, None, lambda w: ["report", w.S / "nowhere"]),
    ("report-corrupt-manifest", P, lambda w: truncate(fmt.manifest_path(w.D)), lambda w: ["report", w.D]),
    ("report-out-in-missing-folder", P, None, lambda w: ["report", w.D, "--out", w.S / "nowhere" / "report.html"]),
    ("gc-forged-generation", P, lambda w: edit_json(fmt.manifest_path(w.D), lambda m: m.update(generation="../../x")), lambda w: ["gc", w.D]),
    # prepare compact / gc / commit
    ("compact-corrupt-manifest", P, lambda w: truncate(fmt.manifest_path(w.D)), lambda w: ["compact", w.D]),
    ("compact-missing-dir", P, None, lambda w: ["compact", w.S / "nowhere"]),
    ("gc-missing-dir", P, None, lambda w: ["gc", w.S / "nowhere"]),
    ("gc-corrupt-manifest", P, lambda w: write(fmt.manifest_path(w.D), "{"), lambda w: ["gc", w.D]),
    ("commit-malformed-result", P, lambda w: truncate(result_file(w.J)), lambda w: ["commit", w.J]),
    ("commit-result-wrong-shape", P, lambda w: write(result_file(w.J), '{"task": 0}'), lambda w: ["commit", w.J]),
    ("commit-missing-tasks", P, None, lambda w: ["commit", w.J]),
    ("commit-nothing-to-commit", P, None, lambda w: ["commit", w.D]),
    ("commit-missing-dir", P, None, lambda w: ["commit", w.S / "nowhere"]),
    # train fit: data
    ("fit-missing-data", T, None, lambda w: ["fit", "--data", w.S / "nowhere", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-no-data", T, None, lambda w: ["fit", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-corrupt-manifest", T, lambda w: truncate(fmt.manifest_path(w.D)), lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-truncated-token-file", T, lambda w: truncate(token_file(w.D)), lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-out-of-vocabulary-ids", T, lambda w: overwrite(token_file(w.D), b"\xff\xff" * (os.path.getsize(token_file(w.D)) // 2)),
     lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-forged-token-name", T, lambda w: forge_token_name(w.D, w.S / "x.bin"),
     lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-mixture-missing", T, None, lambda w: ["fit", "--mixture", w.S / "none.json", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-mixture-not-json", T, lambda w: write(w.S / "m.json", "[{"), lambda w: ["fit", "--mixture", w.S / "m.json", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-mixture-wrong-shape", T, lambda w: write(w.S / "m.json", '{"path": "x"}'), lambda w: ["fit", "--mixture", w.S / "m.json", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-mixture-bad-weight", T, lambda w: write(w.S / "m.json", json.dumps([{"path": str(w.D), "weight": "lots"}])),
     lambda w: ["fit", "--mixture", w.S / "m.json", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-mixture-bad-path-type", T, lambda w: write(w.S / "m.json", json.dumps([{"path": 3}])),
     lambda w: ["fit", "--mixture", w.S / "m.json", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-mixture-over-capacity", T, lambda w: write(w.S / "m.json", json.dumps([{"path": str(w.D), "max_epochs": 0.001}])),
     lambda w: ["fit", "--mixture", w.S / "m.json", "--out", w.S / "r", *TINY, "--max-steps", 50]),
    ("fit-data-weight-text", T, None, lambda w: ["fit", "--data", f"{w.D}=lots", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-mixture-two-tokenizers", T, lambda w: (shutil.copytree(w.D, w.S / "other"), other_tokenizer(w.S / "other")),
     lambda w: ["fit", "--data", f"{w.D}=0.5", "--data", f"{w.S / 'other'}=0.5", "--out", w.S / "r", *TINY, "--max-steps", 1]),
    ("fit-context-longer-than-data", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--context", 100_000]),
    # train fit: options
    ("fit-n-head-not-dividing", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--n-head", 3]),
    ("fit-llama-odd-head-size", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--model", "tiny-llama",
                                                     "--n-embd", 130, "--n-head", 2]),
    ("fit-n-layer-zero", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--n-layer", 0]),
    ("fit-batch-size-text", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--batch-size", "x"]),
    ("fit-negative-lr", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--lr", -1]),
    ("fit-nan-lr", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--lr", "nan"]),
    ("fit-negative-weight-decay", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--weight-decay", -1]),
    ("fit-warmdown-fraction-above-one", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--warmdown-fraction", 1.5]),
    ("fit-beta-above-one", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--beta2", 1.5]),
    ("fit-negative-grad-clip", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--grad-clip", -1]),
    ("fit-dropout-above-one", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--dropout", 2]),
    ("fit-max-time-bad", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-time", "soon"]),
    ("fit-max-time-zero", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-time", "0s"]),
    ("fit-no-budget", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY]),
    ("fit-unknown-device", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--device", "tpu"]),
    ("fit-unknown-model", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--model", "gpt5"]),
    ("fit-out-is-a-file", T, lambda w: write(w.S / "file", "x"), lambda w: ["fit", "--data", w.D, "--out", w.S / "file", *TINY, "--max-steps", 1]),
    ("fit-existing-run", T, None, lambda w: ["fit", "--data", w.D, "--out", w.R, *TINY, "--max-steps", 1]),
    ("fit-init-from-not-hf", T, lambda w: write(w.S / "hf" / "config.json", "{}"),
     lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--init-from", w.S / "hf"]),
    # train fit --resume
    ("resume-no-run", T, None, lambda w: ["fit", "--out", w.S / "nothing", "--resume"]),
    ("resume-corrupt-config", T, lambda w: truncate(checkpoint_file(w.R, "config.json")), lambda w: ["fit", "--out", w.R, "--resume", "--max-steps", 4]),
    ("resume-config-wrong-types", T, lambda w: edit_json(checkpoint_file(w.R, "config.json"), lambda c: c.update(n_layer="many")),
     lambda w: ["fit", "--out", w.R, "--resume", "--max-steps", 4]),
    ("resume-corrupt-weights", T, lambda w: truncate(checkpoint_file(w.R, "model.safetensors")), lambda w: ["fit", "--out", w.R, "--resume", "--max-steps", 4]),
    ("resume-corrupt-state", T, lambda w: truncate(checkpoint_file(w.R, "state.pt")), lambda w: ["fit", "--out", w.R, "--resume", "--max-steps", 4]),
    ("resume-corrupt-pointer", T, lambda w: write(os.path.join(w.R, "checkpoints.json"), "{"), lambda w: ["fit", "--out", w.R, "--resume", "--max-steps", 4]),
    ("resume-forged-pointer", T, lambda w: forge_pointer(w.R, w.S / "elsewhere"), lambda w: ["fit", "--out", w.R, "--resume", "--max-steps", 4]),
    ("sample-forged-pointer", T, lambda w: forge_pointer(w.R, w.S / "elsewhere"), lambda w: ["sample", "--run", w.R, "--prompt", "alpha"]),
    ("sample-tokenizer-pattern-edited", T, lambda w: (shutil.copytree(w.base / "trun", w.S / "trun"),
                                                      edit_json(checkpoint_file(w.S / "trun", "tokenizer/encoding.json"),
                                                                lambda d: d.update(pat_str=CATASTROPHIC))),
     lambda w: ["sample", "--run", w.S / "trun", "--prompt", "alpha beta", "--max-new-tokens", 2]),
    ("resume-another-family", T, None, lambda w: ["fit", "--out", w.R, "--resume", "--max-steps", 4, "--model", "tiny-llama"]),
    ("resume-finished", T, None, lambda w: ["fit", "--out", w.R, "--resume"]),
    # train sample / eval / export / plot
    ("sample-no-run", T, None, lambda w: ["sample", "--run", w.S / "nothing", "--prompt", "alpha"]),
    ("sample-corrupt-weights", T, lambda w: truncate(checkpoint_file(w.R, "model.safetensors")), lambda w: ["sample", "--run", w.R, "--prompt", "alpha"]),
    ("sample-corrupt-config", T, lambda w: write(checkpoint_file(w.R, "config.json"), "[]"), lambda w: ["sample", "--run", w.R, "--prompt", "alpha"]),
    ("sample-empty-prompt", T, None, lambda w: ["sample", "--run", w.R, "--prompt", "  "]),
    ("sample-prompt-file-missing", T, None, lambda w: ["sample", "--run", w.R, "--prompt-file", w.S / "none.txt"]),
    ("sample-top-p-zero", T, None, lambda w: ["sample", "--run", w.R, "--prompt", "alpha", "--top-p", 0]),
    ("eval-no-run", T, None, lambda w: ["eval", "--run", w.S / "nothing"]),
    ("eval-missing-data", T, None, lambda w: ["eval", "--run", w.R, "--data", w.S / "nowhere"]),
    ("eval-other-tokenizer", T, lambda w: other_tokenizer(w.D), lambda w: ["eval", "--run", w.R, "--data", w.D]),
    ("eval-corrupt-manifest", T, lambda w: truncate(fmt.manifest_path(w.D)), lambda w: ["eval", "--run", w.R, "--data", w.D]),
    ("eval-out-of-vocabulary-ids", T, lambda w: overwrite(token_file(w.D), b"\xff\xff" * (os.path.getsize(token_file(w.D)) // 2)),
     lambda w: ["eval", "--run", w.R, "--data", w.D, "--split", "train"]),
    ("export-no-run", T, None, lambda w: ["export", w.S / "nothing", w.S / "hf"]),
    ("export-out-is-a-file", T, lambda w: write(w.S / "file", "x"), lambda w: ["export", w.R, w.S / "file"]),
    ("export-corrupt-weights", T, lambda w: truncate(checkpoint_file(w.R, "model.safetensors")), lambda w: ["export", w.R, w.S / "hf"]),
    ("score-unknown-task", T, None, lambda w: ["score", w.R, "--tasks", "mmlu"]),
    ("score-corrupt-weights", T, lambda w: truncate(checkpoint_file(w.R, "model.safetensors")), lambda w: ["score", w.R, "--tasks", "hellaswag"]),
    ("score-hf-not-gpt2-vocabulary", T, lambda w: write(w.S / "hf" / "config.json", '{"model_type": "gpt2", "n_layer": 1, "n_head": 1, '
                                                     '"n_embd": 8, "n_positions": 8, "vocab_size": 10}'), lambda w: ["score", w.S / "hf"]),
    ("fit-eval-tasks-unknown", T, None, lambda w: ["fit", "--data", w.D, "--out", w.S / "r", *TINY, "--max-steps", 1, "--eval-tasks", "mmlu"]),
    ("plot-no-run", T, None, lambda w: ["plot", w.S / "nothing"]),
    ("plot-corrupt-metrics", T, lambda w: write(os.path.join(w.R, "metrics.jsonl"), '{"step": 0, "loss"\n'), lambda w: ["plot", w.R]),
]


class Workspace:
    def __init__(self, base, tmp_path):
        self.S, self.base = tmp_path, base
        self.src = base / "src"
        self.D, self.R, self.J = tmp_path / "data", tmp_path / "run", tmp_path / "job"
        shutil.copytree(base / "data", self.D)
        shutil.copytree(base / "job", self.J)
        shutil.copytree(base / "run", self.R)
        # The run names its dataset by path: point it at this copy.
        for root, _, names in os.walk(self.R):
            for name in names:
                if name == "config.json":
                    edit_json(os.path.join(root, name), lambda c: c.update(data=[{**d, "path": str(self.D)} for d in c["data"]]))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_ends_in_one_line_and_changes_nothing(base, tmp_path, case):
    _, which, mutate, arguments = case
    w = Workspace(base, tmp_path)
    if mutate:
        mutate(w)
    args = [str(a) for a in arguments(w)]
    before = {p: without_lock(snapshot(p)) for p in (w.D, w.R, w.J)}
    entries = sorted(os.listdir(w.S))
    result = CliRunner().invoke(prepare_cli if which == P else train_cli, args)
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), f"traceback: {result.exception!r}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].lower().startswith("error"), result.output
    assert "Traceback" not in result.output
    # click's own usage errors print "Usage" and "Try" lines above theirs; ours print one line.
    assert len([line for line in lines if not line.startswith(("Usage:", "Try "))]) == 1, result.stderr
    for path, files in before.items():
        assert without_lock(snapshot(path)) == files, f"{path} changed"
    assert sorted(os.listdir(w.S)) == entries, "a refused command writes nothing, not even a run or dataset directory"


def without_lock(files):
    """A dataset's files but its lock file: taking the lock creates it, and it holds nothing."""
    return {name: data for name, data in files.items() if name != fmt.LOCK}


# Faults that are not a refused command: the work goes on, or ends in one line, and loses nothing.


@contextlib.contextmanager
def deadline(seconds):
    """Fail, instead of hanging the suite, when the block blocks."""
    def expired(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_socket_or_device_among_the_sources_is_skipped_and_counted(base, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(base / "src", src)
    os.mkfifo(src / "pipe.txt")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(src / "socket.txt"))
    os.symlink("/dev/zero", src / "zero.txt")  # a symlink is followed: to a device, it is skipped too
    with deadline(30):
        result = prepare("build", src, "--out", tmp_path / "data", "--val-fraction", 0.2)
    server.close()
    assert "3 not regular files" in result.output, result.output
    assert all(f"{name}: not a regular file" in result.stderr for name in ("pipe.txt", "socket.txt", "zero.txt")), result.stderr
    assert documents(tmp_path / "data") == documents(base / "data")


def test_a_deeply_nested_jsonl_record_is_a_bad_record(tmp_path):
    write(tmp_path / "deep.jsonl", '{"text": "kept"}\n' + "[" * 200_000 + "\n" + '{"text": "kept too"}\n')
    result = prepare("build", tmp_path / "deep.jsonl", "--out", tmp_path / "o", ok=False)
    assert f"{tmp_path / 'deep.jsonl'}:2: malformed JSON (nested too deeply)" in result.output
    result = prepare("build", tmp_path / "deep.jsonl", "--out", tmp_path / "o", "--skip-bad-records")
    assert "1 bad records" in result.output
    assert documents(tmp_path / "o") == ["kept", "kept too"]


def test_a_failed_first_build_leaves_the_directory_to_the_build_waiting_behind_it(base, tmp_path, monkeypatch):
    """The first build fails while a second waits for its lock: the second builds, in a directory that stays."""
    from prepare import build as build_module

    data, waiting = tmp_path / "data", []

    def fail_once_the_second_waits(data_dir, opts, rebuild):
        second = prepare_process("build", base / "src", "--out", data, "--val-fraction", 0.2, "--wait")
        waiting.append(second)
        assert "waiting for another prepare" in second.stderr.readline()
        raise build_module.BuildError("the first build fails")

    monkeypatch.setattr(build_module, "open_build", fail_once_the_second_waits)
    result = prepare("build", base / "src", "--out", data, ok=False)
    assert "the first build fails" in result.output
    out, err = waiting[0].communicate(timeout=60)
    assert waiting[0].returncode == 0, err
    assert documents(data) == documents(base / "data")


def test_a_first_build_that_fails_alone_leaves_no_directory(tmp_path):
    write(tmp_path / "bad.jsonl", '{"text": \n')
    prepare("build", tmp_path / "bad.jsonl", "--out", tmp_path / "o", ok=False)
    assert not os.path.exists(tmp_path / "o")


@pytest.fixture
def mounted(tmp_path):
    """mount(options, folder): a mount, undone after the test; skips where mounting is not allowed."""
    mounts = []

    def mount(*args):
        folder = args[-1]
        os.makedirs(folder, exist_ok=True)
        done = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"mounting is not allowed here: {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in reversed(mounts):
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_read_only_copy_without_leases_trains_saying_so(base, tmp_path, mounted):
    copy = tmp_path / "copy"
    shutil.copytree(base / "data", copy, ignore=shutil.ignore_patterns(fmt.LEASES))
    read_only = mounted("--bind", "-o", "ro", copy, tmp_path / "ro")
    result = CliRunner().invoke(train_cli, ["fit", "--data", str(read_only), "--out", str(tmp_path / "run"), *map(str, TINY),
                                            "--max-steps", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"{read_only}: read-only and without a lease in {fmt.LEASES}/: no prepare can be running there" in result.stderr
    result = CliRunner().invoke(train_cli, ["eval", "--run", str(tmp_path / "run"), "--data", str(read_only)], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_a_full_disk_ends_a_checkpoint_or_an_export_in_one_line_and_keeps_the_last_checkpoint(base, tmp_path, mounted):
    disk = mounted("-t", "tmpfs", "-o", "size=30m", "tmpfs", tmp_path / "disk")
    run = disk / "run"
    # A checkpoint of the tiny model is about 20 MB (weights and Adam's moments): the second cannot fit beside the first.
    args = ["fit", "--data", base / "data", "--out", run, *TINY, "--max-steps", 4, "--ckpt-every", 2]
    result = CliRunner().invoke(train_cli, [str(a) for a in args])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {run / 'checkpoints'}: no space left on device for checkpoint step-0000003 (it needs "), line
    with open(run / "checkpoints.json") as f:
        assert json.load(f)["latest"] == "step-0000001"
    assert os.listdir(run / "checkpoints") == ["step-0000001"], "the failed checkpoint's partial files are removed"

    # The earlier checkpoint is whole: resuming from it (elsewhere, with room) finishes the run.
    shutil.copytree(run, tmp_path / "moved")
    result = CliRunner().invoke(train_cli, ["fit", "--out", str(tmp_path / "moved"), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    # An export to the full disk: one line naming its directory.
    write(disk / "filler", "x" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 100_000))
    result = CliRunner().invoke(train_cli, ["export", str(tmp_path / "moved"), str(disk / "hf")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {disk / 'hf'}: no space left on device (it needs "), line


def test_a_full_disk_in_a_build_names_the_file(base, tmp_path, mounted):
    disk = mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", tmp_path / "disk")
    big = tmp_path / "big"
    write(big / "a.txt", " ".join(["alpha beta gamma delta"] * 200_000))  # 4 MB of text, 1.6 MB of tokens
    result = prepare("build", big, "--out", disk / "data", ok=False)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {disk / 'data' / fmt.TOKENS}/") and ": no space left on device; the build needs about " in line, line
    assert not os.path.exists(disk / "data"), "a first build that failed leaves no directory"


def test_datasets_and_runs_recorded_before_the_pattern_was_identity_stay_usable(base, tmp_path):
    """A manifest, run and checkpoint whose tokenizer identity has no pattern (as written before): the dataset is
    up to date without --rebuild, the run resumes and samples; a pattern it cannot have had is refused."""
    data, run = tmp_path / "tdata", tmp_path / "trun"
    shutil.copytree(base / "tdata", data)
    shutil.copytree(base / "trun", run)

    def old_identity(tokenizer):
        tokenizer.pop("pattern_sha256")
    m = fmt.read_manifest(data)
    for path in (fmt.manifest_path(data), fmt.generation_path(data, m.generation)):
        edit_json(path, lambda d: old_identity(d["tokenizer"]))
    for root, _, names in os.walk(run):
        if "config.json" in names:
            edit_json(os.path.join(root, "config.json"),
                      lambda c: (old_identity(c["tokenizer"]), c.update(data=[{**d, "path": str(data)} for d in c["data"]])))
    assert "up to date" in prepare("build", base / "src", "--out", data, "--val-fraction", 0.2, "--encoding", base / "tok").output
    result = CliRunner().invoke(train_cli, ["fit", "--out", str(run), "--resume", "--max-steps", "2"], catch_exceptions=False)
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    result = CliRunner().invoke(train_cli, ["sample", "--run", str(run), "--prompt", "alpha", "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output

    copy_tokenizer(base / "tok", tmp_path / "tok2", r"\S+|\s+")
    result = prepare("build", base / "src", "--out", data, "--val-fraction", 0.2, "--encoding", tmp_path / "tok2", ok=False)
    assert "tokenizer: its split pattern is not one it was made with" in result.output
    edit_json(checkpoint_file(run, "tokenizer/encoding.json"), lambda d: d.update(pat_str=r"\S+|\s+"))
    result = CliRunner().invoke(train_cli, ["sample", "--run", str(run), "--checkpoint", "latest", "--prompt", "alpha"])
    assert result.exit_code == 1 and "its split pattern is not one it was made with" in result.stderr, result.output


def test_a_split_pattern_that_fails_at_run_time_is_named_by_its_tokenizer_directory(base, tmp_path):
    copy_tokenizer(base / "tok", tmp_path / "tok2", CATASTROPHIC)
    write(tmp_path / "long" / "word.txt", "a" * 40 + "\n")
    result = prepare("build", tmp_path / "long", "--out", tmp_path / "o", "--encoding", tmp_path / "tok2", "--workers", 2, ok=False)
    assert result.stderr.strip() == (f"error: {os.path.realpath(tmp_path / 'tok2')}: its split pattern fails on a text of 41 "
                                     f"characters (Max limit for backtracking count exceeded); use another tokenizer, or leave "
                                     f"that text out"), result.stderr
