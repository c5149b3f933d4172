"""train: the sampler, learning, gradient accumulation, exact resume after SIGKILL, and bad input."""

import dataclasses
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import REPO, prepare, write
from prepare import format as fmt
from train import checkpoint
from train.cli import cli
from train.config import DataSource
from train.data import Mixture, open_dataset, step_windows, to_device
from train.models.gpt2 import GPT
from train.models.gpt2_family import GPTConfig
from train.models.loss import CHUNK_ROWS, output_loss

RUN_OPTIONS = ["--batch-size", 8, "--no-compile", "--device", "cpu", "--no-samples", "--eval-windows", 16]
SMALL = ["--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32, *RUN_OPTIONS]


def train(*args, ok=True):
    result = CliRunner().invoke(cli, ["fit", *map(str, args)], catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


def train_process(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-m", "train", "fit", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_help_never_imports_torch():
    """`python -m train [COMMAND] --help` answers at once: only the commands that run import torch."""
    code = ("import sys; from click.testing import CliRunner; from train.cli import cli; "
            "results = [CliRunner().invoke(cli, [*c, '--help']) for c in [[], *([n] for n in cli.commands)]]; "
            "sys.exit(any(r.exit_code for r in results) or 'torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# The sampler.


def stream(split):
    """A split's live extents, one after another, as the sampler reads them."""
    return np.concatenate([np.asarray(split.snapshot.open_tokens(e.file)[e.start : e.end], np.int64) for e in split.extents])


def test_windows_are_runs_of_the_stream_of_extents_and_shifted(dataset):
    mixture = Mixture([DataSource(dataset)], 32)
    train_split = mixture.splits[0]["train"]
    assert len(train_split.extents) > 2
    tokens = stream(train_split)
    windows, which = step_windows(mixture, seed=0, step=0, count=500)
    rng = np.random.default_rng([0, 0])
    rng.random(500)  # the step draws each window's dataset first
    starts = train_split.draw(500, rng)
    assert (which == 0).all() and windows.shape == (500, 33)
    assert all(np.array_equal(w, tokens[s : s + 33]) for w, s in zip(windows, starts))
    # A window that starts near an extent's end goes on into the next extent (another file here).
    end = int(train_split.ends[0])
    (crossing,) = train_split.read(np.array([end - 5]))
    assert np.array_equal(crossing, tokens[end - 5 : end + 28]) and train_split.extents[0].file != train_split.extents[1].file
    x, y = to_device(windows, torch.device("cpu"))
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.shape == y.shape == (500, 32)


def test_batches_are_a_function_of_seed_and_step_and_ranks_read_slices(dataset):
    mixture = Mixture([DataSource(dataset)], 32)
    windows = lambda seed, step, rows=slice(None): step_windows(mixture, seed, step, 16, rows)[0]
    assert np.array_equal(windows(1, 5), windows(1, 5))
    assert not np.array_equal(windows(1, 5), windows(1, 6))
    assert not np.array_equal(windows(1, 5), windows(2, 5))
    # Two processes each read their half of the same step's windows.
    halves = [windows(1, 5, slice(r * 8, (r + 1) * 8)) for r in (0, 1)]
    assert np.array_equal(np.concatenate(halves), windows(1, 5))


# Learning.


def test_tiny_model_overfits_tiny_corpus(vocabulary, tmp_path):
    write(tmp_path / "c" / "a.txt", "the cat sat on the mat. " * 40)
    write(tmp_path / "c" / "b.txt", "a dog ran in the park. " * 40)
    prepare("build", tmp_path / "c", "--out", tmp_path / "data", "--encoding", vocabulary)
    train("--data", tmp_path / "data", "--out", tmp_path / "run", *SMALL, "--max-steps", 150, "--lr", 1e-2,
          "--eval-every", 0, "--dtype", "fp32")
    lines = metrics(tmp_path / "run")
    assert lines[0]["loss"] > math.log(512) - 0.5  # about uniform over the 512 ids at the start
    assert lines[-1]["train_eval_loss"] < 1.0
    for key in ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_sec"):
        assert key in lines[-1]
    assert "val_loss" in lines[-1]
    assert os.path.exists(tmp_path / "run" / "loss.png")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_both_precisions_train(dataset, tmp_path, dtype):
    train("--data", dataset, "--out", tmp_path / dtype, *SMALL, "--max-steps", 30, "--eval-every", 0, "--dtype", dtype,
          "--lr", 3e-3)
    lines = metrics(tmp_path / dtype)
    assert json.load(open(tmp_path / dtype / "config.json"))["dtype"] == dtype
    assert lines[-1]["train_eval_loss"] < lines[0]["loss"] - 0.8  # from ln(512) = 6.24 to 5.28 in both


def test_gradient_accumulation_matches_one_big_batch(dataset):
    windows, _ = step_windows(Mixture([DataSource(dataset)], 32), 0, 0, 8)
    grads = []
    for micro in (1, 2):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=50257, context=32, n_layer=2, n_head=2, n_embd=32))
        size = 8 // micro
        for m in range(micro):
            x, y = to_device(windows[m * size : (m + 1) * size], torch.device("cpu"))
            _, loss = model(x, y)
            (loss / micro).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-5)

    # The same holds through the trainer: --tokens-per-step 2 x batch 4 equals batch 8.
    def run(out, *extra):
        train("--data", dataset, "--out", out, *SMALL, "--max-steps", 3, "--eval-every", 0, "--dtype", "fp32", *extra)
        return [m["loss"] for m in metrics(out)]

    base = dataset.parent
    one = run(base / "accum1", "--batch-size", 8)
    two = run(base / "accum2", "--batch-size", 4, "--tokens-per-step", 256)
    assert np.allclose(one, two, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_output_loss_equals_cross_entropy_of_full_logits(dtype):
    torch.manual_seed(0)
    rows = CHUNK_ROWS + 45  # a partial last chunk and a partial last softmax group
    x = torch.randn(rows, 24, requires_grad=True)
    weight = torch.randn(500, 24, requires_grad=True)
    targets = torch.randint(0, 500, (rows,))
    with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
        expected = F.cross_entropy((x @ weight.T).float(), targets)
        chunked = output_loss(x, weight, targets)
        with torch.no_grad():
            evaluated = output_loss(x, weight, targets)
    expected_grads = torch.autograd.grad(expected, (x, weight))
    chunked_grads = torch.autograd.grad(chunked, (x, weight))
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2  # bf16: the gradient of the logits is rounded per chunk
    assert torch.allclose(chunked, expected, rtol=1e-6) and evaluated == chunked
    for ours, theirs in zip(chunked_grads, expected_grads):
        assert ours.dtype == torch.float32
        assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max()


def test_chunked_output_loss_of_a_vanishing_target_probability():
    # Row 0's target probability underflows fp32 (e^-200): its loss must still be 200, not inf; the
    # other rows are uniform over 4 tokens.
    x = torch.eye(4)
    weight = torch.zeros(4, 4)
    weight[0, 0] = 200.0
    targets = torch.tensor([1, 1, 1, 1])
    loss = output_loss(x, weight, targets)
    assert torch.allclose(loss, F.cross_entropy(x @ weight.T, targets)) and abs(loss.item() - (200 + 3 * np.log(4)) / 4) < 1e-4


# Exact resume.


def killed_and_resumed(tmp_path, args, steps, kill_after, resume_args=()):
    """Metrics of a run of `steps` steps left whole (tmp_path/whole), and of the same run (tmp_path/killed)
    SIGKILLed once its checkpoint of step `kill_after` or later is published, then resumed with --resume.
    Only the killed run needs a process of its own; the other two run in this one."""
    train("--out", tmp_path / "whole", *args)
    killed = train_process("--out", tmp_path / "killed", *args)
    pointer = tmp_path / "killed" / checkpoint.POINTER
    deadline = time.time() + 300
    while time.time() < deadline and not (pointer.exists() and json.load(open(pointer))["latest"] >= f"step-{kill_after:07d}"):
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.load(open(pointer))["latest"] < f"step-{steps - 1:07d}", "the kill must land before the run ends"
    assert "resuming" in train("--out", tmp_path / "killed", "--resume", *resume_args).output
    a, b = metrics(tmp_path / "whole"), metrics(tmp_path / "killed")
    assert [m["step"] for m in b] == list(range(steps))
    return a, b


def test_sigkill_and_resume_logs_the_same_losses(dataset, tmp_path):
    args = ["--data", dataset, *SMALL, "--max-steps", 60, "--ckpt-every", 10, "--eval-every", 20, "--dropout", 0.1]
    a, b = killed_and_resumed(tmp_path, args, 60, kill_after=29, resume_args=["--data", dataset])
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"] and x["grad_norm"] == y["grad_norm"] and x.get("val_loss") == y.get("val_loss"), x["step"]


def test_resume_refuses_changed_training_data(dataset, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    train("--data", data, "--out", tmp_path / "run", *SMALL, "--max-steps", 2, "--eval-every", 0)
    manifest = fmt.read_manifest(data)
    manifest.extents["train"] = manifest.extents["train"][1:]  # as if an input had been deleted
    manifest.generation += 1
    fmt.publish(data, manifest)
    result = train("--out", tmp_path / "run", "--data", data, "--resume", "--max-steps", 4, ok=False)
    assert "train data changed" in result.stderr and "--allow-data-change" in result.stderr and "--follow-data" in result.stderr
    train("--out", tmp_path / "run", "--data", data, "--resume", "--max-steps", 4, "--allow-data-change")
    assert metrics(tmp_path / "run")[-1]["step"] == 3


# Checkpoints that carry code are refused.


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused(dataset, tmp_path):
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 2, "--eval-every", 0)
    folder = checkpoint.locate(tmp_path / "run")
    marker = tmp_path / "pwned"
    exploit = Exploit()
    exploit.marker = marker
    state = torch.load(os.path.join(folder, "state.pt"), weights_only=True)
    state["payload"] = exploit
    torch.save(state, os.path.join(folder, "state.pt"))
    result = train("--out", tmp_path / "run", "--data", dataset, "--resume", "--max-steps", 4, ok=False)
    assert "refused" in result.stderr and "state.pt" in result.stderr
    assert not marker.exists(), "loading a checkpoint must never run its code"


# Bad input.


def test_no_manifest_says_how_to_make_one(tmp_path):
    os.makedirs(tmp_path / "empty")
    result = train("--data", tmp_path / "empty", "--out", tmp_path / "run", *SMALL, "--max-steps", 1, ok=False)
    assert "no manifest.json" in result.stderr and "python -m prepare build" in result.stderr


def test_truncated_shard_is_named(dataset, tmp_path):
    import shutil

    shutil.copytree(dataset, tmp_path / "data")
    shard = Path(fmt.token_path(tmp_path / "data", fmt.read_manifest(tmp_path / "data").extents["train"][1].file))
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 10)
    result = train("--data", tmp_path / "data", "--out", tmp_path / "run", *SMALL, "--max-steps", 1, ok=False)
    assert shard.name in result.stderr and "truncated" in result.stderr


def test_context_longer_than_data(tmp_path):
    write(tmp_path / "c" / "a.txt", "short text")
    write(tmp_path / "c" / "b.txt", "another short text")
    prepare("build", tmp_path / "c", "--out", tmp_path / "data")
    result = train("--data", tmp_path / "data", "--out", tmp_path / "run", *SMALL, "--max-steps", 1, ok=False)
    assert "context 32 is longer than the data" in result.stderr


def test_unavailable_device(dataset, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 1, "--device", "cuda", ok=False)
    assert "--device cuda" in result.stderr and "no CUDA" in result.stderr
    result = train("--data", dataset, "--out", tmp_path / "run2", *SMALL, "--max-steps", 1, "--device", "tpu", ok=False)
    assert "unknown device" in result.stderr


def test_checkpoint_of_another_shape_is_refused(dataset, tmp_path):
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 1, "--eval-every", 0)
    weights, _ = checkpoint.load(checkpoint.locate(tmp_path / "run"))
    model = GPT(GPTConfig(vocab_size=50257, context=32, n_layer=1, n_head=2, n_embd=64))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
        checkpoint.load_weights(model, weights, "run")
    other_vocab = GPT(GPTConfig(vocab_size=100277, context=32, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(checkpoint.CheckpointError, match="wte"):
        checkpoint.load_weights(other_vocab, weights, "run")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(dataset, tmp_path, monkeypatch):
    original = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **kwargs):
        logits, loss = original(self, idx, targets, **kwargs)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] > 5:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    result = train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 20, "--ckpt-every", 2,
                   "--eval-every", 0, ok=False)
    assert "loss became nan at step 5" in result.stderr and "step-0000003" in result.stderr
    weights, state = checkpoint.load(checkpoint.locate(tmp_path / "run"))
    assert state["step"] == 3 and all(torch.isfinite(w).all() for w in weights.values())


