"""The dataset format at scale and under change.

1. 100,000 small inputs (one short document each): the full build, a no-op rerun (fresh process), a train
   start-up (leased snapshot and split set-up), and the cost of a commit as the dataset grows (metadata
   bytes written per commit, over successive commits that each add 10,000 inputs: linear, not quadratic).
2. The `stdlib` corpus: a full build against a rerun after one input changed (inputs tokenized, bytes
   written, seconds).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from common import REPO, run_measured
from prepare.sources import stdlib_files

INPUTS = int(os.environ.get("FORMAT_INPUTS", 100_000))
STEP = INPUTS // 10


def written_bytes(data_dir, before):
    """Bytes of files under `data_dir` that are new or changed since the listing `before`."""
    now = listing(data_dir)
    return sum(size for path, (size, mtime) in now.items() if before.get(path) != (size, mtime))


def listing(data_dir):
    out = {}
    for root, _, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(root, name)
            st = os.stat(path)
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


def prepare(*args):
    seconds, _, out = run_measured(["-m", "prepare", "build", *map(str, args)])
    return seconds, out


def many_inputs(work):
    corpus = os.path.join(work, "many")
    for i in range(INPUTS):
        folder = os.path.join(corpus, f"{i // 1000:03d}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:06d}.txt"), "w") as f:
            f.write(f"Document number {i}: a short text about item {i * 7919 % 100003}.\n")
    data = os.path.join(work, "many_data")
    # Commits of 10,000 inputs each: how does a commit's metadata grow with the dataset?
    staged = os.path.join(work, "staged")
    os.makedirs(staged)
    per_commit = []
    for step in range(10):
        for folder in sorted(os.listdir(corpus))[step * STEP // 1000 : (step + 1) * STEP // 1000]:
            os.symlink(os.path.join(corpus, folder), os.path.join(staged, folder))
        before = listing(data) if os.path.isdir(data) else {}
        seconds, _ = prepare(staged + "/**/*.txt", "--out", data, "--val-fraction", "0.01")
        tokens_dir = os.path.join(data, "tokens")
        token_bytes = sum(s for p, (s, m) in listing(tokens_dir).items() if before.get(p) != (s, m))
        per_commit.append((len(os.listdir(staged)) * 1000, seconds, written_bytes(data, before) - token_bytes))
    print(f"{INPUTS:,} inputs added {STEP:,} at a time (a build each, fresh processes):")
    for inputs, seconds, meta in per_commit:
        print(f"  dataset of {inputs:7,} inputs: build {seconds:5.1f} s, metadata written {meta / 1e6:6.2f} MB")
    seconds, out = prepare(staged + "/**/*.txt", "--out", data, "--val-fraction", "0.01")
    print(f"  no-op rerun over {INPUTS:,} inputs: {seconds:.2f} s ({out.strip()[:80]}...)")
    code = ("import time; from train.data import open_dataset; t = time.perf_counter(); "
            f"s, splits = open_dataset({data!r}, 16); print(time.perf_counter() - t)")
    start = float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout)
    print(f"  train start-up (leased snapshot, manifest read, split set-up; imports excluded): {start * 1e3:.1f} ms")


def one_changed(work):
    corpus = os.path.join(work, "std")
    os.makedirs(corpus)
    files = stdlib_files()
    for i, f in enumerate(files):
        shutil.copyfile(f, os.path.join(corpus, f"{i:05d}.py"))
    data = os.path.join(work, "std_data")
    seconds, out = prepare(corpus, "--out", data)
    full_bytes = sum(s for s, _ in listing(data).values())
    full_inputs = re.search(r"tokenized (\d+) inputs", out)[1]
    with open(os.path.join(corpus, "00100.py"), "a") as f:
        f.write("\n# one line more\n")
    before = listing(data)
    changed_seconds, out = prepare(corpus, "--out", data, "--compact-at", "1")
    changed_inputs = re.search(r"tokenized (\d+) inputs", out)[1]
    print(f"stdlib, {len(files):,} files: full build {full_inputs} inputs, {full_bytes / 1e6:.1f} MB written, {seconds:.2f} s; "
          f"one input changed: {changed_inputs} input tokenized, {written_bytes(data, before) / 1e3:.0f} kB written, "
          f"{changed_seconds:.2f} s (fresh processes)")


def main():
    work = tempfile.mkdtemp(prefix="gptmill-format-")
    one_changed(work)
    many_inputs(work)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
