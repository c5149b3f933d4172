"""The dataset format at scale and under change.

1. 100,000 small inputs (one short document each): the full build, a no-op rerun (fresh process), a train
   start-up (leased snapshot and split set-up), and the cost of a commit as the dataset grows (metadata
   bytes written per commit, over successive commits that each add 10,000 inputs: linear, not quadratic).
2. The `stdlib` corpus: a full build against a rerun after one input changed (inputs tokenized, bytes
   written, seconds).
3. Compaction of a dataset whose inputs' 100,000 ranges lie in files holding dead tokens (seconds; the
   records are relocated O(n log n)), and that its new files honour --shard-tokens.
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
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    start = float(done.stdout)
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
    print(f"stdlib, {len(files):,} files: full build {full_inputs} inputs, {full_bytes / 1e6:.1f} MB written, "
          f"{seconds:.2f} s; one input changed: {changed_inputs} input tokenized, "
          f"{written_bytes(data, before) / 1e3:.0f} kB written, "
          f"{changed_seconds:.2f} s (fresh processes)")


def fragmented(data_dir, ranges, tokens_per_range=40, dead_every=4, file_ranges=10_000):
    """A dataset written through the format's own API: `ranges` live inputs of one document each, in files of
    `file_ranges` documents, every `dead_every`-th document of which is retired (as after edits); no
    compaction yet. Returns the inputs written."""
    import numpy as np

    from prepare import format as fmt
    from prepare.tokenizer import eot_token, load_encoding, ranks_hash

    encoding = load_encoding("gpt2")
    tokenizer = fmt.Tokenizer("gpt2", ranks_hash(encoding), encoding.n_vocab, eot_token(encoding))
    os.makedirs(os.path.join(data_dir, fmt.TOKENS))
    document = np.arange(tokens_per_range, dtype=np.uint16) % 1000 + 1
    document[0] = tokenizer.eot_token
    files, extents, records = {}, [], []
    inputs = -(-ranges * dead_every // (dead_every - 1))
    for index in range(0, inputs, file_ranges):
        name = fmt.token_file_name("train", "bench0", index // file_ranges)
        count = min(file_ranges, inputs - index)
        np.tile(document, count).tofile(fmt.token_path(data_dir, name))
        digest = fmt.sha256_file(fmt.token_path(data_dir, name))
        files[name] = fmt.TokenFile(name, "train", count * tokens_per_range, digest, 1000)
        for d in range(count):
            start = d * tokens_per_range
            if (index + d) % dead_every:
                extents.append(fmt.Extent(name, start, start + tokens_per_range))
                records.append({"id": f"doc{index + d}", "ranges": [["train", name, start, start + tokens_per_range]],
                                "documents": {"train": 1, "val": 0}, "tokens": {"train": tokens_per_range, "val": 0}})
    fmt.write_segment(data_dir, "bench0-0000.jsonl", records)
    manifest = fmt.Manifest(1, tokenizer, "uint16", {}, files, {"train": extents, "val": []},
                            {"train": len(records), "val": 0}, [["bench0-0000.jsonl", len(records)]])
    fmt.publish(data_dir, manifest)
    return inputs


def compaction(work, ranges=100_000, shard_tokens=1_000_000):
    import time

    from prepare import format as fmt
    from prepare.maintain import compact

    data = os.path.join(work, "fragmented")
    inputs = fragmented(data, ranges)
    start = time.perf_counter()
    copied = compact(data, shard_tokens)
    seconds = time.perf_counter() - start
    m = fmt.read_manifest(data)
    largest = max(f.tokens for f in m.files.values())
    print(f"compaction of {ranges:,} live ranges ({inputs:,} inputs, a quarter retired): {seconds:.2f} s, "
          f"{copied:,} tokens copied into {len(m.files)} files of at most {largest:,} tokens "
          f"(--shard-tokens {shard_tokens:,})")


def main():
    work = tempfile.mkdtemp(prefix="gptmill-format-")
    compaction(work)
    one_changed(work)
    many_inputs(work)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
