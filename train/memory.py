"""What a training step will need, estimated from the configuration before anything is allocated, so that a
run that cannot fit is refused with the figures instead of being killed by the system minutes later."""

import os

import torch

from train.models.layers import CPU_MATH_ATTENTION_MAX
from train.models.loss import GRAD_WEIGHT_ROWS
from train.models import build_model


RUNTIME_BYTES = 512 * 2**20  # torch, numpy and the interpreter themselves


class StepDoesNotFit(Exception):
    """The step does not fit the device; the message gives the estimate and what to lower."""


def parameter_count(shape):
    """Parameters of a model of this shape (tied embeddings counted once), built on the meta device: exact
    for either family, and nothing is allocated."""
    with torch.device("meta"):
        return build_model(shape).num_params()


def step_bytes(shape, batch_size, dtype, device_type, shards=1):
    """(parameters and optimizer, activations, loss) bytes of one micro-batch's forward and backward.

    Parameters: fp32 weights, gradients and AdamW's two moments, plus the half-precision copies autocast
    keeps during a step; sharded over `shards` processes (--shard fsdp), each holds 1/shards of them (plus
    the one block FSDP gathers at a time, not counted). Activations: what a layer keeps for backward per
    token, measured on a CPU `gpt2` step under bf16 autocast (peak RSS at batch 4 and 16: 32 KB per token and
    layer, 42 x width bytes; twice that in fp32), plus the attention matrix where the math kernel runs (short
    contexts on CPU).
    Loss: the chunked output layer's logit buffer, its gradient sums and the hidden-state gradient.
    Runtime: the libraries' own memory."""
    half = dtype in ("bf16", "fp16")
    act = 2 if half else 4
    c, tokens = shape.n_embd, batch_size * shape.context
    params = parameter_count(shape) * (16 + (2 if half else 0)) // shards + RUNTIME_BYTES
    per_token_layer = 21 * c * act
    if device_type == "cpu" and shape.context <= CPU_MATH_ATTENTION_MAX:
        per_token_layer += 2 * act * shape.n_head * shape.context
    activations = (shape.n_layer + 1) * tokens * per_token_layer + 3 * tokens * c * 4
    vocab = shape.padded_vocab
    loss = min(tokens, GRAD_WEIGHT_ROWS) * vocab * act + vocab * c * (act + 4) + tokens * c * act
    return params, activations, loss


def available_bytes(device):
    """Memory a step may use on `device`: free GPU memory, or the system's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return torch.mps.recommended_max_memory()
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):  # not Linux: the physical memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(shape, batch_size, dtype, device, shards=1):
    """Refuse, with the estimate and what to lower, a step that needs more memory than `device` has."""
    parts = step_bytes(shape, batch_size, dtype, device.type, shards)
    needed, available = sum(parts), available_bytes(device)
    if needed > available:
        gib = lambda n: f"{n / 2**30:.1f} GiB"
        raise StepDoesNotFit(
            f"a training step needs about {gib(needed)} (parameters and optimizer {gib(parts[0])}, activations "
            f"{gib(parts[1])} at --batch-size {batch_size} x --context {shape.context}, loss {gib(parts[2])}) and "
            f"{device} has {gib(available)} available; lower --batch-size (raise --tokens-per-step to keep the "
            f"tokens per step), --context, or the model's size"
        )
    return needed
