"""Learning at equal wall time (or, with LEARNING_STEPS, equal tokens): recipes trained on the same data, each
scored by `python -m train eval` on every val token of it, so that a recipe is kept for what it learns. A row
(RECIPES) is a preset, fit options, or patches of the code in the child processes that train and score it
(training_patches.py, model_patches.py): measurements, not options. nanochat's own recipe is a row too
(nanochat_row.py). Settings and examples: docs/benchmarks.md, Learning.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import model_patches  # bench/, beside this file
import nanochat_row
import training_patches

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINYSTORIES = os.path.join(REPO, "..", "shared", "data", "tinystories", "tinystories_sample.txt")
DATASETS = {
    "tinystories": [TINYSTORIES, "--doc-sep", "<|endoftext|>", "--val-fraction", "0.05"],
    "stdlib": ["stdlib"],
}
MINUTES = float(os.environ.get("LEARNING_MINUTES", 10))
STEPS = os.environ.get("LEARNING_STEPS")  # equal tokens instead of equal time: every recipe runs this many steps
# name: (fit options, changes to the tiny-llama preset[, a patch of the training code: a measurement, not an option])
RECIPES = {
    "tiny": (["--model", "tiny"], {}),  # GPT-2 + AdamW, `make train`'s recipe before the Llama-style one
    "tiny-llama": (["--model", "tiny-llama"], {}),  # RoPE, RMSNorm, QK-norm, SwiGLU, tied, Muon
    "relu2": (["--model", "tiny-llama"], {"mlp": "relu2"}),
    "untied": (["--model", "tiny-llama"], {"tie_embeddings": False}),
    "no-qk-norm": (["--model", "tiny-llama"], {"qk_norm": False}),
    "adamw": (["--model", "tiny-llama", "--optimizer", "adamw", "--lr", "2e-3"], {}),
    # nanoGPT's README CPU recipe
    "nanogpt": (["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--context", "64", "--batch-size", "12",
                 "--lr", "1e-3", "--dropout", "0", "--dtype", "fp32", "--no-compile"], {}),
    "fp32": (["--model", "tiny-llama", "--dtype", "fp32"], {}),  # nanochat runs fp32 on a CPU
    "seed-1": (["--model", "tiny-llama", "--seed", "1"], {}),  # other windows: the noise between runs
    "seed-2": (["--model", "tiny-llama", "--seed", "2"], {}),
    "documents": (["--model", "tiny-llama", "--window-start", "document"], {}),
    "epochs": (["--model", "tiny-llama", "--sampling", "epochs"], {}),
    "documents+epochs": (["--model", "tiny-llama", "--window-start", "document", "--sampling", "epochs"], {}),
    # nanochat's recipe, one difference at a time (#21; docs/log.md), measured by patching the child process. Its
    # warmdown schedule and Muon momentum schedule won and are the default: these rows put back what they replaced.
    "cosine": (["--model", "tiny-llama"], {}, "cosine"),
    "fixed-momentum": (["--model", "tiny-llama"], {}, "fixed_momentum"),
    "before-21": (["--model", "tiny-llama", "--schedule", "cosine", "--sampling", "random", "--lr", "4e-3",
                   "--batch-size", "8"], {"tie_embeddings": True}, "embedding_lr_1x"),
    "untied-lrs": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_lrs"),
    "untied-embedding-lr-10x": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_embedding_lr_10x"),
    "untied-embedding-lr-30x": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_embedding_lr_30x"),
    "embedding-lr-1x": (["--model", "tiny-llama"], {}, "embedding_lr_1x"),
    "embedding-lr-6x": (["--model", "tiny-llama"], {}, "embedding_lr_6x"),
    "embedding-lr-10x": (["--model", "tiny-llama"], {}, "embedding_lr_10x"),
    "nanochat-init": (["--model", "tiny-llama"], {}, "nanochat_init"),
    "embedding-norm": (["--model", "tiny-llama"], {}, "embedding_norm"),
    "untied-lrs+norm": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_lrs,embedding_norm"),
    "momentum-hold": (["--model", "tiny-llama"], {}, "momentum_hold"),
    "qk-scale": (["--model", "tiny-llama"], {}, "qk_scale"),
    "polar-express": (["--model", "tiny-llama"], {}, "polar_express"),
    "nanochat-muon": (["--model", "tiny-llama"], {}, "nanochat_muon"),
    "value-embeddings": (["--model", "tiny-llama"], {}, "value_embeddings"),
    "wd-cosine": (["--model", "tiny-llama"], {}, "wd_cosine"),
    "warmdown-65": (["--model", "tiny-llama", "--warmdown-fraction", "0.65"], {}),  # nanochat's, ours until stop 32
    "warmdown-100": (["--model", "tiny-llama", "--warmdown-fraction", "1"], {}),  # every step after the warmup
    "momentum-warmup-200": (["--model", "tiny-llama"], {}, "momentum_warmup_200"),
    # half the batch early on (8 windows a step, which learned as much per token as 16 up to ~0.5M tokens)
    "batch-ramp-120": (["--model", "tiny-llama"], {}, "batch_ramp_120"),
    "batch-ramp-250": (["--model", "tiny-llama"], {}, "batch_ramp_250"),
    "z-loss": (["--model", "tiny-llama"], {}, "z_loss"),  # PaLM's 1e-4 x log(Z)^2: a loss term only, exportable
    # nanochat's embeddings whole: untied, at its rates, normalised, initialised as its init_weights
    "nanochat-embeddings": (["--model", "tiny-llama"], {"tie_embeddings": False},
                            "untied_lrs,embedding_norm,embedding_init,nanochat_betas"),
}
# karpathy/nanochat's own recipe (bench/nanochat_row.py) on random windows as its anchor ran, or on our epochs,
# and on random windows without one feature of its model (`nanochat-without-smear`): (sampling, features out).
NANOCHAT_ROWS = {"nanochat": ("random", ""), "nanochat-epochs": ("epochs", ""),
                 **{f"nanochat-without-{feature}": ("random", feature) for feature in nanochat_row.FEATURES}}
NANOCHAT = os.environ.get("LEARNING_NANOCHAT")  # a checkout of github.com/karpathy/nanochat, or those rows are skipped


CHOSEN = os.environ.get("LEARNING_RECIPES", "tiny,tiny-llama").split(",")
DATA = os.environ.get("LEARNING_DATA", "tinystories,stdlib").split(",")
TOKENIZERS = os.environ.get("LEARNING_TOKENIZERS", "gpt2").split(",")


def python(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def child(changes, patches, args):
    """`python -m train ARGS` (fit, then eval) with the tiny-llama preset changed, and the code patched, as a
    variant asks: the score must see the model the run trained (an embedding norm, value embeddings)."""
    sys.path.insert(0, REPO)
    from train.cli import cli
    from train.models import PRESETS

    PRESETS["tiny-llama"].update(changes)
    for patch in filter(None, patches.split(",")):
        getattr(model_patches if hasattr(model_patches, patch) else training_patches, patch)()
    cli(args)


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


def nanochat_result(name, data):
    """nanochat's recipe on `data` (bench/nanochat_row.py)."""
    budget = ["--steps", STEPS] if STEPS else ["--minutes", str(MINUTES)]
    sampling, without = NANOCHAT_ROWS[name]
    return json.loads(python(os.path.join(HERE, "nanochat_row.py"), NANOCHAT, data, *budget,
                             "--sampling", sampling, "--without", without).splitlines()[-1])


