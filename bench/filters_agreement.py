"""Our rules against datatrove's filters on the same documents: per rule, the share of documents both keep or both
drop (the goal: 99% or more each), and the texts both redact alike. datatrove runs in a venv of its own
(--datatrove-python; it needs datatrove and spaCy, docs/filters.md#agreement) on the texts passed in a file.

Documents: CPython's standard library (whole .py files, and their docstrings), and where ../shared/data is
(GPTMILL_SHARED_DATA) TinyStories' stories, Tiny Shakespeare in runs of 20 speeches, and the Danish tweets of the
parquet export.

    .venv/bin/python bench/filters_agreement.py --datatrove-python /work/dtvenv/bin/python [--show 3]
"""

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

from common import REPO
from prepare.filters import RULE_SETS
from prepare.filters.document import Document
from prepare.filters.redact import redact
from prepare.sources import stdlib_files

SHARED = os.environ.get("GPTMILL_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
STDLIB_FILES = 600        # every n-th file, for a run of minutes on one core
MAX_CHARS = 200_000


def stdlib_documents():
    files = stdlib_files()
    texts = []
    for path in files[::max(1, len(files) // STDLIB_FILES)]:
        with open(path, encoding="utf-8", errors="replace") as file:
            texts.append(file.read()[:MAX_CHARS])
    docstrings = []
    for source in texts:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring and len(docstring) >= 200:
                    docstrings.append(docstring)
    return {"stdlib .py": texts, "stdlib docstrings": docstrings}


def shared_documents():
    corpora = {}
    stories = os.path.join(SHARED, "tinystories", "tinystories_sample.txt")
    if os.path.exists(stories):
        with open(stories, encoding="utf-8") as file:
            corpora["TinyStories"] = [s.strip() for s in file.read().split("<|endoftext|>")][:3000]
    shakespeare = os.path.join(SHARED, "tinyshakespeare.txt")
    if os.path.exists(shakespeare):
        with open(shakespeare, encoding="utf-8") as file:
            speeches = file.read().split("\n\n")
        corpora["Tiny Shakespeare"] = ["\n\n".join(speeches[i:i + 20]) for i in range(0, len(speeches), 20)]
    tweets = os.path.join(SHARED, "parquet", "angry-tweets", "train-00000-of-00001.parquet")
    if os.path.exists(tweets):
        import pyarrow.parquet as pq
        corpora["angry-tweets (da)"] = pq.read_table(tweets, columns=["text"]).column("text").to_pylist()
    return corpora


def our_decisions(texts):
    rules = [rule for rules in RULE_SETS.values() for rule in rules if not rule.name.startswith("code.")]
    decisions = defaultdict(list)
    for text in texts:
        document = Document(text)
        for rule in rules:
            decisions[rule.name].append(rule.keeps(rule.measure(document)))
    decisions["redacted"] = [redact(text, ["email", "ip"])[0] for text in texts]
    return decisions


def datatrove_decisions(python, texts):
    with tempfile.TemporaryDirectory(prefix="gptmill-agreement-") as work:
        texts_path, out_path = os.path.join(work, "texts.json"), os.path.join(work, "decisions.json")
        with open(texts_path, "w") as file:
            json.dump(texts, file)
        script = os.path.join(REPO, "bench", "filters_datatrove.py")
        subprocess.run([python, script, texts_path, out_path], check=True, cwd=work)
        with open(out_path) as file:
            return json.load(file)


def report(corpus_of, ours, theirs, texts, show):
    print(f"{'rule':32s} {'documents':>9s} {'same':>8s} {'we drop':>8s} {'dt drops':>8s} {'dt raised':>9s}")
    for name in ours:
        pairs = [(o, t, i) for i, (o, t) in enumerate(zip(ours[name], theirs[name])) if t is not None]
        same = sum(o == t for o, t, _ in pairs)
        if name == "redacted":
            print(f"{'redact email,ip (same text)':32s} {len(pairs):9d} {100 * same / len(pairs):7.2f}%")
            continue
        print(f"{name:32s} {len(pairs):9d} {100 * same / len(pairs):7.2f}% {sum(not o for o, _, _ in pairs):8d} "
              f"{sum(not t for _, t, _ in pairs):8d} {len(ours[name]) - len(pairs):9d}")
        for o, t, i in [p for p in pairs if p[0] != p[1]][:show]:
            print(f"    {corpus_of[i]}: we {'keep' if o else 'drop'}, datatrove {'keeps' if t else 'drops'}: "
                  f"{texts[i][:150]!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datatrove-python", required=True, help="the python of a venv with datatrove and spacy")
    parser.add_argument("--show", type=int, default=0, help="print this many disagreements per rule")
    args = parser.parse_args()
    corpora = {**stdlib_documents(), **shared_documents()}
    texts, corpus_of = [], []
    for corpus, documents in corpora.items():
        documents = [d for d in documents if d.strip()]
        print(f"{corpus}: {len(documents)} documents")
        texts += documents
        corpus_of += [corpus] * len(documents)
    theirs = datatrove_decisions(args.datatrove_python, texts)
    report(corpus_of, our_decisions(texts), theirs, texts, args.show)


if __name__ == "__main__":
    sys.exit(main())
