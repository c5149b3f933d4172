"""Learning at equal time: `make train`'s recipe against nanoGPT's CPU recipe, 10 minutes each, on the
TinyStories sample in ../shared/data, both scored by `python -m train eval` on every val token.

nanoGPT's README CPU recipe: 4 layers, 128 wide, 4 heads, block 64, batch 12, lr 1e-3, no dropout,
fp32, no compile, reproduced here with our trainer's options.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CORPUS = os.path.join(REPO, "..", "shared", "data", "tinystories", "tinystories_sample.txt")
MINUTES = float(os.environ.get("LEARNING_MINUTES", 10))
RECIPES = {
    "gptmill tiny (make train)": ["--model", "tiny"],
    "nanoGPT CPU recipe": ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--context", "64", "--batch-size", "12",
                           "--lr", "1e-3", "--dropout", "0", "--dtype", "fp32", "--no-compile"],
}


def python(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def main():
    if not os.path.exists(CORPUS):
        sys.exit(f"learning bench: {CORPUS} not found (it needs ../shared/data)")
    work = tempfile.mkdtemp(prefix="gptmill-learning-")
    data = os.path.join(work, "data")
    python("-m", "prepare", "build", CORPUS, "--out", data, "--doc-sep", "<|endoftext|>", "--val-fraction", "0.05")
    results = {}
    for name, args in RECIPES.items():
        run = os.path.join(work, name.split()[0])
        python("-m", "train", "fit", "--data", data, "--out", run, "--max-time", f"{MINUTES}m", "--device", "cpu",
               "--no-samples", "--eval-every", "0", *args)
        score = json.loads(python("-m", "train", "eval", "--run", run, "--data", data, "--checkpoint", "latest", "--json"))
        steps = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
        results[name] = {"val_loss": score["loss"], "val_tokens": score["tokens"], "steps": len(steps),
                         "train_tokens": steps[-1]["tokens"], "seconds": steps[-1]["elapsed_sec"]}
        print(f"{name:28s} val loss {score['loss']:.4f} after {len(steps)} steps, {steps[-1]['tokens']:,} tokens, "
              f"{steps[-1]['elapsed_sec']:.0f} s", flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "learning.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