def test_existing_run_is_not_overwritten(dataset, tmp_path):
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 1, "--eval-every", 0)
    result = train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 1, ok=False)
    assert "already holds a run" in result.stderr and "--resume" in result.stderr


def test_trackers_are_optional_and_named_when_missing(dataset, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_trackers(name, *args, **kwargs):
        if name in ("wandb", "torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trackers)
    result = train("--data", dataset, "--out", tmp_path / "tb", *SMALL, "--max-steps", 1, "--tensorboard", ok=False)
    assert "pip install tensorboard" in result.stderr
    result = train("--data", dataset, "--out", tmp_path / "wb", *SMALL, "--max-steps", 1, "--wandb-project", "x", ok=False)
    assert "pip install wandb" in result.stderr
    assert not os.path.exists(tmp_path / "tb") and not os.path.exists(tmp_path / "wb"), "refused before the run's first file"


def test_trackers_receive_every_step(dataset, tmp_path, monkeypatch):
    import types

    logged = []
    fake = types.SimpleNamespace(init=lambda **kwargs: logged.append(("init", kwargs["project"])),
                                 log=lambda values, step: logged.append((step, values["loss"])))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 3, "--eval-every", 0, "--wandb-project", "p")
    assert logged[0] == ("init", "p")
    assert [(m["step"], m["loss"]) for m in metrics(tmp_path / "run")] == logged[1:]


def test_ctrl_c_saves_and_resume_continues(dataset, tmp_path):
    proc = train_process("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 100000, "--ckpt-every", 0,
                         "--eval-every", 0)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130
    assert "checkpoint saved" in proc.stdout.read()
    last = metrics(tmp_path / "run")[-1]["step"]
    _, state = checkpoint.load(checkpoint.locate(tmp_path / "run"))
    assert state["step"] == last
    train("--out", tmp_path / "run", "--data", dataset, "--resume", "--max-steps", last + 3)
    assert [m["step"] for m in metrics(tmp_path / "run")] == list(range(last + 3))


# The sampler, the schedule and the optimizer groups, as the trainer uses them.


def starts_per_extent(split, starts):
    """(observed, expected) window starts per extent, for starts drawn uniformly over the stream."""
    begins = split.ends - np.array([e.tokens for e in split.extents])
    observed = np.bincount(np.searchsorted(split.ends, starts, side="right"), minlength=len(split.extents))
    expected = (np.minimum(split.ends, split.windows) - np.minimum(begins, split.windows)) / split.windows * len(starts)
    return observed, expected


def assert_uniform(observed, expected):
    used = expected > 0
    chi2 = ((observed[used] - expected[used]) ** 2 / expected[used]).sum()
    k = used.sum() - 1  # the chi-square 99.9% quantile for k degrees of freedom (Wilson-Hilferty)
    assert chi2 < k * (1 - 2 / (9 * k) + 3.09 * (2 / (9 * k)) ** 0.5) ** 3, (observed, expected)
    assert not observed[~used].any()


def test_real_sampler_draws_extents_in_proportion_to_their_tokens(dataset):
    _, splits = open_dataset(dataset, 32)
    s = splits["train"]
    starts = s.draw(100_000, np.random.default_rng(0))
    assert (starts >= 0).all() and (starts < s.tokens - 32).all()
    assert_uniform(*starts_per_extent(s, starts))
    # sample() reads exactly the windows draw() picks.
    tokens = stream(s)
    windows = s.sample(50, np.random.default_rng(1))
    for w, start in zip(windows, s.draw(50, np.random.default_rng(1))):
        assert np.array_equal(w, tokens[start : start + 33])


def test_no_live_token_of_a_fragmented_dataset_is_out_of_reach(tmp_path):
    """Notes edited a little every night: retired documents split token files into extents shorter than the
    context, which the sampler must still read (across extents), every one in proportion to its tokens."""
    rng = np.random.default_rng(0)
    words = "note meeting idea todo fix plan review draft call lunch".split()
    notes = {i: " ".join(rng.choice(words, 75)) for i in range(60)}
    for i, text in notes.items():
        write(tmp_path / "notes" / f"{i:02d}.txt", text)
    prepare("build", tmp_path / "notes", "--out", tmp_path / "data", "--val-fraction", 0.01, "--compact-at", 1)
    for i in range(0, 60, 3):  # a third edited
        write(tmp_path / "notes" / f"{i:02d}.txt", notes[i] + " edited")
    prepare("build", tmp_path / "notes", "--out", tmp_path / "data", "--val-fraction", 0.01, "--compact-at", 1)
    _, splits = open_dataset(tmp_path / "data", 256)
    s = splits["train"]
    short = [e.tokens for e in s.extents if e.tokens <= 256]
    assert len(short) >= 10 and sum(short) > 0.15 * s.tokens, "the corpus must hold the fragments it is about"
    starts = s.draw(200_000, np.random.default_rng(0))
    covered = np.zeros(s.tokens + 1, np.int64)
    np.add.at(covered, starts, 1)
    np.add.at(covered, starts + 257, -1)
    assert (np.cumsum(covered)[: s.tokens] > 0).all(), "every live token is read by some window"
    assert_uniform(*starts_per_extent(s, starts))


def test_a_shard_of_exactly_context_plus_one_tokens_gives_one_window(tmp_path):
    write(tmp_path / "c" / "a.txt", "one two three four five six seven eight nine ten")
    prepare("build", tmp_path / "c" / "a.txt", "--out", tmp_path / "data", "--val-fraction", 0.01)
    train_tokens = fmt.read_manifest(tmp_path / "data").tokens("train")
    snapshot, splits = open_dataset(tmp_path / "data", train_tokens - 1)
    assert splits["train"].windows == 1
    extent = splits["train"].extents[0]
    whole = np.asarray(snapshot.open_tokens(extent.file)[extent.start : extent.end])
    windows, _ = step_windows(Mixture([DataSource(tmp_path / "data")], train_tokens - 1), 0, 3, 4)
    assert all(np.array_equal(w, whole) for w in windows)
    result = train("--data", tmp_path / "data", "--out", tmp_path / "run", *SMALL[:-6], "--context", train_tokens,
                   "--device", "cpu", "--max-steps", 1, ok=False)
    assert f"context {train_tokens} is longer than the data" in result.stderr


def test_fp16_with_a_gradient_scaler_skips_an_overflow_and_goes_on(dataset):
    """The fp16 path of GPUs before Ampere, on CPU (torch has fp16 autocast and GradScaler("cpu") there): an
    overflowing step is skipped and halves the scale; a non-finite loss closes the scaler's step, so the next
    one runs (it used to raise in unscale_)."""
    from train.config import RunConfig
    from train.distributed import World
    from train.history import History, first_era
    from train.trainer import Trainer

    config = RunConfig(data=[DataSource(dataset)], out="o", preset="tiny", n_layer=1, n_head=2, n_embd=32, context=32,
                       batch_size=4, tokens_per_step=128, lr=3e-3, min_lr=3e-4, dtype="fp16", compile=False)
    mixture = Mixture(config.data, config.context)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=mixture.manifest.tokenizer.vocab_size, context=32, n_layer=1, n_head=2, n_embd=32))
    history = History([first_era(mixture.generations)], mixture, config, 4)
    trainer = Trainer(model, mixture, history, config, World(0, 1, torch.device("cpu")), [1] * mixture.manifest.tokenizer.vocab_size)
    weights = lambda: [p.detach().clone() for p in model.parameters()]
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # far past fp16's range: gradients overflow
    before = weights()
    step = lambda n: trainer.values(trainer.step(trainer.windows(n)[0], config.lr))  # noqa: E731
    loss, grad_norm, _ = step(0)
    assert math.isfinite(loss) and not math.isfinite(grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, weights())), "the overflowing step is skipped"
    assert trainer.scaler.get_scale() == 2.0**39
    trainer.scaler.update(2.0**10)
    forward = trainer.train_model.forward
    trainer.train_model.forward = lambda x, y: (None, forward(x, y)[1] * float("nan"))
    assert math.isnan(step(1)[0])
    trainer.train_model.forward = forward
    losses = [step(n)[0] for n in range(2, 12)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    assert not all(torch.equal(a, b) for a, b in zip(before, weights()))


def test_a_step_is_read_once_the_next_is_queued(dataset, tmp_path, monkeypatch):
    """No host sync per step (#22): step s's loss is read after step s+1 is queued, so a GPU always has work;
    a step whose evaluation or checkpoint needs its weights, and the last, is read before the next is queued."""
    from train.trainer import StepValues, Trainer

    events = []
    queue, read = Trainer.step, StepValues.read

    def queued(self, windows, lr, momentum):
        values = queue(self, windows, lr, momentum)
        values.number = sum(e.startswith("step") for e in events)
        events.append(f"step {values.number}")
        return values

    def reading(self):
        events.append(f"read {self.number}")
        return read(self)

    monkeypatch.setattr(Trainer, "step", queued)
    monkeypatch.setattr(StepValues, "read", reading)
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 7, "--eval-every", 3, "--ckpt-every", 0)
    assert events == ["step 0", "step 1", "read 0", "step 2", "read 1", "step 3", "read 2", "read 3",  # step 3 is evaluated
                      "step 4", "step 5", "read 4", "step 6", "read 5", "read 6"]  # the last
    assert [m["step"] for m in metrics(tmp_path / "run")] == list(range(7))


