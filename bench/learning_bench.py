"""Learning at equal wall time: recipes trained for the same minutes on the same data, each scored by
`python -m train eval` on every val token of that data.

    make bench BENCH=learning                                  # tiny + AdamW against tiny-llama + Muon, 10 min each
    LEARNING_STEPS=470 LEARNING_RECIPES=before-21,tiny-llama,cosine,documents make bench BENCH=learning   # equal tokens
    LEARNING_MINUTES=3 LEARNING_RECIPES=tiny-llama,relu2,tied,no-qk-norm,adamw LEARNING_DATA=tinystories make bench BENCH=learning
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
STEPS = os.environ.get("LEARNING_STEPS")  # equal tokens instead of equal time: every recipe runs this many steps
# name: (fit options, changes to the tiny-llama preset[, a patch of the training code: a measurement, not an option])
RECIPES = {
    "tiny": (["--model", "tiny"], {}),  # GPT-2 + AdamW, `make train`'s recipe before the Llama-style one
    "tiny-llama": (["--model", "tiny-llama"], {}),  # RoPE, RMSNorm, QK-norm, SwiGLU, tied, Muon
    "relu2": (["--model", "tiny-llama"], {"mlp": "relu2"}),
    "untied": (["--model", "tiny-llama"], {"tie_embeddings": False}),  # more per token at 470 steps, less at 10 minutes on stdlib
    "no-qk-norm": (["--model", "tiny-llama"], {"qk_norm": False}),
    "adamw": (["--model", "tiny-llama", "--optimizer", "adamw", "--lr", "2e-3"], {}),
    "nanogpt": (["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--context", "64", "--batch-size", "12",
                 "--lr", "1e-3", "--dropout", "0", "--dtype", "fp32", "--no-compile"], {}),  # nanoGPT's README CPU recipe
    "fp32": (["--model", "tiny-llama", "--dtype", "fp32"], {}),  # nanochat runs fp32 on a CPU
    "seed-1": (["--model", "tiny-llama", "--seed", "1"], {}),  # the same recipe on other windows: the noise between runs
    "seed-2": (["--model", "tiny-llama", "--seed", "2"], {}),
    "documents": (["--model", "tiny-llama", "--window-start", "document"], {}),
    "epochs": (["--model", "tiny-llama", "--sampling", "epochs"], {}),
    "documents+epochs": (["--model", "tiny-llama", "--window-start", "document", "--sampling", "epochs"], {}),
    # nanochat's recipe, one difference at a time (#21; docs/log.md), measured by patching the child process. Its
    # warmdown schedule and Muon momentum warmup won and are the default: these rows put back what they replaced.
    "cosine": (["--model", "tiny-llama"], {}, "cosine"),
    "fixed-momentum": (["--model", "tiny-llama"], {}, "fixed_momentum"),
    "before-21": (["--model", "tiny-llama", "--schedule", "cosine", "--sampling", "random"], {"tie_embeddings": True}),
    "untied-lrs": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_lrs"),
    "embedding-norm": (["--model", "tiny-llama"], {}, "embedding_norm"),
    "untied-lrs+norm": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_lrs,embedding_norm"),
}


def cosine():
    """The learning rate of `--schedule cosine` with the momentum warmup of warmdown's."""
    import dataclasses

    from train import fit, optim

    fit.lr_at = lambda step, config: optim.lr_at(step, dataclasses.replace(config, schedule="cosine"))


def fixed_momentum():
    """Muon's momentum before #21: 0.95 at every step."""
    from train import fit

    fit.momentum_at = lambda step, config: 0.95


def untied_lrs():
    """Untied embeddings at nanochat's AdamW rates, 0.3 and 0.008 scaled by 1/sqrt(width/768): 0.73 for the
    token embedding and 0.0196 for the output layer at width 128 (ours: the run's --lr, 0.004, for both)."""
    from train import optim, trainer

    groups, make = optim.param_groups, trainer.make_optimizer
    rates = {"embedding": 0.3 * (768 / 128) ** 0.5, "output": 0.008 * (768 / 128) ** 0.5}

    def split(model, use_muon):
        out = []
        for group in groups(model, use_muon):
            if group.get("decay") and not group.get("use_muon"):  # the embedding and the output layer
                head = [p for p in group["params"] if p is model.lm_head.weight]
                rest = [p for p in group["params"] if p is not model.lm_head.weight]
                out += [dict(group, params=rest, rate=rates["embedding"]), dict(group, params=head, rate=rates["output"])]
            else:
                out.append(group)
        return [g for g in out if g["params"]]

    def made(model, config, device):
        optimizer = make(model, config, device)
        inner = optimizer.step

        def step(*args, **kwargs):  # Trainer.step sets every group's lr to the schedule's: scale it for these
            scheduled = [g["lr"] for g in optimizer.param_groups]
            for g in optimizer.param_groups:
                g["lr"] *= g.get("rate", config.lr) / config.lr
            try:
                return inner(*args, **kwargs)
            finally:
                for g, lr in zip(optimizer.param_groups, scheduled):
                    g["lr"] = lr

        optimizer.step = step
        return optimizer

    optim.param_groups, trainer.make_optimizer = split, made


def embedding_norm():
    """An RMSNorm without gains on the token embedding, as nanochat normalises it before the first block."""
    import torch.nn.functional as F

    from train import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        self.embed_tokens.register_forward_hook(lambda module, inputs, output: F.rms_norm(output, (output.size(-1),)))

    llama.Llama.__init__ = patched


CHOSEN = os.environ.get("LEARNING_RECIPES", "tiny,tiny-llama").split(",")
DATA = os.environ.get("LEARNING_DATA", "tinystories,stdlib").split(",")
TOKENIZERS = os.environ.get("LEARNING_TOKENIZERS", "gpt2").split(",")


def python(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def child_fit(changes, patches, args):
    """`python -m train fit ARGS` with the tiny-llama preset changed, and the training code patched, as a
    variant asks."""
    sys.path.insert(0, REPO)
    from train import config
    from train.cli import cli

    config.PRESETS["tiny-llama"].update(changes)
    for patch in filter(None, patches.split(",")):
        globals()[patch]()
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
                args, changes, *patches = RECIPES[name]
                label = name if tokenizer == "gpt2" else f"{name}+{tokenizer}"
                run = os.path.join(work, f"{data_name}-{label}")
                budget = ["--max-steps", STEPS] if STEPS else ["--max-time", f"{MINUTES}m"]
                python(__file__, "--fit", json.dumps(changes), ",".join(patches), "--data", data, "--out", run, *budget,
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
        child_fit(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4:])
    else:
        main()
