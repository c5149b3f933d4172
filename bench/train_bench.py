"""CPU training throughput of the tiny and gpt2 shapes, against matmul throughput measured in the same run
and against the same model run as nanoGPT runs on a CPU (fp32, eager, full logits and F.cross_entropy);
then the sampler alone.

Each measurement runs in a fresh process, so one's allocator state or threads never help or hurt another,
and the two ways alternate over ROUNDS rounds: this machine's speed drifts by 20% over minutes, so figures
are medians, with the range shown.
Achieved FLOP/s counts 6 x parameters (tied embedding once) + attention (12 x layers x width x context)
per token, as nanoGPT's MFU estimate does.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from torch.nn import functional as F

from common import REPO, run_measured
from train.config import DataSource, RunConfig
from train.data import Mixture, step_windows
from train.device import autocast, compile_pays_off, keep_freed_memory
from train.optim import make_optimizer
from train.models import PRESETS, TRAIN_DEFAULTS
from train.models.gpt2 import GPT
from train.models.gpt2_family import SHAPES, GPTConfig

STEPS = {"tiny": 20, "gpt2": 4}
ROUNDS = 3
BATCH = {"tiny": TRAIN_DEFAULTS["tiny"]["batch_size"], "gpt2": 2}
CPU = torch.device("cpu")


def matmul_flops(dtype, n=2048, reps=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def median(values):
    return sorted(values)[len(values) // 2]


def train_flops(preset, way):
    """(tokens/s, FLOP/s) of optimizer steps on random tokens: `ours` as `python -m train fit` runs on this
    CPU, or `nanogpt` as nanoGPT's train.py does with device=cpu, dtype=float32, compile=False."""
    torch.set_num_threads(os.cpu_count())
    if way == "ours":
        keep_freed_memory()
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50257, **SHAPES[preset])
    model = GPT(config)
    settings = RunConfig(data="", out="", preset=preset, batch_size=BATCH[preset], tokens_per_step=0, lr=1e-4,
                         min_lr=1e-5, **PRESETS[preset])
    optimizer = make_optimizer(model, settings, CPU)
    step_model = torch.compile(model) if way == "ours" and compile_pays_off(CPU) else model
    batch = BATCH[preset]
    x = torch.randint(0, 50257, (batch, config.context))
    y = torch.randint(0, 50257, (batch, config.context))

    def step():
        if way == "ours":
            with autocast(CPU, "bf16"):
                _, loss = step_model(x, y)
        else:
            logits, _ = step_model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up
        step()
    times = []
    for _ in range(STEPS[preset]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = median(times)  # robust to a stray pause of the machine
    tokens = batch * config.context / seconds
    return tokens, tokens * model.flops_per_token()


def measure(preset, way):
    """train_flops in a fresh process."""
    out = subprocess.run([sys.executable, __file__, preset, way], cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def sampler_figures():
    data = os.path.join(tempfile.mkdtemp(prefix="gptmill-bench-"), "stdlib")
    run_measured(["-m", "prepare", "build", "stdlib", "--out", data])
    context, batch = PRESETS["tiny"]["context"], BATCH["tiny"]
    mixture = Mixture([DataSource(data)], context)
    start, count = time.perf_counter(), 0
    for step in range(2000):
        count += len(step_windows(mixture, 0, step, batch)[0])
    seconds = time.perf_counter() - start
    return count / seconds, seconds / 2000


def main():
    torch.set_num_threads(os.cpu_count())
    matmul = {"fp32": [], "bf16": []}
    for preset in ("tiny", "gpt2"):
        runs = {"ours": [], "nanogpt": []}
        for _ in range(ROUNDS):
            matmul["fp32"].append(matmul_flops(torch.float32))
            matmul["bf16"].append(matmul_flops(torch.bfloat16))
            for way in runs:
                runs[way].append(measure(preset, way)[0])
        ours, nano, bf16 = median(runs["ours"]), median(runs["nanogpt"]), median(matmul["bf16"])
        flops = GPT(GPTConfig(vocab_size=50257, **SHAPES[preset])).flops_per_token()
        spread = {way: f"{min(r):,.0f}-{max(r):,.0f}" for way, r in runs.items()}
        print(
            f"{preset:5s} ours (bf16): {ours:7,.0f} tok/s ({spread['ours']}) {ours * flops / 1e9:4.0f} GFLOP/s = "
            f"{ours * flops / bf16:.0%} of bf16 matmul | nanoGPT-style (fp32, eager): {nano:7,.0f} tok/s "
            f"({spread['nanogpt']}) {nano * flops / 1e9:4.0f} GFLOP/s | speed-up {ours / nano:.2f}x"
        )
    print(f"matmul 2048^2 on {torch.get_num_threads()} threads, median of {len(matmul['bf16'])}: "
          f"fp32 {median(matmul['fp32']) / 1e9:.0f} GFLOP/s, bf16 {median(matmul['bf16']) / 1e9:.0f} GFLOP/s")
    windows_per_sec, per_step = sampler_figures()
    print(f"sampler: {windows_per_sec:,.0f} windows/s of {PRESETS['tiny']['context'] + 1} tokens; "
          f"{per_step * 1e3:.3f} ms per tiny step of {BATCH['tiny']} windows")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(train_flops(*sys.argv[1:])))
    else:
        main()
