"""Shared helpers: run prepare in-process or as a real subprocess, and read a dataset back as documents."""

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from prepare import format as fmt
from prepare.cli import cli
from prepare.tokenizer import open_encoding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the cores: one thread each (torch reads this when first imported; subprocesses inherit it).
    os.environ["OMP_NUM_THREADS"] = "1"


def prepare(*args, ok=True):
    """Run `python -m prepare ARGS` in this process; assert the exit status unless ok is None."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


def prepare_process(*args, **kwargs):
    """`python -m prepare ARGS` as a real subprocess (for kill and concurrency tests)."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(kwargs.pop("env", {}))
    return subprocess.Popen([sys.executable, "-m", "prepare", *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_until_gone(pids):
    """Wait for processes that need not be our children (torchrun's ranks, a Ray cluster's) to end: gone, or
    zombies of a parent that is gone too."""
    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    while any(map(alive, pids)):
        time.sleep(0.01)


def documents(data_dir, split=None):
    """Every live document of a dataset, decoded, as a sorted list (both splits unless one is named)."""
    manifest = fmt.read_manifest(data_dir)
    encoding = open_encoding(dataclasses.asdict(manifest.tokenizer), os.path.join(data_dir, fmt.TOKENIZER))
    eot = manifest.tokenizer.eot_token
    docs = []
    for name in [split] if split else fmt.SPLITS:
        for extent in manifest.extents[name]:
            tokens = np.fromfile(fmt.token_path(data_dir, extent.file), manifest.dtype)[extent.start : extent.end]
            starts = np.flatnonzero(tokens == eot)
            assert starts[0] == 0, "an extent must start with a document"
            for a, b in zip(starts, list(starts[1:]) + [len(tokens)]):
                docs.append(encoding.decode(tokens[a + 1 : b].tolist()))
    return sorted(docs)


def sources(data_dir):
    """The per-input records of a dataset, sorted by id."""
    return sorted(fmt.read_sources(data_dir, fmt.read_manifest(data_dir)).values(), key=lambda r: r["id"])


def snapshot(data_dir):
    """Path, bytes and mtime of every file below `data_dir`: equal snapshots mean nothing was touched."""
    files = {}
    for root, _, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, data_dir)] = (open(path, "rb").read(), os.stat(path).st_mtime_ns)
    return dict(sorted(files.items()))


def token_files(data_dir):
    """name -> bytes of every token file on disk."""
    folder = os.path.join(data_dir, fmt.TOKENS)
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)
    return str(path)


def small_gpt2_run(root, files, *options):
    """A small GPT-2 (2 layers, 48 wide, context 48) trained 40 steps on copies of `files` (CPython sources):
    (run dir, data dir)."""
    from train.cli import cli as train_cli

    for i, f in enumerate(files):
        write(root / "src" / f"{i:03d}.py", open(f, "rb").read(), mode="wb")
    prepare("build", root / "src", "--out", root / "data", "--val-fraction", 0.2)
    args = ["fit", "--data", root / "data", "--out", root / "run", "--model", "tiny", "--n-layer", 2, "--n-head", 2, "--n-embd", 48,
            "--context", 48, "--batch-size", 8, "--max-steps", 40, "--lr", 3e-3, "--no-compile", "--device", "cpu",
            "--dtype", "fp32", "--no-samples", "--eval-every", 0, *options]
    result = CliRunner().invoke(train_cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "run", root / "data"


@pytest.fixture
def corpus(tmp_path):
    """A few small text documents, one per file, with non-ASCII text and code."""
    texts = {
        "a.txt": "The quick brown fox jumps over the lazy dog.\n",
        "b.md": "# Title\n\nSome *markdown* with ünïcödé and emoji 🚀.\n",
        "c.py": "def f(x):\n    return x * 2\n",
        "sub/d.txt": "Nested file.\nTwo lines.\n",
        "sub/e.txt": "Ἐν ἀρχῇ ἦν ὁ λόγος\n",
    }
    root = tmp_path / "corpus"
    for name, text in texts.items():
        write(root / name, text)
    return root, texts


@pytest.fixture(scope="session")
def stdlib_sources(tmp_path_factory):
    """40 of CPython's own source files, copied."""
    from prepare.sources import stdlib_files

    root = tmp_path_factory.mktemp("stdlib_sources")
    for i, f in enumerate(stdlib_files()[100:140]):
        write(root / f"{i:03d}.py", open(f, "rb").read(), mode="wb")
    return root


@pytest.fixture(scope="session")
def vocabulary(stdlib_sources, tmp_path_factory):
    """A 512-id vocabulary learned from those sources, for the datasets the training tests share: with GPT-2's
    50,257 ids, a tiny test model's output layer was three quarters of every step."""
    out = tmp_path_factory.mktemp("vocabulary") / "stdlib-512"
    prepare("tokenizer", stdlib_sources, "--vocab-size", 512, "--out", out)
    return out


@pytest.fixture(scope="session")
def dataset(stdlib_sources, vocabulary, tmp_path_factory):
    """About 300k tokens of CPython's own sources in several train shards, shared by the training tests."""
    out = tmp_path_factory.mktemp("train_data") / "data"
    prepare("build", stdlib_sources, "--out", out, "--encoding", vocabulary, "--shard-tokens", 20_000, "--val-fraction", 0.1)
    return out


@pytest.fixture(scope="session")
def gpt2_dataset(stdlib_sources, tmp_path_factory):
    """The same sources in GPT-2's vocabulary, for the tests that compare with models made for it."""
    out = tmp_path_factory.mktemp("gpt2_data") / "stdlib-gpt2"
    prepare("build", stdlib_sources, "--out", out, "--shard-tokens", 20_000, "--val-fraction", 0.1)
    return out


@pytest.fixture(scope="session")
def small_dataset(vocabulary, tmp_path_factory):
    """A dataset of a few thousand tokens spelled with four words only, so its windows are recognisable
    (in `dataset`'s vocabulary, so that the two mix)."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    for i in range(20):
        write(root / "src" / f"{i:02d}.txt", " ".join(rng.choice("alpha beta gamma delta".split(), 400)) + "\n")
    prepare("build", root / "src", "--out", root / "small", "--encoding", vocabulary, "--val-fraction", 0.2)
    return root / "small"


from s3_server import s3, s3_server  # noqa: E402,F401  (a real S3 server for the storage tests, one per session)