def recipe_result(name, data, run):
    """A row of RECIPES trained into `run` on `data` by `python -m train fit`, scored by `train eval`."""
    base, *extra = name.split(":")  # "tiny-llama:--lr=6e-3": a row with fit options added
    args, changes, *patches = RECIPES[base]
    budget = ["--max-steps", STEPS] if STEPS else ["--max-time", f"{MINUTES}m"]
    variant = [__file__, "--child", json.dumps(changes), ",".join(patches)]
    python(*variant, "fit", "--data", data, "--out", run, *budget,
           "--device", "cpu", "--no-samples", "--eval-every", "0", *args, *extra)
    score = json.loads(python(*variant, "eval", "--run", run, "--checkpoint", "latest", "--json"))
    steps = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    config = json.load(open(os.path.join(run, "config.json")))
    return {
        "val_loss": score["loss"], "val_bpb": score["bpb"], "val_tokens": score["tokens"], "val_bytes": score["bytes"],
        "steps": len(steps), "train_tokens": steps[-1]["tokens"], "seconds": steps[-1]["elapsed_sec"],
        "median_tokens_per_sec": sorted(m["tokens_per_sec"] for m in steps)[len(steps) // 2],
        "dtype": config["dtype"], "vocab_size": config["tokenizer"]["vocab_size"],
    }


def report(data_name, label, r):
    print(f"{data_name:12s} {label:17s} val {r['val_bpb']:.4f} bits per byte (loss {r['val_loss']:.4f} over "
          f"{r['val_tokens']:,} tokens, {r['val_bytes']:,} bytes); {r['steps']} steps, {r['train_tokens']:,} tokens "
          f"in {r['seconds']:.0f} s, median {r['median_tokens_per_sec']:,.0f} tokens/s ({r['dtype']})", flush=True)


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
                label = name if tokenizer == "gpt2" else f"{name}+{tokenizer}"
                if name in NANOCHAT_ROWS and not NANOCHAT:
                    print(f"{data_name:12s} {label:17s} skipped: give a checkout of github.com/karpathy/nanochat as "
                          f"LEARNING_NANOCHAT=DIR", flush=True)
                    results[f"{data_name}/{label}"] = None
                    continue
                result = (nanochat_result(name, data) if name in NANOCHAT_ROWS
                          else recipe_result(name, data, os.path.join(work, f"{data_name}-{label}")))
                report(data_name, label, result)
                results[f"{data_name}/{label}"] = result
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "learning.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4:])
    else:
        main()
