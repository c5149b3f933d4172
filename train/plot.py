"""loss.png: train and val loss curves of a run, from its metrics.jsonl."""

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt


class MetricsError(Exception):
    pass


def read_metrics(run_dir):
    """The lines of a run's metrics.jsonl. A last line without its newline is a write cut short by a kill
    (the step it logs has no checkpoint yet) and is left out; any other bad line is an error."""
    path = os.path.join(run_dir, "metrics.jsonl")
    with open(path) as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    try:
        return [json.loads(line) for line in lines]
    except ValueError as e:
        raise MetricsError(f"{path}: line {e.doc and lines.index(e.doc) + 1} is not a metrics record ({e})") from None


def plot_run(run_dir):
    lines = read_metrics(run_dir)
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
