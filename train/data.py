"""Training data: random context+1 windows from a prepared dataset's shards, read through np.memmap.

The windows of step `s` are a pure function of (seed, s): a resumed or repeated run sees exactly the same
batches whatever the number of processes, each process reading its own slice of them. A window never
crosses a shard's end, and shards are drawn in proportion to the windows they hold.
"""

import hashlib
import json

import numpy as np
import torch

from prepare import format as fmt

EVAL_SEED = 1234  # eval windows are the same for every run on a dataset, whatever its --seed


class Split:
    """One split's shards, opened afresh for each batch: a memmap held for a whole run grows RSS."""

    def __init__(self, data_dir, manifest, split, context):
        self.data_dir, self.manifest, self.name, self.context = data_dir, manifest, split, context
        self.shards = [s for s in manifest["splits"][split]["shards"] if s["tokens"] > context]
        windows = np.array([s["tokens"] - context for s in self.shards], np.int64)
        self.ends = np.cumsum(windows)  # window w lies in the first shard whose end exceeds w
        self.windows = int(self.ends[-1]) if len(windows) else 0

    def draw(self, count, rng):
        """(shard index, start) of `count` windows drawn uniformly over every valid start position."""
        picks = rng.integers(0, self.windows, size=count)
        shard_of = np.searchsorted(self.ends, picks, side="right")
        return shard_of, picks - np.concatenate([[0], self.ends])[shard_of]

    def sample(self, count, rng, rows=slice(None)):
        """The `rows` of `count` (context+1)-token int64 windows drawn with `rng`: every process draws all of a
        step's windows, which costs nothing, and reads only its own."""
        shard_of, starts = (a[rows] for a in self.draw(count, rng))
        out = np.empty((len(starts), self.context + 1), np.int64)
        for shard in np.unique(shard_of):
            tokens = fmt.open_shard(self.data_dir, self.manifest, self.shards[shard])
            for row in np.flatnonzero(shard_of == shard):
                out[row] = tokens[starts[row] : starts[row] + self.context + 1]
        return out


def open_dataset(data_dir, context):
    """The manifest and its train/val splits, after a cheap check of every shard's size."""
    manifest = fmt.read_manifest(data_dir)
    fmt.check_shard_sizes(data_dir, manifest)
    splits = {name: Split(data_dir, manifest, name, context) for name in fmt.SPLITS}
    if not splits["train"].windows:
        longest = max((s["tokens"] for s in manifest["splits"]["train"]["shards"]), default=0)
        raise fmt.DatasetError(
            f"{data_dir}: context {context} is longer than the data (the longest train shard holds {longest} tokens); "
            f"use a smaller --context or prepare more text"
        )
    return manifest, splits


def train_fingerprint(manifest):
    """Identity of the training data: the train shards' names and checksums."""
    shards = [(s["file"], s["sha256"]) for s in manifest["splits"]["train"]["shards"]]
    return hashlib.sha256(json.dumps([manifest["tokenizer"]["ranks_sha256"], shards]).encode()).hexdigest()


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
