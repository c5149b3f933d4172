"""The CUDA paths, on a GPU (`pytest -m cuda`, run by bench/gpu_check.py); skipped where torch sees none, so
CI and CPU machines stay green. Each compares the GPU with a reference it must agree with: fp32 for bf16 and
fp16, eager for compiled, an uninterrupted run for a resumed one, the CPU for decoding, Newton-Schulz and
batches, and torch's own allocator for the memory estimate."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from train.cli import cli
from train.data import to_device
from train.generate import sample
from train.memory import step_bytes
from train.models.gpt2 import GPT
from train.models.gpt2_family import GPTConfig
from train.optim import orthogonalize

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]
CUDA = torch.device("cuda")
SHAPE = ["--model", "tiny", "--n-layer", 2, "--n-head", 4, "--n-embd", 128, "--context", 128, "--batch-size", 8,
         "--device", "cuda", "--no-samples", "--eval-every", 0, "--ckpt-every", 0]


def fit(*args):
    result = CliRunner().invoke(cli, ["fit", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return np.array([json.loads(line)["loss"] for line in f])


@pytest.mark.parametrize("dtype,tolerance", [("bf16", 0.05), ("fp16", 0.02)])
def test_half_precision_trains_as_fp32_does(dataset, tmp_path, dtype, tolerance):
    """20 steps: bf16 (8 mantissa bits) and fp16 with its gradient scaler stay within `tolerance` nats of fp32
    at every step (fp32 matmuls on CUDA without TF32, torch's default)."""
    fit("--data", dataset, "--out", tmp_path / "fp32", *SHAPE, "--max-steps", 20, "--dtype", "fp32", "--no-compile")
    fit("--data", dataset, "--out", tmp_path / dtype, *SHAPE, "--max-steps", 20, "--dtype", dtype, "--no-compile")
    gap = np.abs(losses(tmp_path / dtype) - losses(tmp_path / "fp32"))
    assert gap.max() < tolerance, gap


def test_compiled_trains_as_eager(dataset, tmp_path):
    fit("--data", dataset, "--out", tmp_path / "eager", *SHAPE, "--max-steps", 20, "--dtype", "fp32", "--no-compile")
    fit("--data", dataset, "--out", tmp_path / "compiled", *SHAPE, "--max-steps", 20, "--dtype", "fp32", "--compile")
    assert np.abs(losses(tmp_path / "compiled") - losses(tmp_path / "eager")).max() < 1e-3


def test_sigkill_and_resume_on_cuda(dataset, tmp_path):
    """CUDA's atomic adds (embedding backward) make runs differ in the last bits: equal to 1e-4 nats per step."""
    from test_train import killed_and_resumed

    args = ["--data", dataset, *SHAPE, "--max-steps", 40, "--ckpt-every", 10, "--dtype", "bf16", "--no-compile"]
    whole, resumed = killed_and_resumed(tmp_path, args, 40, kill_after=19, resume_args=["--data", dataset])
    assert np.abs(np.array([m["loss"] for m in whole]) - np.array([m["loss"] for m in resumed])).max() < 1e-4


def test_cached_generation_on_cuda_equals_uncached_and_the_cpu():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, context=64, n_layer=2, n_head=2, n_embd=64)).eval()
    prompt = [50256, 464, 2068, 7586]
    on_cpu = list(sample(model, prompt, 80, temperature=0))  # past the context: the sliding window too
    model.to(CUDA)
    assert list(sample(model, prompt, 80, temperature=0, use_cache=True)) == list(sample(model, prompt, 80, temperature=0, use_cache=False)) == on_cpu


def test_newton_schulz_on_cuda_equals_the_cpu():
    matrices = torch.randn(6, 128, 384, generator=torch.Generator().manual_seed(0))
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        ours = orthogonalize(matrices.to(CUDA), dtype).float().cpu()
        assert torch.allclose(ours, orthogonalize(matrices, dtype).float(), atol=tolerance)


def test_pinned_batches_equal_the_cpu_batches():
    windows = np.random.default_rng(0).integers(0, 50257, size=(8, 129)).astype(np.uint16).astype(np.int64)
    for ours, theirs in zip(to_device(windows, CUDA), to_device(windows, torch.device("cpu"))):
        assert torch.equal(ours.cpu(), theirs)


@pytest.mark.parametrize("batch_size", [4, 16])
def test_the_memory_estimate_is_within_15_percent_on_gpt2(batch_size):
    """A gpt2 step under bf16 autocast with AdamW: torch's peak allocation against the estimate runs are
    refused by (less the interpreter's own memory, which is not on the GPU)."""
    from train.memory import RUNTIME_BYTES
    from train.optim import make_optimizer
    from train.config import RunConfig, DataSource

    torch.cuda.reset_peak_memory_stats()
    shape = GPTConfig(vocab_size=50257, context=1024)
    model = GPT(shape).to(CUDA)
    config = RunConfig(data=[DataSource("x")], out="o", preset="gpt2", n_layer=12, n_head=12, n_embd=768, context=1024,
                       batch_size=batch_size, tokens_per_step=batch_size * 1024, lr=6e-4, min_lr=6e-5, dtype="bf16")
    optimizer = make_optimizer(model, config, CUDA)
    x = torch.randint(0, 50257, (batch_size, 1025), device=CUDA)
    for _ in range(2):  # the second step has AdamW's moments allocated
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    measured = torch.cuda.max_memory_allocated()
    estimated = sum(step_bytes(shape, batch_size, "bf16", "cuda")) - RUNTIME_BYTES
    assert abs(estimated - measured) / measured < 0.15, (estimated / 2**30, measured / 2**30)


def test_step_values_arrive_through_pinned_memory():
    from train.trainer import StepValues

    values = StepValues(torch.tensor(2.5, device=CUDA), torch.tensor(0.75, device=CUDA))
    assert values.host.is_pinned() and values.read() == [2.5, 0.75]
