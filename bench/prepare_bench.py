"""prepare throughput on the `stdlib` corpus against tiktoken's own ceiling, peak memory, no-op rerun, and the
peak memory of a corpus that is one 1 GB document.

Ceiling: `encode_ordinary_batch` over the same texts already in memory, with as many threads as prepare
has workers, measured in the same run beside each build. prepare is timed end to end as a fresh process
(interpreter start, imports and tokenizer loading included) and by its own summary line (the build alone).
"""

import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import run_measured
from dedup_bench import overhead as dedup_overhead
from prepare.sources import stdlib_files
from prepare.tokenizer import load_encoding

WORKERS = os.cpu_count()


def ray_figures(work, corpus, size):
    """--executor ray on a running Ray of 2 CPUs (one task per CPU, one tokenizer process each) against the
    single-process build of the same corpus, end to end as fresh processes (connecting, scheduling, the
    tasks' start-up and the commit included); and once more with Ray started by the build itself."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray: not installed (pip install 'gptmill[ray]'), skipped")
        return
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    subprocess.run([ray_cli, "start", "--head", "--num-cpus", "2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)
    running = {"RAY_ADDRESS": "auto"}
    try:
        runs = [("single process", [], {}),
                ("--executor ray --tasks 2", ["--executor", "ray", "--tasks", "2"], running),
                ("--executor ray --tasks 8", ["--executor", "ray", "--tasks", "8"], running)]
        results = {}
        for index, (name, args, env) in enumerate(runs):
            out = os.path.join(work, f"ray-{index}")
            results[name] = run_measured(["-m", "prepare", "build", corpus, "--out", out, *args], env=env)[0]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True)
    out = os.path.join(work, "ray-cold")
    seconds, _, _ = run_measured(["-m", "prepare", "build", corpus, "--out", out, "--executor", "ray", "--tasks", "2"])
    results["--executor ray --tasks 2, starting Ray"] = seconds
    base = results["single process"]
    print(f"Ray, {size / 1e6:.0f} MB corpus, 2 CPUs:")
    for name, seconds in results.items():
        print(f"  {name:40s}: {seconds:6.2f} s, {size / seconds / 1e6:5.2f} MB/s ({seconds / base - 1:+.0%} against a "
              f"single process)")


def ceiling_seconds(paths):
    """tiktoken's own batch encoding of the files' texts, already in memory, with as many threads as workers."""
    texts = [open(f, encoding="utf-8", errors="replace").read() for f in paths]
    encoding = load_encoding("gpt2")
    encoding.encode_ordinary_batch(texts[:50], num_threads=WORKERS)
    start = time.perf_counter()
    encoding.encode_ordinary_batch(texts, num_threads=WORKERS)
    return time.perf_counter() - start


def against_ceiling(name, corpus, paths, work, rounds=3):
    """Fresh builds of `corpus` against the ceiling, measured in turn (CPU speed drifts over minutes: each
    ratio is a build over the ceiling measured beside it); medians of `rounds`. Returns the last output dir
    and the build's peak RSS."""
    size = sum(os.path.getsize(f) for f in paths)
    inner, outer, ceiling = [], [], []
    for r in range(rounds):
        ceiling.append(ceiling_seconds(paths))
        out = os.path.join(work, f"{os.path.basename(name)}-{r}")
        seconds, rss, summary = run_measured(["-m", "prepare", "build", corpus, "--out", out,
                                              "--workers", str(WORKERS)])
        outer.append(ceiling[-1] / seconds)
        inner.append(ceiling[-1] / float(re.search(r"in ([\d.]+) s", summary)[1]))
    print(f"corpus: {name}, {len(paths)} files, {size / 1e6:.1f} MB, {WORKERS} cores; medians of {rounds} rounds")
    print(f"  ceiling (encode_ordinary_batch, {WORKERS} threads, texts in memory): "
          f"{size / statistics.median(ceiling) / 1e6:.2f} MB/s")
    print(f"  prepare build alone (its summary) / ceiling:   {statistics.median(inner):.2f}x")
    print(f"  prepare end to end (fresh process) / ceiling:  {statistics.median(outer):.2f}x")
    return out, rss


SINGLE_DOCUMENT_MB = 1000
WORDS = ("the of and a to in is was that for it with as his on be at by this had not are but from or have an they "
         "which one you were her all she there would their we him been has when who will more no if out so said what "
         "up its about").split()


def single_document_row(work, mb=SINGLE_DOCUMENT_MB):
    """Peak RSS of a build whose corpus is one document of `mb` MB with no newline (a dump, a log): a document
    is read and tokenized in parts, so memory stays that of a part, not of the document."""
    path = os.path.join(work, "one-document.txt")
    rng = random.Random(0)
    block = " ".join(rng.choice(WORDS) for _ in range(200_000)) + " "
    with open(path, "w") as f:
        for _ in range(-(-mb * 1_000_000 // len(block))):
            f.write(block)
    size = os.path.getsize(path)
    out = os.path.join(work, "one-document")
    seconds, rss, _ = run_measured(["-m", "prepare", "build", path, "--out", out, "--workers", str(WORKERS)])
    print(f"peak RSS, one {size / 1e6:.0f} MB document: {rss / 2**20:.0f} MiB (main process and workers together), "
          f"{seconds:.0f} s ({size / seconds / 1e6:.2f} MB/s)")
    os.remove(path)


def main():
    files = stdlib_files()
    size = sum(os.path.getsize(f) for f in files)
    work = tempfile.mkdtemp(prefix="gptmill-bench-")
    out, rss = against_ceiling("stdlib", "stdlib", files, work)
    print(f"peak RSS, {size / 1e6:.0f} MB corpus: {rss / 2**20:.0f} MiB (main process and workers together)")

    seconds, _, summary = run_measured(["-m", "prepare", "build", "stdlib", "--out", out])
    print(f"no-op rerun: {seconds:.2f} s ({summary.strip()})")
    dedup_overhead(work)  # --dedup near beside the same build (bench/dedup_bench.py has the rest)

    big = os.path.join(work, "stdlib_x4")
    copies = []
    for copy in range(4):
        for i, f in enumerate(files):
            dest = os.path.join(big, str(copy), f"{i:05d}.py")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(f, "rb") as src, open(dest, "wb") as dst:
                dst.write(src.read() + f"\n# copy {copy}\n".encode())  # distinct documents
            copies.append(dest)
    _, rss_big = against_ceiling("stdlib x4", big, copies, work, rounds=2)
    print(f"peak RSS, {4 * size / 1e6:.0f} MB corpus: {rss_big / 2**20:.0f} MiB")
    ray_figures(work, big, 4 * size)
    single_document_row(work)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
