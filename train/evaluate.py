"""Loss and bits per byte of a model on a prepared split: every token once, or a fixed set of windows.

The loss is a sum over predicted tokens divided by their count, so it does not depend on the batch size.
Bits per byte, the unit that compares tokenizers, is as nanochat counts it: the nats of the targets that
stand for text, over ln 2 and the UTF-8 bytes of those targets (end-of-text counts 0 bytes, and its nats
are left out).
"""

import dataclasses
import json
import math

import numpy as np
import torch

from prepare import format as fmt
from prepare.storage import dataset
from prepare.tokenizer import TokenizerError, same_identity, token_bytes
from train.checkpoint import load_encoding, load_model
from train.data import Split, eval_windows
from train.device import autocast, pick_device, pick_dtype


def all_windows(split, files_open_for=64):
    """Consecutive windows of the split's stream predicting every token after the first once (the last window
    may be shorter). Token files are opened afresh every `files_open_for` windows."""
    step = split.context
    for index, start in enumerate(range(0, split.tokens - 1, step)):
        if index % files_open_for == 0:
            opened = {}
        yield split.span(start, min(start + step + 1, split.tokens), opened)


def batches(windows, batch_size):
    """Stack windows of equal length into batches."""
    pending = []
    for window in windows:
        if pending and len(window) != len(pending[0]) or len(pending) == batch_size:
            yield np.stack(pending)
            pending = []
        pending.append(window)
    if pending:
        yield np.stack(pending)


@dataclasses.dataclass
class Score:
    """Sums over the targets scored."""

    nats: float = 0.0  # every target's
    tokens: int = 0
    text_nats: float = 0.0  # the targets that stand for bytes
    bytes: int = 0

    @property
    def loss(self):
        return self.nats / self.tokens

    @property
    def bpb(self):
        return self.text_nats / math.log(2) / self.bytes if self.bytes else float("nan")

    def values(self):
        return [self.nats, self.tokens, self.text_nats, self.bytes]


@torch.no_grad()
def windows_score(model, windows, batch_size, device, dtype, token_bytes):
    """The Score of an iterable of windows, batched by `batch_size`; `token_bytes`: each id's UTF-8 length,
    a tensor on `device`."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for batch in batches(windows, batch_size):
        x = torch.from_numpy(batch[:, :-1]).to(device)
        y = torch.from_numpy(batch[:, 1:]).to(device)
        with autocast(device, dtype):
            _, losses = model(x, y, per_token=True)
        losses, lengths = losses.double(), token_bytes[y]
        sums += torch.stack([losses.sum(), torch.tensor(y.numel(), device=device), (losses * (lengths > 0)).sum(),
                             lengths.sum()])
    model.train(was_training)
    nats, tokens, text_nats, size = sums.tolist()
    return Score(nats, int(tokens), text_nats, int(size))


def split_score(model, split, windows, batch_size, device, dtype, token_bytes):
    """The Score over all of `split` (windows=None) or `windows` fixed windows."""
    source = all_windows(split) if windows is None else iter(eval_windows(split, windows))
    return windows_score(model, source, batch_size, device, dtype, token_bytes)


@dataclasses.dataclass(frozen=True)
class DatasetScore:
    """A checkpoint's Score on a split of one dataset, as `train eval` prints it."""

    run: str
    data: str
    split: str
    score: Score

    def values(self):
        score = self.score
        return {"run": self.run, "data": self.data, "split": self.split, "loss": score.loss,
                "perplexity": math.exp(min(score.loss, 50)), "bpb": score.bpb, "tokens": score.tokens,
                "bytes": score.bytes}

    def line(self):
        score = self.score
        return (f"{self.data}: {self.split} loss {score.loss:.4f}, perplexity {self.values()['perplexity']:.2f}, "
                f"{score.bpb:.4f} bits per byte over {score.tokens:,} tokens ({score.bytes:,} bytes)")


def evaluate_run(run_dir, data_dirs=(), split="val", which="cooled", windows=None, batch_size=8, device="auto",
                 dtype="fp32", as_json=False, *, say):
    """`train eval`: the DatasetScore of a run's checkpoint on `split` of each dataset (the run's own by default),
    each said as soon as it is scored (a line, or a JSON object)."""
    device = pick_device(device)
    model, config = load_model(run_dir, which, device)
    lengths = torch.tensor(token_bytes(load_encoding(run_dir, which, config)), device=device)
    scores = []
    for data in data_dirs or [s.path for s in config.data]:
        snapshot = dataset.open_snapshot(data)
        try:
            manifest = snapshot.manifest
            if not same_identity(dataclasses.asdict(manifest.tokenizer), config.tokenizer):
                raise TokenizerError(f"{data} uses tokenizer {manifest.tokenizer.name}, the model of {run_dir} was "
                                     f"trained on {config.tokenizer['name']}")
            target = Split(snapshot, split, config.context)
            if not manifest.tokens(split) or (windows and not target.windows):
                short = "empty" if not manifest.tokens(split) else "shorter than the context"
                raise fmt.DatasetError(f"{data}: the {split} split is {short}")
            score = split_score(model, target, windows, batch_size, device, pick_dtype(dtype, device), lengths)
        finally:
            snapshot.close()
        scores.append(DatasetScore(run_dir, data, split, score))
        say(json.dumps(scores[-1].values()) if as_json else scores[-1].line())
    return scores
