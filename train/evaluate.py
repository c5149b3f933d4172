"""Loss of a model on a prepared split: every token once, or a fixed set of windows.

The loss is a sum over predicted tokens divided by their count, so it does not depend on the batch size.
"""

import numpy as np
import torch

from train.data import eval_windows
from train.device import autocast


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


@torch.no_grad()
def windows_loss(model, windows, batch_size, device, dtype):
    """(summed loss, tokens scored) over an iterable of windows, batched by `batch_size`."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches(windows, batch_size):
        x = torch.from_numpy(batch[:, :-1]).to(device)
        y = torch.from_numpy(batch[:, 1:]).to(device)
        with autocast(device, dtype):
            _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total, count


def split_loss(model, split, windows, batch_size, device, dtype):
    """(mean loss per token, tokens scored) over all of `split` (windows=None) or `windows` fixed windows."""
    source = all_windows(split) if windows is None else iter(eval_windows(split, windows))
    total, count = windows_loss(model, source, batch_size, device, dtype)
    return total / count, count
