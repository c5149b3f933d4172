"""CPU training throughput of the tiny and gpt2 shapes, against matmul throughput measured in the same run
and against the same model run as nanoGPT runs on a CPU (fp32, eager); then the sampler alone.

Achieved FLOP/s counts 6 x parameters (tied embedding once) + attention (12 x layers x width x context)
per token, as nanoGPT's MFU estimate does.
"""

import os
import tempfile
import time

import torch

from common import run_measured
from train.data import open_dataset, step_windows
from train.device import autocast
from train.fit import make_optimizer
from train.model import GPT, GPTConfig, PRESETS
from train.cli import TRAIN_DEFAULTS

STEPS = {"tiny": 6, "gpt2": 3}
BATCH = {"tiny": TRAIN_DEFAULTS["tiny"]["batch_size"], "gpt2": 2}


def matmul_flops(dtype, n=2048, reps=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def train_flops(preset, dtype, compiled):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50257, **PRESETS[preset])
    model = GPT(config)
    optimizer = make_optimizer(model, {"lr": 1e-4, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95}, torch.device("cpu"))
    step_model = torch.compile(model) if compiled else model
    batch = BATCH[preset]
    x = torch.randint(0, 50257, (batch, config.context))
    y = torch.randint(0, 50257, (batch, config.context))

    def step():
        with autocast(torch.device("cpu"), dtype):
            _, loss = step_model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # compilation and warm-up
        step()
    start = time.perf_counter()
    for _ in range(STEPS[preset]):
        step()
    seconds = (time.perf_counter() - start) / STEPS[preset]
    tokens = batch * config.context / seconds
    return tokens, tokens * model.flops_per_token()


def sampler_figures():
    data = os.path.join(tempfile.mkdtemp(prefix="gptmill-bench-"), "stdlib")
    run_measured(["-m", "prepare", "build", "stdlib", "--out", data])
    context, batch = PRESETS["tiny"]["context"], BATCH["tiny"]
    _, splits = open_dataset(data, context)
    start, count = time.perf_counter(), 0
    for step in range(2000):
        count += len(step_windows(splits["train"], 0, step, 0, batch))
    seconds = time.perf_counter() - start
    return count / seconds, seconds / 2000


def main():
    torch.set_num_threads(os.cpu_count())
    fp32, bf16 = matmul_flops(torch.float32), matmul_flops(torch.bfloat16)
    print(f"matmul 2048^2 on {torch.get_num_threads()} threads: fp32 {fp32 / 1e9:.0f} GFLOP/s, bf16 {bf16 / 1e9:.0f} GFLOP/s")
    for preset in ("tiny", "gpt2"):
        ours = train_flops(preset, "bf16", compiled=True)
        nano = train_flops(preset, "fp32", compiled=False)
        print(
            f"{preset:5s} ours (bf16, compiled): {ours[0]:8,.0f} tok/s {ours[1] / 1e9:6.0f} GFLOP/s = {ours[1] / bf16:.0%} of bf16 matmul | "
            f"nanoGPT-style (fp32, eager): {nano[0]:8,.0f} tok/s {nano[1] / 1e9:6.0f} GFLOP/s | speed-up {ours[0] / nano[0]:.2f}x"
        )
    windows_per_sec, per_step = sampler_figures()
    print(f"sampler: {windows_per_sec:,.0f} windows/s of {PRESETS['tiny']['context'] + 1} tokens; "
          f"{per_step * 1e3:.3f} ms per tiny step of {BATCH['tiny']} windows")


if __name__ == "__main__":
    main()
