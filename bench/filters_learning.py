"""What `--filter gopher,c4,fineweb` changes in a model (issue #46): one corpus that mixes clean prose with the junk a
crawl brings (cookie and navigation boilerplate, keyword lists, a line repeated, tables of numbers, text in another
language) is prepared with and without the filters; the same tiny model trains the same steps on each, and both are
scored in bits per byte on the same clean held-out documents (a dataset of their own, never filtered): 200 fixed
windows of them. Every dataset uses one 2,048-id vocabulary learned on the mixed corpus, and tiny-llama trains on
1,024 tokens a step, so that the comparison fits a few minutes of two shared cores.

Clean prose: TinyStories from ../shared/data (GPTMILL_SHARED_DATA; held out: its validation stories), else the
synthetic prose of tests/test_filtering.py. `python bench/filters_bench.py learning`; FILTERS_LEARNING_STEPS sets
the steps (default 300), FILTERS_LEARNING_SEED the models' seed (default 1337, train fit's). Figures:
docs/filters.md, Learning.
"""

import json
import os
import random
import re
import subprocess
import sys
import time

from common import REPO

SHARED = os.environ.get("GPTMILL_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
FILTERS = ["--filter", "gopher,c4,fineweb"]
VOCABULARY = 2048
WINDOWS = 200  # fixed windows of the held-out val, the same for both models
SEED = os.environ.get("FILTERS_LEARNING_SEED", "1337")  # the model's (train fit's default); the corpus is fixed
NAV = ["Home", "About us", "Contact", "Privacy policy", "Terms of use", "Log in", "Sign up", "Cart", "Help"]
GERMAN = ["Der alte Mann ging jeden Morgen mit seinem Hund durch den Wald.", "Die Kinder spielten im Garten.",
          "Ihre Mutter bereitete in der Küche das Mittagessen vor.", "Am Abend regnete es in der ganzen Stadt.",
          "Wir haben das neue Buch gestern in der Bibliothek gelesen.",
          "Der Zug nach Berlin hatte eine Stunde Verspätung."]


def clean_texts():
    """(training prose, held-out prose): lists of documents."""
    stories = os.path.join(SHARED, "tinystories")
    if os.path.isdir(stories):
        train = open(os.path.join(stories, "tinystories_sample.txt"), encoding="utf-8").read().split("<|endoftext|>")
        held = open(os.path.join(stories, "tinystories_val.txt"), encoding="utf-8").read().split("\n\n")
        return [t.strip() for t in train if t.strip()], [t.strip() for t in held if t.strip()]
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from test_filtering import prose

    rng = random.Random(1)
    return [prose(rng, 12) for _ in range(4000)], [prose(rng, 12) for _ in range(400)]


def junk(rng, words, story):
    """One page of crawl junk, of one of five kinds, with the kind."""
    kind = rng.randrange(5)
    if kind == 0:  # a short text inside the boilerplate of its site
        banner = "We use cookies to improve your experience. By using this site you accept our cookie policy."
        return "boilerplate", "\n".join([" | ".join(NAV), banner, story[:200], *(" | ".join(rng.sample(NAV, 4))
                                                                             for _ in range(12)), banner])
    if kind == 1:
        return "keywords", "\n".join(" ".join(rng.sample(words, rng.randint(3, 6))) for _ in range(rng.randint(20, 60)))
    if kind == 2:
        line = story.split(".")[0] + "."
        return "repeated", "\n".join([line] * rng.randint(10, 40))
    if kind == 3:
        rows = [f"| {rng.randint(1990, 2024)} | {rng.random() * 100:.2f} | {rng.randint(0, 9999)} |" for _ in range(40)]
        return "table", "\n".join(["| year | rate | count |", *rows])
    return "other language", " ".join(rng.choice(GERMAN) for _ in range(rng.randint(8, 30)))


def prepare(*args):
    done = subprocess.run([sys.executable, "-m", "prepare", *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"prepare {' '.join(map(str, args))} failed: {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def learning(work, steps=int(os.environ.get("FILTERS_LEARNING_STEPS", 300))):
    clean, held = clean_texts()
    rng = random.Random(46)
    words = sorted({w for t in clean[:500] for w in re.findall(r"[a-z]+", t.lower())})
    pages = [junk(rng, words, rng.choice(clean)) for _ in range(len(clean) // 2)]
    documents = [("clean", t) for t in clean] + pages
    rng.shuffle(documents)
    corpus = os.path.join(work, "mixed.jsonl")
    with open(corpus, "w") as f:
        f.writelines(json.dumps({"text": t, "kind": k}) + "\n" for k, t in documents)
    with open(os.path.join(work, "held.jsonl"), "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in held)
    # A vocabulary of 2,048 learned on the corpus: the output layer is most of a tiny model's work on 2 shared cores.
    tokenizer = os.path.join(work, "tokenizer")
    prepare("tokenizer", corpus, "--vocab-size", VOCABULARY, "--out", tokenizer)
    heldout = os.path.join(work, "held")
    prepare("build", os.path.join(work, "held.jsonl"), "--out", heldout, "--val-fraction", "0.5", "--encoding",
            tokenizer)
    kinds = {}
    for k, t in documents:
        kinds[k] = kinds.get(k, 0) + len(t.encode())
    print(f"learning: {len(documents):,} documents, {sum(kinds.values()) / 1e6:.1f} MB: "
          + ", ".join(f"{k} {v / sum(kinds.values()):.0%}" for k, v in sorted(kinds.items())))
    for name, options in (("without --filter", []), ("with --filter gopher,c4,fineweb", FILTERS)):
        data, run = os.path.join(work, f"data-{len(options)}"), os.path.join(work, f"run-{len(options)}")
        start = time.perf_counter()
        summary = prepare("build", corpus, "--out", data, "--val-fraction", "0.01", "--encoding", tokenizer, *options)
        if options:
            report_removed(data, documents)
        fit = ["--model", "tiny-llama", "--max-steps", str(steps), "--device", "cpu", "--no-samples",
               "--eval-every", "0", "--no-compile", "--batch-size", "8", "--tokens-per-step", "1024", "--seed", SEED]
        built = time.perf_counter()
        subprocess.run([sys.executable, "-m", "train", "fit", "--data", data, "--out", run, *fit], cwd=REPO,
                       check=True, capture_output=True)
        trained_at = time.perf_counter()
        scored = subprocess.run([sys.executable, "-m", "train", "eval", "--run", run, "--data", heldout, "--json",
                                 "--device", "cpu", "--windows", str(WINDOWS)], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        score = json.loads(scored.splitlines()[0])
        trained = re.search(r"train ([\d,]+) /", summary)[1]
        print(f"  {name:34s}: {trained} train tokens; {steps} steps, seed {SEED}; held-out clean bpb "
              f"{score['bpb']:.4f} ({score['tokens']:,} tokens); build {built - start:.0f} s, fit "
              f"{trained_at - built:.0f} s, eval {time.perf_counter() - trained_at:.0f} s")


def report_removed(data, documents):
    """The share of each kind of document the filters removed, from the records."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from conftest import sources

    gone = {d["at"] for r in sources(data) for d in r["dedup"]["removed"]}
    counts = {}
    for at, (kind, _) in enumerate(documents):
        total, removed = counts.get(kind, (0, 0))
        counts[kind] = (total + 1, removed + (at in gone))
    print("  removed by the filters: " + ", ".join(f"{k} {r / t:.1%} of {t:,}" for k, (t, r) in sorted(counts.items())))
