"""loss.png: train and val loss curves of a run, from its metrics.jsonl."""

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt


def plot_run(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot([m["tokens"] for m in lines], [m["loss"] for m in lines], alpha=0.4, label="train (step)")
    per_dataset = sorted({k for m in lines for k in m if k.startswith("val_loss/")})  # a mixture's datasets
    curves = [("train_eval_loss", "train (eval)"), ("val_loss", "val (weighted mean)" if per_dataset else "val")]
    for key, label in curves + [(k, "val " + k.split("/", 1)[1]) for k in per_dataset]:
        points = [(m["tokens"], m[key]) for m in lines if key in m]
        if points:
            ax.plot(*zip(*points), marker="o", label=label, linestyle="--" if key in per_dataset else "-")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(os.path.basename(os.path.normpath(run_dir)))
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.join(run_dir, "loss.png")
    fig.savefig(path + ".tmp", format="png", dpi=100, bbox_inches="tight")  # a reader never sees half a file
    plt.close(fig)
    os.replace(path + ".tmp", path)