def test_lr_schedule_warms_up_holds_then_decays_to_min_lr_at_the_last_step():
    from train.config import RunConfig, StepPlan
    from train.schedule import lr_at as lr_of

    config = RunConfig(data="d", out="o", preset="tiny", n_layer=1, n_head=1, n_embd=8, context=8, batch_size=1,
                       tokens_per_step=8, lr=1.0, min_lr=0.1)
    lr_at = lambda step, config: lr_of(step, config, StepPlan(steps=100, warmup_steps=10))  # noqa: E731
    assert np.allclose([lr_at(s, config) for s in range(3)], [0.1, 0.2, 0.3], rtol=1e-12, atol=0)
    assert lr_at(9, config) == 1.0 and lr_at(10, config) == 1.0
    assert abs(lr_at(99, config) - 0.1) < 1e-12, "the last step runs at min_lr"
    decay_from = 99 - round(0.5 * 99)  # step 49: flat until there, then linear over the last half of the steps
    assert all(lr_at(s, config) == 1.0 for s in range(9, decay_from + 1)) and lr_at(decay_from + 1, config) < 1.0
    assert abs(lr_at((decay_from + 99) // 2, config) - 0.55) < 0.01
    lrs = [lr_at(s, config) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    config = dataclasses.replace(config, warmdown_fraction=0.65)  # nanochat's: step 35, 64 steps of decay
    assert lr_at(35, config) == 1.0 and lr_at(36, config) == pytest.approx(1 - 0.9 / 64) and lr_at(99, config) == pytest.approx(0.1)
    config = dataclasses.replace(config, warmdown_fraction=0.0)  # no decay at all
    assert {lr_at(s, config) for s in range(10, 100)} == {1.0}


def test_muon_momentum_warms_up_holds_then_comes_down_with_the_learning_rate():
    from train.schedule import momentum_at as momentum_of

    from train.config import RunConfig, StepPlan

    config = RunConfig(data="d", out="o", preset="tiny", n_layer=1, n_head=1, n_embd=8, context=8, batch_size=1,
                       tokens_per_step=8, lr=1.0, min_lr=0.1)
    plan = StepPlan(steps=2000, warmup_steps=10)
    momentum_at = lambda step, config: momentum_of(step, config, plan)  # noqa: E731
    assert momentum_at(0, config) == 0.85 and momentum_at(200, config) == pytest.approx(0.91)
    decay_from = 1999 - round(0.5 * 1999)  # where the learning rate's warmdown begins
    assert momentum_at(400, config) == momentum_at(decay_from, config) == 0.97
    assert momentum_at((decay_from + 1999) / 2, config) == pytest.approx(0.935)
    assert momentum_at(1999, config) == pytest.approx(0.90)
    momenta = [momentum_at(s, config) for s in range(2000)]
    assert all(a <= b for a, b in zip(momenta[:400], momenta[1:401])) and all(a >= b for a, b in zip(momenta[decay_from:], momenta[decay_from + 1:]))
    plan = dataclasses.replace(plan, steps=100)  # a short run: the warmdown starts before the warmup ends, from where the warmup got to
    assert momentum_at(99, config) == pytest.approx(0.90) and momentum_at(35, config) == pytest.approx(0.85 + 0.12 * 35 / 400)
    config = dataclasses.replace(config, schedule="cosine")
    assert momentum_at(0, config) == momentum_at(10**6, config) == 0.95


def test_a_run_configured_before_the_new_defaults_resumes_as_it_started(dataset, tmp_path):
    """Runs written before the schedule and sampling defaults changed carry neither field: on --resume they keep
    the cosine schedule, momentum 0.95 and random windows they started with. Runs written before the warmdown's
    length was a field keep the 65% they started with."""
    from train.config import from_record
    from train.schedule import lr_at

    def written_before(out, *fields):
        for path in [out / "config.json", os.path.join(checkpoint.locate(out), "config.json")]:
            config = json.load(open(path))
            for field in fields:
                del config[field]
            json.dump(config, open(path, "w"))
        path = os.path.join(checkpoint.locate(out), "state.pt")  # and before histories (#37)
        state = torch.load(path, weights_only=True)
        del state["history"]
        torch.save(state, path)
        return out

    continual = ("cooldown_from", "cooldown_steps", "follow_data", "replay")  # #37's fields
    train("--data", dataset, *SMALL, "--eval-every", 0, "--max-steps", 6, "--out", tmp_path / "old")
    train("--out", written_before(tmp_path / "old", "schedule", "sampling", "window_start", "warmdown_fraction", *continual), "--resume",
          "--max-steps", 12)
    config, plan = from_record(json.load(open(tmp_path / "old" / "config.json")), "config")
    assert (config.schedule, config.sampling, config.window_start) == ("cosine", "random", "any")
    assert [m["lr"] for m in metrics(tmp_path / "old")[6:]] == [lr_at(s, config, plan) for s in range(6, 12)]
    assert lr_at(8, config, plan) != lr_at(8, dataclasses.replace(config, schedule="warmdown"), plan)

    train("--data", dataset, *SMALL, "--eval-every", 0, "--max-steps", 6, "--out", tmp_path / "warmdown")
    train("--out", written_before(tmp_path / "warmdown", "warmdown_fraction", *continual), "--resume", "--max-steps", 12)
    config, plan = from_record(json.load(open(tmp_path / "warmdown" / "config.json")), "config")
    assert (config.schedule, config.warmdown_fraction) == ("warmdown", 0.65)
    rates = [m["lr"] for m in metrics(tmp_path / "warmdown")[6:]]
    assert rates == [lr_at(s, config, plan) for s in range(6, 12)]
    assert rates != [lr_at(s, dataclasses.replace(config, warmdown_fraction=0.5), plan) for s in range(6, 12)]


def test_weight_decay_only_on_matrices():
    from train.config import RunConfig
    from train.optim import make_optimizer

    model = GPT(GPTConfig(vocab_size=100, context=8, n_layer=2, n_head=2, n_embd=16))
    config = RunConfig(data="d", out="o", preset="tiny", n_layer=2, n_head=2, n_embd=16, context=8, batch_size=1,
                       tokens_per_step=8, lr=1.0, min_lr=0.1, weight_decay=0.3)
    decayed, plain = make_optimizer(model, config, torch.device("cpu")).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.3 and plain["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decayed["params"]) == sorted(n for n, p in model.named_parameters() if p.dim() == 2)
    assert all(n.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight")) for n in (names[id(p)] for p in plain["params"]))
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


# The loss: bounded memory, ignored targets.


def test_chunked_loss_over_several_gradient_buffers_and_with_ignored_targets(monkeypatch):
    from train.models import loss as loss_module

    monkeypatch.setattr(loss_module, "GRAD_WEIGHT_ROWS", 512)  # 1,500 rows: three full buffers and a partial one
    torch.manual_seed(0)
    x = torch.randn(1500, 24, requires_grad=True)
    weight = torch.randn(300, 24, requires_grad=True)
    targets = torch.randint(0, 300, (1500,))
    targets[::5] = -1
    expected = F.cross_entropy(x @ weight.T, targets, ignore_index=-1)
    chunked = output_loss(x, weight, targets)
    assert torch.allclose(chunked, expected, rtol=1e-6)
    for ours, theirs in zip(torch.autograd.grad(chunked, (x, weight)), torch.autograd.grad(expected, (x, weight))):
        assert (ours - theirs).abs().max() <= 1e-6 * theirs.abs().max()
    assert output_loss(x, weight, torch.full((1500,), -1)).item() == 0.0, "nothing to predict costs nothing"


# Best checkpoint, budgets, options on resume.


def test_best_is_the_checkpoint_of_the_lowest_val_loss(dataset, tmp_path, monkeypatch):
    from train import fit as fit_module

    val_losses = iter([5.0, 3.0, 4.0, 6.0, 7.0])  # evaluations at steps 4, 8, 12, 16 and the last, 19
    real = fit_module.Trainer.evaluate

    def scripted(self, split):
        score = real(self, split)
        return dataclasses.replace(score, nats=next(val_losses) * score.tokens) if split.name == "val" else score

    monkeypatch.setattr(fit_module.Trainer, "evaluate", scripted)
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 20, "--eval-every", 4, "--ckpt-every", 0)
    pointer = json.load(open(tmp_path / "run" / checkpoint.POINTER))
    assert (pointer["best"], pointer["best_val_loss"], pointer["latest"]) == ("step-0000008", 3.0, "step-0000019")
    assert checkpoint.load(checkpoint.locate(tmp_path / "run", "best"))[1]["step"] == 8
    # sample, eval and export default to it: its weights are those of step 8, not the end's.
    best_model, _ = checkpoint.load_model(tmp_path / "run", "best", torch.device("cpu"))
    last_model, _ = checkpoint.load_model(tmp_path / "run", "latest", torch.device("cpu"))
    assert not torch.equal(best_model.transformer.wte.weight, last_model.transformer.wte.weight)


class SteadyClock:
    """A clock that reads 10 ms later at each reading: a run's timings become a function of its code alone. On the
    real clock a loaded machine (other processes on both cores) made a step take 0.6 s, and a 3 s budget one step."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 0.01
        return self.now


def test_max_time_fixes_the_step_count_from_the_steps_it_times(dataset, tmp_path, monkeypatch):
    """The wall time itself is a benchmark's figure (bench/train_bench.py); what cannot flake is checked here:
    the budget becomes a step count from timed steps, again after the warmup and then halfway to the warmdown
    while the rate is flat, and the schedule ends there."""
    from train import budget, fit, session
    from train.budget import steps_for_time
    from train.config import RunConfig, read_config
    from train.schedule import warmdown_from

    clock = SteadyClock()
    for module in (budget, fit, session):  # the modules that time a run
        monkeypatch.setattr(module, "time", clock)
    result = train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-time", "3s", "--eval-every", 40,
                   "--ckpt-every", 60)
    config = json.load(open(tmp_path / "run" / "config.json"))
    lines = metrics(tmp_path / "run")
    calibrated = re.search(r"calibrated ([\d.]+) s per step, ([\d.]+) s per evaluation, ([\d.]+) s per checkpoint: "
                           r"(\d+) steps, timed again at step (\d+)", result.output)
    retimed = re.findall(r"--max-time: ([\d.]+) s per step over steps \d+-(\d+): (\d+) steps \(was (\d+); ([\d.]+) s left\)"
                         r"(?:; timed again at step (\d+))?", result.output)
    assert calibrated and len(retimed) >= 2, result.output
    first_steps, warmup, fraction = int(calibrated[4]), config["warmup_steps"], config["warmdown_fraction"]
    assert int(calibrated[5]) == warmup == max(1, min(100, first_steps // 20)) and int(retimed[0][1]) == warmup - 1
    assert int(retimed[0][3]) == first_steps
    assert int(retimed[0][5]) == (warmup + warmdown_from(int(retimed[0][2]), warmup, fraction)) // 2  # halfway to the warmdown
    for (_, _, count, _, _, next_at), (_, at, _, was, _, _) in zip(retimed, retimed[1:]):  # each where the one before said
        assert int(at) + 1 == int(next_at) and int(was) == int(count)
    (per_step, last_at, steps, _, left, then), last_timed = retimed[-1], int(retimed[-1][1]) + 1
    assert not then
    assert config["steps"] == int(steps) == len(lines) > last_timed
    assert config["retime_at"] is None and config["timing"][1:] == [pytest.approx(float(calibrated[i]), abs=6e-3) for i in (2, 3)] + [0.0]
    assert config["timing"][0] == pytest.approx(float(per_step), abs=6e-4)  # re-timed, as printed
    # The step count is what the re-timed seconds per step leave room for, evaluations and checkpoints counted.
    # The time left is the run's own, as printed: the metrics' elapsed_sec of that step comes later (after
    # config.json is written and synced), which on a loaded disk moved the count by 6 steps.
    assert float(left) == pytest.approx(3 - lines[int(last_at)]["elapsed_sec"], abs=1.0)
    room = last_timed + steps_for_time(RunConfig.from_dict(config, "config"), float(left), config["timing"], at_least=0)
    assert abs(config["steps"] - room) <= 1, (config["steps"], room)
    rates = [line["lr"] for line in lines]
    assert rates[warmup - 1 : last_timed] == [config["lr"]] * (last_timed - warmup + 1)  # flat through every re-timing
    assert all(a >= b for a, b in zip(rates[warmup - 1 :], rates[warmup:])) and rates[-1] == pytest.approx(config["min_lr"])
    _, saved = read_config(checkpoint.locate(tmp_path / "run"))  # what a resume goes on from
    assert (saved.steps, saved.retime_at) == (config["steps"], None)


def test_a_time_budget_follows_a_change_of_pace_until_the_warmdown():
    """The re-timings after the warmup, by hand: the count follows the steps' pace halfway to the warmdown, and
    again halfway from there while that is a warmup's steps away; the rate of the steps already run stays."""
    import types

    from train.budget import next_retime, retime
    from train.config import RunConfig, StepPlan
    from train.schedule import lr_at, warmdown_from

    world, mixture = types.SimpleNamespace(broadcast=lambda x: x), types.SimpleNamespace(capacity=lambda: math.inf)

    def budget(schedule="warmdown"):
        config = RunConfig(data="d", out="o", preset="tiny", n_layer=1, n_head=1, n_embd=8, context=8, batch_size=1,
                           tokens_per_step=8, lr=1.0, min_lr=0.1, max_time=128.0, schedule=schedule,
                           warmdown_fraction=0.65)
        return config, StepPlan(steps=1000, warmup_steps=50, timing=[0.125, 0.0, 0.0, 0.0], retime_at=50)

    def run(pace):  # seconds per step from step 50 on (powers of two: exact sums)
        config, plan = budget()
        seconds = [0.125] * 50
        plan, *_ = retime(config, plan, world, mixture, 49, seconds, elapsed=sum(seconds))  # 121.75 s left at 0.125 s a step
        assert (plan.steps, plan.retime_at) == (50 + 974, next_retime(50, config, plan)) == (1024, 204)
        seconds += [pace] * 154
        plan, *_ = retime(config, plan, world, mixture, 203, seconds, elapsed=sum(seconds))  # the later half timed: all at `pace`
        return config, plan, seconds

    # 1.5x slower: fewer steps, the warmdown from step 244, too close to time again (20 steps, a warmup is 34);
    # twice as fast: more, the warmdown from step 699, timed again at 451.
    for pace, steps, again in ((0.1875, 699, None), (0.0625, 1998, 451)):
        config, plan, seconds = run(pace)
        assert plan.steps == 204 + int((128 - 6.25 - 154 * pace) / pace) == steps and plan.retime_at == again
        assert [lr_at(s, config, plan) for s in range(49, 205)] == [1.0] * 156  # the rate so far and the next: unchanged
    for step, again in ((451, 575), (575, None)):  # the same pace on: the same count, timed until 62 steps from 699
        seconds += [0.0625] * (step - len(seconds))
        plan, *_ = retime(config, plan, world, mixture, step - 1, seconds, elapsed=sum(seconds))
        assert (plan.steps, plan.retime_at) == (1998, again) and warmdown_from(1998, 50, 0.65) == 699
    # 4x slower: the 89 steps left put the warmdown's start back at step 102: the time budget wins, and the rate
    # steps down to where that warmdown has got to.
    config, plan, _ = run(0.5)
    assert (plan.steps, plan.retime_at) == (204 + 89, None) and warmdown_from(293, 50, 0.65) == 102
    assert lr_at(204, config, plan) == pytest.approx(1 - 0.9 * 102 / 190) and lr_at(292, config, plan) == pytest.approx(0.1)
    cosine, plan = budget("cosine")  # its rate falls from the warmup's end on: the count is fixed there, once
    plan, *_ = retime(cosine, plan, world, mixture, 49, [0.125] * 50, elapsed=6.25)
    assert (plan.steps, plan.retime_at) == (1024, None)


def rates(config, steps):
    """The learning rates of `steps` in a run configured by the dict `config`."""
    from train.config import from_record
    from train.schedule import lr_at

    return [lr_at(s, *from_record(config, "config")) for s in steps]


@pytest.mark.parametrize("option,value,check", [
    ("--max-steps", 9, lambda c, m: c["steps"] == 9 and m[-1]["step"] == 8),
    ("--max-tokens", 8 * 32 * 7, lambda c, m: c["steps"] == 7 and m[-1]["step"] == 6),
    ("--lr", 0.5, lambda c, m: c["lr"] == 0.5 and c["min_lr"] == 0.05 and m[-1]["lr"] == 0.05),
    ("--tokens-per-step", 512, lambda c, m: c["tokens_per_step"] == 512 and m[-1]["tokens"] - m[-2]["tokens"] == 512),
    ("--eval-every", 1, lambda c, m: all("val_loss" in x for x in m[4:])),
    ("--dropout", 0.2, lambda c, m: c["dropout"] == 0.2),
    ("--warmdown-fraction", 1.0, lambda c, m: c["warmdown_fraction"] == 1.0 and [x["lr"] for x in m[4:]] == rates(c, range(4, 8))
     and rates(c, range(4, 8)) != rates({**c, "warmdown_fraction": 0.5}, range(4, 8))),
    ("--dtype", "fp32", lambda c, m: c["dtype"] == "fp32"),
    # A whole-run budget already spent (the first 4 steps took longer): one step more, then the run ends.
    ("--max-time", "0.01s", lambda c, m: c["max_time"] == 0.01 and c["steps"] == 5 and len(m) == 5),
])
def test_options_on_resume_take_effect(dataset, tmp_path, option, value, check):
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 4, "--eval-every", 0, "--dtype", "bf16")
    train("--data", dataset, "--out", tmp_path / "run", "--resume", "--max-steps", 8, option, value)
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert check(config, metrics(tmp_path / "run")), (config, metrics(tmp_path / "run")[-1])
    assert json.load(open(os.path.join(checkpoint.locate(tmp_path / "run"), "config.json"))) == config


def test_a_compiled_model_trains_with_the_losses_of_the_eager_one():
    """torch.compile for real (inductor, on CPU; the resume tests replace it by the identity), as the trainer
    wraps the model: two AdamW steps give the eager model's losses."""
    from train.models import build_model

    torch.manual_seed(0)
    shape = GPTConfig(vocab_size=512, context=32, n_layer=1, n_head=2, n_embd=32)
    eager, twin = build_model(shape), build_model(shape)
    twin.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 512, (4, 33))
    losses = []
    for model, params in ((eager, eager), (torch.compile(twin), twin)):
        optimizer = torch.optim.AdamW(params.parameters(), lr=1e-2)
        losses.append([])
        for _ in range(2):
            _, loss = model(ids[:, :-1], ids[:, 1:])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[-1].append(loss.item())
    assert losses[0][1] < losses[0][0] and max(abs(a - b) for a, b in zip(*losses)) < 1e-4, losses


def test_weight_decay_and_compile_on_resume_take_effect(dataset, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 2, "--eval-every", 0, "--weight-decay", 0)
    assert not compiled
    train("--data", dataset, "--out", tmp_path / "run", "--resume", "--max-steps", 4, "--weight-decay", 0.5, "--compile")
    assert len(compiled) == 1
    groups = checkpoint.load(checkpoint.locate(tmp_path / "run"))[1]["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]


@pytest.mark.parametrize("option,value", [("--model", "gpt2"), ("--n-embd", 64), ("--context", 16), ("--no-bias", None),
                                          ("--optimizer", "muon")])
def test_options_that_shape_the_weights_are_refused_on_resume(dataset, tmp_path, option, value):
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 2, "--eval-every", 0)
    before = open(tmp_path / "run" / "config.json").read()
    result = train("--data", dataset, "--out", tmp_path / "run", "--resume", "--max-steps", 4, option,
                   *([] if value is None else [value]), ok=False)
    assert f"--resume cannot change {option.replace('no-', '')}" in result.stderr and result.stderr.count("\n") == 1
    assert open(tmp_path / "run" / "config.json").read() == before


def test_a_finished_run_asks_for_a_larger_budget(dataset, tmp_path):
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 2, "--eval-every", 0)
    result = train("--data", dataset, "--out", tmp_path / "run", "--resume", ok=False)
    assert "already ran its 2 steps" in result.stderr


# Precision and memory decided before step 0.


def test_dtype_auto_follows_capabilities_not_timing(monkeypatch):
    from train import device as device_module

    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    assert device_module.pick_dtype("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert device_module.pick_dtype("auto", torch.device("cpu")) == "fp32"
    for capability, dtype in (((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert device_module.pick_dtype("auto", torch.device("cuda")) == dtype
    # The real check reads the CPU's flags, not a timing.
    monkeypatch.undo()
    for flags, native in (("fpu sse2 avx2 avx512f", False), ("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True)):
        cpuinfo = f"processor : 0\nflags\t\t: {flags}\n"
        monkeypatch.setattr(device_module, "open", lambda path, *a, text=cpuinfo: io.StringIO(text), raising=False)
        assert device_module.cpu_has_native_bf16() == native, flags


def test_auto_dtype_is_recorded(dataset, tmp_path):
    train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 1, "--eval-every", 0)
    from train.device import cpu_has_native_bf16

    assert json.load(open(tmp_path / "run" / "config.json"))["dtype"] == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_a_step_that_cannot_fit_is_refused_before_allocating(dataset, tmp_path, monkeypatch):
    result = train("--data", dataset, "--out", tmp_path / "run", *SMALL, "--context", 1_000_000, "--max-steps", 1, ok=False)
    assert "a training step needs about" in result.stderr and "--batch-size" in result.stderr and "--context 1000000" in result.stderr
    from train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 2**20)
    result = train("--data", dataset, "--out", tmp_path / "run2", *SMALL, "--max-steps", 1, ok=False)
    assert "0.0 GiB available" in result.stderr and not os.path.exists(tmp_path / "run2" / "config.json")

