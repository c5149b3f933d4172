"""`--dedup near`: what it adds to a fresh build, what it removes, its peak memory, the threshold and shingle
size against real corpora, and its decisions against an independent MinHash LSH (datasketch's) on the same
shingle sets; with `learning`, what it changes in a model trained on the result. What each part measures, and
the figures: docs/benchmarks.md, Dedup.
"""

import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from common import REPO, run_measured
from prepare import dedup
from prepare.screening import Features
from prepare.sources import stdlib_files

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def seconds_of(summary):
    return float(re.search(r"in ([\d.]+) s", summary)[1])


def build(corpus, out, *args):
    """(end-to-end seconds, build seconds from its summary, peak RSS, summary line) of a fresh build."""
    shutil.rmtree(out, ignore_errors=True)
    seconds, rss, summary = run_measured(["-m", "prepare", "build", corpus, "--out", out, *args])
    return seconds, seconds_of(summary), rss, summary.strip().splitlines()[-1]


def overhead(work, rounds=5):
    plain, near = [], []
    for r in range(rounds):
        plain.append(build("stdlib", os.path.join(work, "plain"), "--workers", str(os.cpu_count())))
        near.append(build("stdlib", os.path.join(work, "near"), "--workers", str(os.cpu_count()), "--dedup", "near"))
    ratio_outer = statistics.median(n[0] / p[0] for p, n in zip(plain, near))
    ratio_inner = statistics.median(n[1] / p[1] for p, n in zip(plain, near))
    print(f"stdlib x1, {os.cpu_count()} workers, medians of {rounds} pairs (shared machine: ratios within a pair):")
    for label, builds in (("without dedup:", plain), ("--dedup near: ", near)):
        print(f"  {label} build {statistics.median(b[1] for b in builds):.2f} s, end to end "
              f"{statistics.median(b[0] for b in builds):.2f} s, peak RSS {max(b[2] for b in builds) / 2**20:.0f} MiB")
    print(f"  --dedup near / without: build {ratio_inner:.2f}x, end to end {ratio_outer:.2f}x (goal <= 1.25x)")
    print(f"  {near[-1][3]}")
    return os.path.join(work, "near")


def four_copies(work):
    files = stdlib_files()
    big = os.path.join(work, "stdlib_x4")
    for copy in range(4):
        for i, f in enumerate(files):
            dest = os.path.join(big, str(copy), f"{i:05d}.py")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(f, "rb") as src, open(dest, "wb") as dst:
                dst.write(src.read() + f"\n# copy {copy}\n".encode())
    plain = build(big, os.path.join(work, "x4-plain"), "--workers", str(os.cpu_count()))
    near = build(big, os.path.join(work, "x4-near"), "--workers", str(os.cpu_count()), "--dedup", "near")
    info = json.loads(run_measured(["-m", "prepare", "info", os.path.join(work, "x4-near"), "--json"])[2])
    removed = info["removed"]["dataset"]
    kept = sum(s["tokens"] for s in info["splits"].values())
    gone = removed["exact"]["tokens"] + removed["near"]["tokens"]
    print(f"stdlib x4 ({len(files) * 4:,} files): --dedup near removed {removed['exact']['documents']:,} exact and "
          f"{removed['near']['documents']:,} near duplicates, {gone / (gone + kept):.1%} of the tokens "
          f"({gone:,} of {gone + kept:,}); build {near[1]:.2f} s against {plain[1]:.2f} s without "
          f"({near[1] / plain[1]:.2f}x); "
          f"peak RSS {near[2] / 2**20:.0f} MiB (without dedup {plain[2] / 2**20:.0f} MiB)")
    shutil.rmtree(big)


