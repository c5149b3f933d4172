"""prepare throughput on the `stdlib` corpus with each encoder (tiktoken, the reference, and gigatoken, the fast
one) against both encoders' own ceilings, peak memory, no-op rerun, and the peak memory of a corpus that is one
1 GB document with each encoder.

Ceilings: each encoder's batch encoding of the same texts already in memory, with as many threads as prepare has
workers (tiktoken's `encode_ordinary_batch`; gigatoken's `encode_batch` on a tokenizer loaded for the measure, its
cache empty), measured in the same run beside each build. prepare is timed end to end as a fresh process
(interpreter start, imports and tokenizer loading included) and by its own summary line (the build alone).
"""

import glob
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
from filters_bench import cost as filters_cost
from prepare.sources import stdlib_files
from prepare.tokenizer import encoder_for, load_encoding

WORKERS = os.cpu_count()
ENCODERS = ("tiktoken", "gigatoken")  # `--encoder tiktoken`, and the default: gigatoken where it gives the same ids


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


def ceiling_seconds(texts, which):
    """An encoder's own batch encoding of the texts, already in memory, with as many threads as workers."""
    encoding = load_encoding("gpt2")
    if which == "tiktoken":
        encoding.encode_ordinary_batch(texts[:50], num_threads=WORKERS)
        start = time.perf_counter()
        encoding.encode_ordinary_batch(texts, num_threads=WORKERS)
        return time.perf_counter() - start
    fast = encoder_for(encoding).load()  # a tokenizer of its own: its cache empty
    start = time.perf_counter()
    fast.encode_batch(texts, parallel=True)  # on gigatoken's own threads, one per core
    return time.perf_counter() - start


def built(corpus, out, which, *options):
    """(seconds end to end, seconds of the build alone by its summary line, peak RSS) of a fresh build."""
    chosen = ["--encoder", "tiktoken"] if which == "tiktoken" else []
    args = ["-m", "prepare", "build", corpus, "--out", out, "--workers", str(WORKERS), *chosen, *options]
    seconds, rss, summary = run_measured(args)
    return seconds, float(re.search(r"in ([\d.]+) s", summary)[1]), rss


def against_ceiling(name, corpus, paths, work, rounds=3):
    """Fresh builds of `corpus` with each encoder against both ceilings, measured in turn (CPU speed drifts over
    minutes: each ratio is a build over the ceilings measured beside it); medians of `rounds`. Returns the output
    dir of the last build."""
    size = sum(os.path.getsize(f) for f in paths)
    texts = [open(f, encoding="utf-8", errors="replace").read() for f in paths]
    ceiling, runs = {e: [] for e in ENCODERS}, {e: [] for e in ENCODERS}
    for r in range(rounds):
        for which in ENCODERS:
            ceiling[which].append(ceiling_seconds(texts, which))
        for which in ENCODERS:
            out = os.path.join(work, f"{os.path.basename(name)}-{which}-{r}")
            runs[which].append(built(corpus, out, which))
    print(f"corpus: {name}, {len(paths)} files, {size / 1e6:.1f} MB, {WORKERS} cores; medians of {rounds} rounds")
    for which in ENCODERS:
        print(f"  {which} ceiling (texts in memory, {WORKERS} threads): "
              f"{size / statistics.median(ceiling[which]) / 1e6:.2f} MB/s")
    print("  build with   alone  end to end | / tiktoken's ceiling: alone, end to end | / gigatoken's: alone, end to "
          "end | peak RSS")
    for which in ENCODERS:
        seconds = [statistics.median(run[k] for run in runs[which]) for k in (1, 0)]
        ratios = [statistics.median(c[i] / run[k] for i, run in enumerate(runs[which]))
                  for c in ceiling.values() for k in (1, 0)]
        peak = max(run[2] for run in runs[which]) / 2**20
        print(f"  {which:9s} {seconds[0]:6.2f} s {seconds[1]:8.2f} s | {ratios[0]:21.2f}x {ratios[1]:9.2f}x | "
              f"{ratios[2]:15.2f}x {ratios[3]:9.2f}x | {peak:5.0f} MiB")
    files = [sorted(glob.glob(os.path.join(work, f"{os.path.basename(name)}-{e}-0", "tokens", "*.bin")))
             for e in ENCODERS]
    same = len(files[0]) == len(files[1]) and all(open(a, "rb").read() == open(b, "rb").read() for a, b in zip(*files))
    print(f"  the two encoders' token files identical: {'yes' if same else 'NO'}")
    return out


SINGLE_DOCUMENT_MB = 1000
WORDS = ("the of and a to in is was that for it with as his on be at by this had not are but from or have an they "
         "which one you were her all she there would their we him been has when who will more no if out so said what "
         "up its about").split()


def single_document_row(work, mb=SINGLE_DOCUMENT_MB):
    """Peak RSS of a build whose corpus is one document of `mb` MB with no newline (a dump, a log), with each
    encoder: a document is read and tokenized in parts, so memory stays that of a part, not of the document."""
    path = os.path.join(work, "one-document.txt")
    rng = random.Random(0)
    block = " ".join(rng.choice(WORDS) for _ in range(200_000)) + " "
    with open(path, "w") as f:
        for _ in range(-(-mb * 1_000_000 // len(block))):
            f.write(block)
    size = os.path.getsize(path)
    for which in ENCODERS:
        out = os.path.join(work, f"one-document-{which}")
        seconds, _, rss = built(path, out, which)
        print(f"peak RSS, one {size / 1e6:.0f} MB document, {which}: {rss / 2**20:.0f} MiB (main process and workers "
              f"together), {seconds:.0f} s ({size / seconds / 1e6:.2f} MB/s)")
        shutil.rmtree(out)
    os.remove(path)


def main():
    files = stdlib_files()
    size = sum(os.path.getsize(f) for f in files)
    work = tempfile.mkdtemp(prefix="gptmill-bench-")
    out = against_ceiling("stdlib", "stdlib", files, work)  # peak RSS: main process and workers together

    seconds, _, summary = run_measured(["-m", "prepare", "build", "stdlib", "--out", out])
    print(f"no-op rerun: {seconds:.2f} s ({summary.strip()})")
    dedup_overhead(work)  # --dedup near beside the same build (bench/dedup_bench.py has the rest)
    filters_cost(work)  # each filter set, language ID and redaction against a build without them, on prose

    big = os.path.join(work, "stdlib_x4")
    copies = []
    for copy in range(4):
        for i, f in enumerate(files):
            dest = os.path.join(big, str(copy), f"{i:05d}.py")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(f, "rb") as src, open(dest, "wb") as dst:
                dst.write(src.read() + f"\n# copy {copy}\n".encode())  # distinct documents
            copies.append(dest)
    against_ceiling("stdlib x4", big, copies, work, rounds=2)
    ray_figures(work, big, 4 * size)
    single_document_row(work)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
