"""The report's plots: matplotlib figures drawn on the Agg canvas (no display, no pyplot's global state) and
returned as PNG data URIs, so that the page holds its images and can be mailed or attached as one file."""

import base64
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

TRAIN, VAL, REMOVED = "#4c72b0", "#dd8452", "#c44e52"


def data_uri(figure):
    """A figure as `data:image/png;base64,...`."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def horizontal_bars(labels, series, xlabel):
    """Stacked horizontal bars, the first label on top: `series` is [(name, values, colour)]."""
    figure = Figure(figsize=(8, 0.5 + 0.3 * max(len(labels), 2)))
    axes = figure.subplots()
    left = np.zeros(len(labels))
    for name, values, colour in series:
        axes.barh(labels, values, left=left, label=name, color=colour)
        left += np.asarray(values, dtype=float)
    axes.invert_yaxis()
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))
    axes.set_xlabel(xlabel)
    axes.legend(loc="lower right")
    return data_uri(figure)


def length_histogram(lengths):
    """Tokens per document, on log-spaced bins when the lengths span more than two orders of magnitude."""
    figure = Figure(figsize=(8, 3.5))
    axes = figure.subplots()
    low, high = max(int(lengths.min()), 1), int(lengths.max())
    if high > 100 * low:
        axes.hist(lengths, bins=np.geomspace(low, high + 1, 50), color=TRAIN)
        axes.set_xscale("log")
    else:
        axes.hist(lengths, bins=min(50, high - low + 1), color=TRAIN)
    axes.axvline(np.median(lengths), color=REMOVED, linestyle="--", label=f"median {np.median(lengths):,.0f}")
    axes.set_xlabel("tokens per document (with its end-of-text token)")
    axes.set_ylabel("documents")
    axes.legend()
    return data_uri(figure)


def generation_lines(generations, train, val):
    """Train and val tokens of each generation kept, side by side (val is often 1% of train: one scale hides it)."""
    figure = Figure(figsize=(8, 3))
    for axes, split, tokens, colour in zip(figure.subplots(1, 2), ("train", "val"), (train, val), (TRAIN, VAL)):
        axes.plot(generations, tokens, marker="o", color=colour)
        axes.set_title(f"{split} tokens")
        axes.set_xlabel("generation")
        if len(generations) <= 20:
            axes.set_xticks(generations)
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_formatter(EngFormatter(sep=""))
    return data_uri(figure)