def hashing():
    try:
        import xxhash
    except ImportError:
        print("hashing: xxhash not installed, skipped")
        return
    texts = [open(f, encoding="utf-8", errors="replace").read() for f in stdlib_files()[:600]]
    start = time.perf_counter()
    for text in texts:
        dedup.shingle_hashes(text)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        [xxhash.xxh3_64_intdigest(" ".join(words[i : i + 5]).encode()) for i in range(max(len(words) - 4, 1))]
    theirs = time.perf_counter() - start
    size = sum(len(t) for t in texts)
    print(f"shingle hashing, {size / 1e6:.1f} MB of stdlib: numpy {ours:.2f} s, xxhash per shingle {theirs:.2f} s "
          f"({theirs / ours:.1f}x)")


def corpus_documents(name):
    """The documents of one corpus as prepare reads them (same splitting)."""
    from prepare.readers import iter_documents
    from prepare.readers.base import SourceStats
    from prepare.sources import expand_source

    spec = {"stdlib": ("stdlib", None),
            "tinystories": (os.path.join(SHARED, "tinystories", "tinystories_sample.txt"), "<|endoftext|>"),
            "tinystories-val": (os.path.join(SHARED, "tinystories", "tinystories_val.txt"), "blank"),
            "angry-tweets": (os.path.join(SHARED, "parquet", "angry-tweets"), None)}[name]
    opts = {"doc_sep": spec[1], "text_field": "text", "strict": False, "skip_bad_records": True}
    docs = []
    for entry in sorted(expand_source(spec[0], "train"), key=lambda e: e["id"]):
        docs += list(iter_documents(entry, opts, SourceStats(), lambda message: None))
    return docs


def agreement(name):
    from datasketch import MinHash, MinHashLSH

    docs = corpus_documents(name)
    shingles = [dedup.shingle_hashes(d) for d in docs]
    start = time.perf_counter()
    signatures = np.stack([dedup.signature(s) for s in shingles])
    ours_seconds = time.perf_counter() - start
    # Ours: the decisions of prepare's index, in order.
    features = Features(np.stack([dedup.exact_key(dedup.lowered_bytes(d)) for d in docs]), {"signatures": signatures},
                        np.zeros(len(docs), np.int64), np.zeros(len(docs), np.int64))
    index = dedup.Index(None, [], {}, "bench", dedup.METHODS["near"])
    decisions = index.decide(features, [name] * len(docs), range(len(docs)))
    ours = {k for k, found in enumerate(decisions) if found is not None}
    # datasketch: its own hashing (sha1) and permutations (mod 2^61 - 1) over the same shingle sets.
    lsh, theirs = MinHashLSH(num_perm=dedup.PERMUTATIONS, params=(dedup.BANDS, dedup.ROWS)), set()
    exact_seen, theirs_seconds = set(), 0.0
    for k, s in enumerate(shingles):
        key = dedup.exact_key(dedup.lowered_bytes(docs[k])).tobytes()
        if key in exact_seen:
            theirs.add(k)
            continue
        start = time.perf_counter()
        m = MinHash(num_perm=dedup.PERMUTATIONS)
        m.update_batch([h.tobytes() for h in s])
        theirs_seconds += time.perf_counter() - start
        if len(s) and any(m.jaccard(minhashes[c]) >= dedup.DUPLICATE_JACCARD for c in lsh.query(m)):
            theirs.add(k)
            continue
        exact_seen.add(key)
        if len(s):
            lsh.insert(k, m)
            minhashes[k] = m
    differ = sorted(ours ^ theirs)
    true = [best_true_jaccard(shingles, signatures, k) for k in differ[:50]]
    agree = f"agreement {len(ours & theirs) / len(ours | theirs):.1%}" if ours | theirs else "neither removed any"
    print(f"{name}: {len(docs):,} documents; ours removed {len(ours):,}, datasketch {len(theirs):,}, both "
          f"{len(ours & theirs):,} ({agree}); the {len(differ)} that differ have best true Jaccard "
          f"{', '.join(f'{j:.2f}' for j in sorted(true))}" + (" ..." if len(differ) > 50 else ""))
    print(f"  signatures of its shingles: prepare's {ours_seconds:.2f} s, datasketch's MinHash.update_batch "
          f"{theirs_seconds:.2f} s")


