"""loss.png: train and val loss (and bits per byte, and downstream accuracies) curves of a run, from its
metrics.jsonl."""

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt

from prepare import format as fmt


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
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError) as e:
            raise MetricsError(f"{path}: line {number} is not a metrics record ({e})") from None
    return records


DOWNSTREAM = (("hellaswag/acc_norm", "HellaSwag acc_norm"), ("core", "CORE (centred)"))


def plot_run(run_dir):
    """Loss in nats per token above, bits per byte (the unit that compares tokenizers) below, and downstream
    accuracies under them when the run scores any."""
    lines = read_metrics(run_dir)
    downstream = [(key, label) for key, label in DOWNSTREAM if any(key in m for m in lines)]
    fig, (ax, bpb, *tasks) = plt.subplots(2 + bool(downstream), 1, figsize=(8, 8 + 3 * bool(downstream)), sharex=True,
                                          height_ratios=(3, 2, 2)[: 2 + bool(downstream)])
    ax.plot([m["tokens"] for m in lines], [m["loss"] for m in lines], alpha=0.4, label="train (step)")
    for axis, unit in ((ax, "loss"), (bpb, "bpb")):
        per_dataset = sorted({k for m in lines for k in m if k.startswith(f"val_{unit}/")})  # a mixture's datasets
        val = "val (weighted mean)" if per_dataset else "val"
        curves = [(f"train_eval_{unit}", "train (eval)"), (f"val_{unit}", val)]
        curves += [(k, "val " + k.split("/", 1)[1]) for k in per_dataset]
        for color, (key, label) in enumerate(curves, 1):  # the same colour for a curve in both panels
            points = [(m["tokens"], m[key]) for m in lines if key in m]
            if points:
                style = "--" if key in per_dataset else "-"
                axis.plot(*zip(*points), marker="o", label=label, color=f"C{color}", linestyle=style)
        axis.grid(alpha=0.3)
        axis.legend()
    for color, (key, label) in enumerate(downstream, 4):
        points = [(m["tokens"], m[key]) for m in lines if key in m]
        tasks[0].plot(*zip(*points), marker="o", label=label, color=f"C{color}")
    if tasks:
        tasks[0].set_ylabel("accuracy")
        tasks[0].grid(alpha=0.3)
        tasks[0].legend()
    ax.set_ylabel("loss (nats/token)")
    bpb.set_ylabel("bits per byte")
    (tasks or [bpb])[0].set_xlabel("tokens")
    ax.set_title(os.path.basename(os.path.normpath(run_dir)))
    path = os.path.join(run_dir, "loss.png")
    fig.savefig(path + ".tmp", format="png", dpi=100, bbox_inches="tight")  # a reader never sees half a file
    plt.close(fig)
    os.replace(path + ".tmp", path)


def redraw(run_dir):
    """`train plot RUN`: RUN/loss.png drawn again from its metrics.jsonl; returns its path."""
    if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        raise MetricsError(f"{run_dir}: no metrics.jsonl; is it a run directory?")
    plot_run(run_dir)
    return os.path.join(run_dir, "loss.png")


def truncate_metrics(path, last_step):
    """Drop metric lines past the checkpoint a run resumes from, so the log reads as one run."""
    if not os.path.exists(path):
        return
    kept = [line for line in read_metrics(os.path.dirname(path)) if line["step"] <= last_step]
    fmt.write_atomic(path, "".join(json.dumps(line) + "\n" for line in kept).encode())
