"""Trained vocabularies against gpt2: bytes per token on held-out documents, training time, encoding speed.

    make bench BENCH=tokenizer
    TOKENIZER_SIZES=8192 TOKENIZER_PATTERNS=gpt4,gpt2 make bench BENCH=tokenizer

Each corpus's documents are split as a build splits them (by a hash of each document; 5% to val here);
vocabularies are trained (`prepare tokenizer`, as a fresh process) on the train documents only, and every
tokenizer encodes the same val documents. Encoding speed is tiktoken's `encode_ordinary_batch` on the val
text, one thread, against gpt2 in the same run. Corpora: `stdlib`, and the TinyStories sample and Tiny
Shakespeare, and Danish tweets (a parquet export) in ../shared/data where present.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from prepare.workers import is_val  # noqa: E402
from prepare.readers import iter_documents  # noqa: E402
from prepare.readers.base import SourceStats  # noqa: E402
from prepare.sources import stdlib_files  # noqa: E402
from prepare.tokenizer import load_encoding  # noqa: E402

SHARED = os.path.join(REPO, "..", "shared", "data")
CORPORA = {  # name: (files, --doc-sep, format)
    "stdlib": (stdlib_files, None, "text"),
    "tinystories": (lambda: [os.path.join(SHARED, "tinystories", "tinystories_sample.txt")], "<|endoftext|>", "text"),
    "tinyshakespeare": (lambda: [os.path.join(SHARED, "tinyshakespeare.txt")], "blank", "text"),
    "angry-tweets (Danish)": (lambda: [os.path.join(SHARED, "parquet", "angry-tweets", f"{s}-00000-of-00001.parquet")
                                       for s in ("train", "test")], None, "parquet"),
}
SIZES = [int(s) for s in os.environ.get("TOKENIZER_SIZES", "8192,16384,32768").split(",")]
PATTERNS = os.environ.get("TOKENIZER_PATTERNS", "gpt4").split(",")
VAL_FRACTION = 0.05


def documents(files, doc_sep, file_format):
    opts = {"doc_sep": doc_sep, "strict": False, "text_field": "text", "skip_bad_records": False}
    for path in files:
        entry = {"kind": "file", "path": path, "format": file_format}
        yield from iter_documents(entry, opts, SourceStats(), lambda message: None)


def encode_speed(encoding, texts):
    start = time.perf_counter()
    tokens = sum(len(t) for t in encoding.encode_ordinary_batch(texts, num_threads=1))
    return tokens, sum(len(t.encode()) for t in texts) / (time.perf_counter() - start) / 1e6


def main():
    work = tempfile.mkdtemp(prefix="gptmill-tokenizer-")
    gpt2 = load_encoding("gpt2")
    results = {}
    for name, (files_of, doc_sep, file_format) in CORPORA.items():
        files = files_of()
        if not all(os.path.exists(f) for f in files):
            print(f"{name}: not found (it needs ../shared/data), skipped")
            continue
        docs = list(documents(files, doc_sep, file_format))
        val = [d for d in docs if is_val(d.encode("utf-8", "surrogatepass"), VAL_FRACTION)]
        train = os.path.join(work, f"{name.split()[0]}.jsonl")
        with open(train, "w") as f:
            for d in docs:
                if not is_val(d.encode("utf-8", "surrogatepass"), VAL_FRACTION):
                    f.write(json.dumps({"text": d}) + "\n")
        size = sum(len(d.encode()) for d in val)
        base_tokens, base_speed = encode_speed(gpt2, val)
        print(f"{name}: {len(docs):,} documents, {os.path.getsize(train) / 1e6:.1f} MB of train JSONL; val "
              f"{len(val):,} documents, {size / 1e6:.2f} MB", flush=True)
        print(f"  {'gpt2':24s} {size / base_tokens:6.3f} bytes per token, encodes at {base_speed:5.2f} MB/s",
              flush=True)
        results[f"{name}/gpt2"] = {"bytes_per_token": size / base_tokens, "mb_per_s": base_speed}
        for pattern in PATTERNS:
            for vocab in SIZES:
                out = os.path.join(work, f"{name.split()[0]}-{pattern}-{vocab}")
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "prepare", "tokenizer", train, "--vocab-size", str(vocab),
                                "--pattern", pattern, "--out", out], cwd=REPO, check=True, capture_output=True)
                seconds = time.perf_counter() - start
                encoding = load_encoding(out)
                tokens, speed = encode_speed(encoding, val)
                label = f"{vocab} ({pattern} pattern)"
                print(f"  {label:24s} {size / tokens:6.3f} bytes per token ({tokens / base_tokens:.2f}x gpt2's "
                      f"tokens), trained in {seconds:5.1f} s, encodes at {speed:5.2f} MB/s ({speed / base_speed:.2f}x "
                      f"gpt2)", flush=True)
                results[f"{name}/{pattern}-{vocab}"] = {"bytes_per_token": size / tokens, "train_seconds": seconds,
                                                       "mb_per_s": speed, "tokens_vs_gpt2": tokens / base_tokens}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "tokenizer.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
