"""What the document filters cost a build (issue #46): the same prose corpus built fresh without filters and with
each rule set, language ID, redaction, and all of them, in turn; CPU seconds (the build's process tree, user and
system) per MB and the ratio to the build without filters, within each round (the machine is shared: a ratio is
taken between builds run side by side in time, never across runs). `python bench/filters_bench.py learning` runs
the learning comparison of bench/filters_learning.py instead. Figures: docs/filters.md, Cost.

The prose: TinyStories' first 2 MiB from ../shared/data (GPTMILL_SHARED_DATA), else the synthetic prose of
tests/test_filtering.py (a user's clone has no shared folder).
"""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import REPO

SHARED = os.environ.get("GPTMILL_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
CONFIGURATIONS = [
    ("no filter", []),
    ("--filter gopher", ["--filter", "gopher"]),
    ("--filter c4", ["--filter", "c4"]),
    ("--filter fineweb", ["--filter", "fineweb"]),
    ("--filter code", ["--filter", "code"]),
    ("--languages en", ["--languages", "en"]),
    ("--redact email,ip", ["--redact", "email,ip"]),
    ("all: gopher,c4,fineweb + en + redact", ["--filter", "gopher,c4,fineweb", "--languages", "en", "--redact",
                                              "email,ip"]),
]


def prose_corpus(work):
    """(path, build options) of the prose the builds read."""
    stories = os.path.join(SHARED, "tinystories", "tinystories_sample.txt")
    if os.path.exists(stories):
        return stories, ["--doc-sep", "<|endoftext|>"]
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import random

    from test_filtering import prose

    rng, path = random.Random(0), os.path.join(work, "prose.txt")
    with open(path, "w") as f:
        f.write("\n\n".join(prose(rng, 15) for _ in range(3000)))
    return path, ["--doc-sep", "blank"]


def cpu_seconds(args):
    """(CPU seconds of the child process tree, wall seconds, stdout) of `python -m prepare ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prepare", *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"prepare {' '.join(args)} failed: {done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall, done.stdout


def cost(work, rounds=int(os.environ.get("FILTERS_BENCH_ROUNDS", 3))):
    corpus, options = prose_corpus(work)
    size = os.path.getsize(corpus)
    workers = ["--workers", str(os.cpu_count())]
    seconds = {name: [] for name, _ in CONFIGURATIONS}
    summaries = {}
    for r in range(rounds):
        for name, args in CONFIGURATIONS:
            out = os.path.join(work, "cost")
            shutil.rmtree(out, ignore_errors=True)
            cpu, wall, summary = cpu_seconds(["build", corpus, "--out", out, *options, *workers, *args])
            seconds[name].append((cpu, wall))
            summaries[name] = summary.strip().splitlines()[-1]
    base = seconds["no filter"]
    print(f"filters' cost: {os.path.basename(corpus)}, {size / 1e6:.1f} MB, {os.cpu_count()} workers, medians of "
          f"{rounds} rounds (ratios within a round)")
    print("  build                                  CPU s/MB   x no filter | wall s   x no filter | removed")
    for name, _ in CONFIGURATIONS:
        cpu = statistics.median(c for c, _ in seconds[name]) / (size / 1e6)
        ratio = statistics.median(c / b[0] for (c, _), b in zip(seconds[name], base))
        wall = statistics.median(w for _, w in seconds[name])
        wall_ratio = statistics.median(w / b[1] for (_, w), b in zip(seconds[name], base))
        filtered = summaries[name].split("filtered ")[1].split(";")[0] if "filtered " in summaries[name] else "-"
        print(f"  {name:38s} {cpu:8.2f} {ratio:9.2f}x | {wall:6.2f} {wall_ratio:9.2f}x | {filtered}")


def main():
    work = tempfile.mkdtemp(prefix="gptmill-filters-bench-")
    try:
        if "learning" in sys.argv[1:]:
            from filters_learning import learning

            learning(work)
        else:
            cost(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