minhashes = {}


def threshold(names):
    """Documents by the estimated Jaccard of their most similar earlier LSH candidate, for three shingle sizes."""
    edges = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.01]
    print(f"documents by their best earlier candidate's estimated Jaccard (bins from {edges[0]}; 1.0 is exact):")
    print(f"  {'corpus':16s} {'n':>2s} " + " ".join(f"{a:>5.2f}" for a in edges[:-1]))
    for name in names:
        docs = corpus_documents(name)
        for n in (3, 5, 8):
            signatures = np.stack([dedup.signature(dedup.shingle_hashes(d, n)) for d in docs])
            keys = dedup.band_keys(signatures)
            buckets, best = [{} for _ in range(dedup.BANDS)], np.zeros(len(docs))
            for k in range(len(docs)):
                earlier = {j for b in range(dedup.BANDS) for j in buckets[b].get(int(keys[k, b]), ())}
                if earlier:
                    best[k] = (signatures[sorted(earlier)] == signatures[k]).mean(1).max()
                for b in range(dedup.BANDS):
                    buckets[b].setdefault(int(keys[k, b]), []).append(k)
            counts = np.histogram(best, edges)[0]
            print(f"  {name:16s} {n:>2d} " + " ".join(f"{c:>5d}" for c in counts))


def best_true_jaccard(shingles, signatures, k):
    """The true Jaccard of document k with the earlier documents most similar by their signatures (top 5)."""
    if not k:
        return 0.0
    estimate = (signatures[:k] == signatures[k]).mean(1)
    return max(jaccard_sets(shingles[k], shingles[j]) for j in np.argsort(-estimate)[:5])


def jaccard_sets(a, b):
    x, y = set(a.tolist()), set(b.tolist())
    return len(x & y) / len(x | y) if x | y else 1.0


def learning(work, steps=int(os.environ.get("DEDUP_LEARNING_STEPS", 400))):
    data = {name: os.path.join(work, f"learn-{name}") for name in ("plain", "near")}
    for name, out in data.items():
        build("stdlib", out, "--val-fraction", "0.05", *(["--dedup", "near"] if name == "near" else []))
    print(f"learning, stdlib, tiny-llama, {steps} steps each, scored on the val documents of the deduplicated dataset:")
    for name, out in data.items():
        run = os.path.join(work, f"run-{name}")
        fit = ["--model", "tiny-llama", "--max-steps", str(steps), "--device", "cpu", "--no-samples",
               "--eval-every", "0"]
        seconds, _, _ = run_measured(["-m", "train", "fit", "--data", out, "--out", run, *fit])
        scored = run_measured(["-m", "train", "eval", "--run", run, "--data", data["near"], "--data", data["plain"],
                               "--json", "--device", "cpu"])[2]
        scores = [json.loads(line) for line in scored.splitlines()]
        print(f"  trained {'with' if name == 'near' else 'without'} --dedup near ({seconds:.0f} s): val bpb "
              f"{scores[0]['bpb']:.4f} on the deduplicated val ({scores[0]['tokens']:,} tokens), "
              f"{scores[1]['bpb']:.4f} on the full val ({scores[1]['tokens']:,} tokens)")


def main():
    work = tempfile.mkdtemp(prefix="gptmill-dedup-bench-")
    try:
        hashing()
        parts = sys.argv[1:] or ["overhead", "x4", "threshold", "agreement"]
        if "overhead" in parts:
            overhead(work)
        if "x4" in parts:
            four_copies(work)
        corpora = ["stdlib"] + (["tinystories", "tinystories-val", "angry-tweets"] if os.path.isdir(SHARED) else [])
        if "threshold" in parts:
            threshold(corpora)
        if "agreement" in parts:
            for name in corpora:
                agreement(name)
        if "learning" in parts:
            learning(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
