"""Learning at equal wall time: recipes trained for the same minutes on the same data, each scored by
`python -m train eval` on every val token of that data.

    make bench BENCH=learning                                  # tiny + AdamW against tiny-llama + Muon, 10 min each
    LEARNING_MINUTES=3 LEARNING_RECIPES=tiny-llama,relu2,untied,no-qk-norm,adamw LEARNING_DATA=tinystories make bench BENCH=learning
    LEARNING_RECIPES=tiny-llama LEARNING_TOKENIZERS=gpt2,8192 make bench BENCH=learning   # gpt2 against a trained vocabulary

A tokenizer other than gpt2 is a vocabulary of that size trained (`prepare tokenizer`) on the train split's
documents only; val is the same documents whatever the tokenizer (a document's split hashes its text), and
runs of different tokenizers compare in val bits per byte, not in loss per token.

Datasets: the TinyStories sample in ../shared/data and CPython's standard library (`stdlib`). Variants of the
Llama-style recipe (MLP, tied embeddings, QK-norm) change the preset in the child process only: they are
measurements, not options.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINYSTORIES = os.path.join(REPO, "..", "shared", "data", "tinystories", "tinystories_sample.txt")
DATASETS = {
    "tinystories": [TINYSTORIES, "--doc-sep", "<|endoftext|>", "--val-fraction", "0.05"],
    "stdlib": ["stdlib"],
}
MINUTES = float(os.environ.get("LEARNING_MINUTES", 10))
# name: (fit options, changes to the tiny-llama preset)
RECIPES = {
    "tiny": (["--model", "tiny"], {}),  # GPT-2 + AdamW, `make train`'s recipe before the Llama-style one
    "tiny-llama": (["--model", "tiny-llama"], {}),  # RoPE, RMSNorm, QK-norm, SwiGLU, tied, Muon
    "relu2": (["--model", "tiny-llama"], {"mlp": "relu2"}),
    "untied": (["--model", "tiny-llama"], {"tie_embeddings": False}),
    "no-qk-norm": (["--model", "tiny-llama"], {"qk_norm": False}),
    "adamw": (["--model", "tiny-llama", "--optimizer", "adamw", "--lr", "2e-3"], {}),
    "nanogpt": (["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--context", "64", "--batch-size", "12",
                 "--lr", "1e-3", "--dropout", "0", "--dtype", "fp32", "--no-compile"], {}),  # nanoGPT's README CPU recipe
}
CHOSEN = os.environ.get("LEARNING_RECIPES", "tiny,tiny-llama").split(",")
DATA = os.environ.get("LEARNING_DATA", "tinystories,stdlib").split(",")
TOKENIZERS = os.environ.get("LEARNING_TOKENIZERS", "gpt2").split(",")


def python(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def child_fit(changes, args):
    """`python -m train fit ARGS` with the tiny-llama preset changed as a variant asks."""
    sys.path.insert(0, REPO)
    from train import config
    from train.cli import cli

    config.PRESETS["tiny-llama"].update(changes)
    cli(["fit", *args])


def trained_dataset(work, data_name, gpt2_data, vocab_size):
    """The corpus of `gpt2_data` tokenized by a vocabulary of `vocab_size` trained on its train split."""
    sys.path.insert(0, REPO)
    from prepare import format as fmt
    from prepare.tokenizer import load_encoding

    manifest = fmt.read_manifest(gpt2_data)
    encoding, eot = load_encoding("gpt2"), manifest.tokenizer.eot_token
    train_docs = os.path.join(work, f"{data_name}-train.jsonl")
    with open(train_docs, "w") as f:
        for extent in manifest.extents["train"]:
            tokens = np.fromfile(fmt.token_path(gpt2_data, extent.file), manifest.dtype)[extent.start : extent.end]
            for piece in np.split(tokens, np.flatnonzero(tokens == eot))[1:]:
                f.write(json.dumps({"text": encoding.decode(piece[1:].tolist())}) + "\n")
    tokenizer = os.path.join(work, "tokenizers", f"{data_name}-{vocab_size}")
    out = python("-m", "prepare", "tokenizer", train_docs, "--vocab-size", str(vocab_size), "--out", tokenizer)
    print(f"{data_name:12s} {out.strip()}", flush=True)
    data = os.path.join(work, f"{data_name}-{vocab_size}")
    python("-m", "prepare", "build", *DATASETS[data_name], "--encoding", tokenizer, "--out", data)
    return data


def main():
    if "tinystories" in DATA and not os.path.exists(TINYSTORIES):
        sys.exit(f"learning bench: {TINYSTORIES} not found (it needs ../shared/data)")
    work = tempfile.mkdtemp(prefix="gptmill-learning-")
    results = {}
    for data_name in DATA:
        gpt2_data = os.path.join(work, data_name)
        python("-m", "prepare", "build", *DATASETS[data_name], "--out", gpt2_data)
        for tokenizer in TOKENIZERS:
            data = gpt2_data if tokenizer == "gpt2" else trained_dataset(work, data_name, gpt2_data, int(tokenizer))
            for name in CHOSEN:
                args, changes = RECIPES[name]
                label = name if tokenizer == "gpt2" else f"{name}+{tokenizer}"
                run = os.path.join(work, f"{data_name}-{label}")
                python(__file__, "--fit", json.dumps(changes), "--data", data, "--out", run, "--max-time", f"{MINUTES}m",
                       "--device", "cpu", "--no-samples", "--eval-every", "0", *args)
                score = json.loads(python("-m", "train", "eval", "--run", run, "--checkpoint", "latest", "--json"))
                steps = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
                config = json.load(open(os.path.join(run, "config.json")))
                rate = sorted(m["tokens_per_sec"] for m in steps)[len(steps) // 2]
                results[f"{data_name}/{label}"] = {
                    "val_loss": score["loss"], "val_bpb": score["bpb"], "val_tokens": score["tokens"], "val_bytes": score["bytes"],
                    "steps": len(steps), "train_tokens": steps[-1]["tokens"], "seconds": steps[-1]["elapsed_sec"],
                    "median_tokens_per_sec": rate, "dtype": config["dtype"], "vocab_size": config["tokenizer"]["vocab_size"],
                }
                print(f"{data_name:12s} {label:17s} val {score['bpb']:.4f} bits per byte (loss {score['loss']:.4f} over "
                      f"{score['tokens']:,} tokens, {score['bytes']:,} bytes); {len(steps)} steps, {steps[-1]['tokens']:,} tokens "
                      f"in {steps[-1]['elapsed_sec']:.0f} s, median {rate:,.0f} tokens/s ({config['dtype']})", flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "learning.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fit"]:
        child_fit(json.loads(sys.argv[2]), sys.argv[3:])
    else:
        main()
