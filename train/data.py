"""Training data: random context+1 windows from a prepared dataset's shards, read through np.memmap.

The windows of step `s` are a pure function of (seed, s): a resumed or repeated run sees exactly the same
batches whatever the number of processes, each process reading its own slice of them. A window never
crosses a shard's end, and shards are drawn in proportion to the windows they hold.
"""

import numpy as np
import torch

from prepare import format as fmt

EVAL_SEED = 1234  # eval windows are the same for every run on a dataset, whatever its --seed


class Split:
    """One split's live extents in a leased snapshot of the dataset. Token files are opened afresh for each
    batch: a memmap held for a whole run grows RSS."""

    def __init__(self, snapshot, split, context):
        self.snapshot, self.name, self.context = snapshot, split, context
        self.all_extents = snapshot.manifest.extents[split]
        self.extents = [e for e in self.all_extents if e.tokens > context]
        windows = np.array([e.tokens - context for e in self.extents], np.int64)
        self.ends = np.cumsum(windows)  # window w lies in the first extent whose end exceeds w
        self.windows = int(self.ends[-1]) if len(windows) else 0

    def draw(self, count, rng):
        """(extent index, start in it) of `count` windows drawn uniformly over every valid start position."""
        picks = rng.integers(0, self.windows, size=count)
        extent_of = np.searchsorted(self.ends, picks, side="right")
        return extent_of, picks - np.concatenate([[0], self.ends])[extent_of]

    def sample(self, count, rng, rows=slice(None)):
        """The `rows` of `count` (context+1)-token int64 windows drawn with `rng`: every process draws all of a
        step's windows, which costs nothing, and reads only its own. A window never leaves its extent."""
        extent_of, starts = (a[rows] for a in self.draw(count, rng))
        out = np.empty((len(starts), self.context + 1), np.int64)
        for index in np.unique(extent_of):
            extent = self.extents[index]
            tokens = self.snapshot.open_tokens(extent.file)
            for row in np.flatnonzero(extent_of == index):
                start = extent.start + starts[row]
                out[row] = tokens[start : start + self.context + 1]
        return out


def open_dataset(data_dir, context):
    """A leased snapshot of the dataset and its train/val splits, after a cheap check of every file's size.
    The snapshot stays readable, whatever prepare does meanwhile, until it is closed."""
    snapshot = fmt.open_snapshot(data_dir)
    fmt.check_files(data_dir, snapshot.manifest)
    splits = {name: Split(snapshot, name, context) for name in fmt.SPLITS}
    if not splits["train"].windows:
        longest = max((e.tokens for e in snapshot.manifest.extents["train"]), default=0)
        snapshot.close()
        raise fmt.DatasetError(
            f"{data_dir}: context {context} is longer than the data (the longest train extent holds {longest} tokens); "
            f"use a smaller --context or prepare more text"
        )
    return snapshot, splits


def step_windows(split, seed, step, count, rows=slice(None)):
    """The `rows` of one optimizer step's `count` windows (all its micro-batches over all processes)."""
    return split.sample(count, np.random.default_rng([seed, step]), rows)


def eval_windows(split, count, rows=slice(None)):
    """The `rows` of a fixed set of windows, so eval losses compare across runs, resumes and batch sizes."""
    return split.sample(count, np.random.default_rng(EVAL_SEED), rows)


def to_device(windows, device):
    """Inputs and targets (shifted by one) on `device`; pinned, non-blocking copies on CUDA."""
    batch = torch.from_numpy(windows)
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    return batch[:, :-1], batch[:, 1:]
