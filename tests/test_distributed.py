"""Several processes under torchrun (gloo on CPU): the same batches, losses and checkpoints as one process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from conftest import REPO, wait_until_gone
from prepare import format as fmt
from train import checkpoint
from train.cli import cli

pytestmark = pytest.mark.serial  # every test here runs torchrun, whose processes share the cores

SMALL = ["--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32, "--batch-size", 4, "--no-compile",
         "--device", "cpu", "--no-samples", "--eval-windows", 16, "--dtype", "fp32"]
# Loss and val loss of 1 and 2 processes differ only by the order of floating-point sums (all-reduce,
# accumulation); final weights after 20 AdamW steps by less than this.
LOSS_TOLERANCE, WEIGHT_TOLERANCE = 1e-4, 1e-4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc, *args, torchrun_args=None):
    """`torchrun --nproc-per-node N -m train fit ARGS`, in a process group of its own so that a test can signal
    all of it."""
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    if torchrun_args is None:
        torchrun_args = ["--standalone", "--nproc-per-node", str(nproc)]
    launcher = [sys.executable, "-m", "torch.distributed.run", *torchrun_args]
    return subprocess.Popen([*launcher, "-m", "train", "fit", *map(str, args)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def run(nproc, *args):
    """A fit on `nproc` processes under torchrun, or (0) on one: this one, on one thread as each rank has."""
    if not nproc:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result = CliRunner().invoke(cli, ["fit", *map(str, args)], catch_exceptions=False)
        finally:
            torch.set_num_threads(threads)
        assert result.exit_code == 0, result.output
        return result.output
    proc = launch(nproc, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, "\n".join(line for line in err.splitlines() if "error" in line.lower())[-3000:]
    return out


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def weights(run_dir):
    return checkpoint.load(checkpoint.locate(run_dir))[0]


def assert_same_run(a, b, tolerance=LOSS_TOLERANCE):
    ma, mb = metrics(a), metrics(b)
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb):
        assert abs(x["loss"] - y["loss"]) < tolerance, (x["step"], x["loss"], y["loss"])
        if "val_loss" in x:  # b may have evaluated more often (at the end of a first, shorter leg)
            assert abs(x["val_loss"] - y["val_loss"]) < tolerance, (x["step"], x["val_loss"], y["val_loss"])


def test_two_processes_equal_one_process_with_accumulation(dataset, tmp_path):
    # 256 tokens per step: one process runs 2 micro-batches of 4 windows; two run one each.
    args = ["--data", dataset, *SMALL, "--tokens-per-step", 256, "--max-steps", 20, "--eval-every", 10, "--lr", 3e-3]
    run(0, "--out", tmp_path / "one", *args)
    out = run(2, "--out", tmp_path / "two", *args)
    assert "over 2 processes" in out and out.count("done:") == 1, "rank 0 alone reports"
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert metrics(tmp_path / "one")[-1]["loss"] < metrics(tmp_path / "one")[0]["loss"] - 0.6  # ln(512) = 6.23 to 5.46
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < WEIGHT_TOLERANCE
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one")), "one writer, the same files"


def test_every_process_trains_on_the_generation_rank_0_opened(dataset, stdlib_sources, vocabulary, tmp_path):
    """A prepare publishing between the processes' opens: every process reads the generation rank 0 chose, so
    the job logs what it logs on a frozen copy of the dataset."""
    import shutil

    data, frozen, src = tmp_path / "data", tmp_path / "frozen", tmp_path / "src"
    for copy in (data, frozen):
        shutil.copytree(dataset, copy)
    shutil.copytree(stdlib_sources, src)
    with open(src / "new.py", "w") as f:
        f.write("def added_tonight(x):\n    return [x] * 3\n" * 400)
    args = [*SMALL, "--tokens-per-step", 256, "--max-steps", 6, "--eval-every", 3, "--lr", 3e-3]
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "PUBLISHED": str(tmp_path / "published"),
           "PUBLISH_ARGS": json.dumps(["build", str(src), "--out", str(data), "--encoding", str(vocabulary), "--shard-tokens", "20000", "--val-fraction", "0.1",
                                       "--workers", "1"])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           os.path.join(REPO, "tests", "publish_between_opens.py"), "fit", "--data", str(data),
                           "--out", str(tmp_path / "two"), *map(str, args)], cwd=REPO, env=env, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fmt.read_manifest(data).generation == fmt.read_manifest(frozen).generation + 1, "published during the job"
    run(0, "--data", frozen, "--out", tmp_path / "one", *args)
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_a_data_error_stops_every_process_with_one_message(dataset, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    token_file = fmt.token_path(data, fmt.read_manifest(data).extents["train"][0].file)
    with open(token_file, "r+b") as f:
        f.truncate(10)
    proc = launch(2, "--data", data, "--out", tmp_path / "run", *SMALL, "--max-steps", 2)
    _, err = proc.communicate(timeout=300)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and token_file in errors[0], err[-2000:]
    assert not os.path.exists(tmp_path / "run")


def test_a_mixture_on_two_processes_equals_one_process(dataset, small_dataset, tmp_path):
    args = ["--data", f"{dataset}=0.5", "--data", f"{small_dataset}=0.5", *SMALL, "--tokens-per-step", 256,
            "--max-steps", 10, "--eval-every", 9, "--lr", 3e-3]
    run(0, "--out", tmp_path / "one", *args)
    run(2, "--out", tmp_path / "two", *args)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    one, two = metrics(tmp_path / "one")[-1], metrics(tmp_path / "two")[-1]
    assert one["epochs/small"] == two["epochs/small"] > 0  # the same windows from each dataset
    assert abs(one["val_loss/small"] - two["val_loss/small"]) < LOSS_TOLERANCE


def test_muon_on_two_processes_equals_one_process(dataset, tmp_path):
    # Each process orthogonalises half of the matrices and broadcasts them: the result must be the whole update.
    args = ["--data", dataset, "--model", "tiny-llama", *SMALL[4:], "--tokens-per-step", 256, "--max-steps", 10,
            "--eval-every", 9, "--lr", 3e-3]
    run(0, "--out", tmp_path / "one", *args)
    run(2, "--out", tmp_path / "two", *args)
    assert json.load(open(tmp_path / "two" / "config.json"))["optimizer"] == "muon"
    assert_same_run(tmp_path / "one", tmp_path / "two")
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < WEIGHT_TOLERANCE


def test_without_tokens_per_step_each_process_runs_one_micro_batch(dataset, tmp_path):
    run(2, "--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-steps", 2, "--eval-every", 0)
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert config["tokens_per_step"] == 2 * 4 * 32 and metrics(tmp_path / "run")[-1]["tokens"] == 2 * 256


def test_a_time_budget_is_one_step_count_for_every_process(dataset, tmp_path):
    # Each process starts at its own moment: a count taken from each one's clock can differ by a step, and
    # a step one process runs alone never ends.
    run(2, "--data", dataset, "--out", tmp_path / "run", *SMALL, "--max-time", "4s", "--eval-every", 0)
    steps = json.load(open(tmp_path / "run" / "config.json"))["steps"]
    assert len(metrics(tmp_path / "run")) == steps


def test_uneven_split_over_processes_is_refused(dataset, tmp_path):
    proc = launch(2, "--data", dataset, "--out", tmp_path / "run", *SMALL, "--tokens-per-step", 384, "--max-steps", 2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "do not split over 2 processes" in err and "multiple of 256" in err


def test_sigkill_and_resume_with_two_processes_is_bit_identical(dataset, tmp_path):
    args = ["--data", dataset, *SMALL, "--tokens-per-step", 256, "--max-steps", 40, "--ckpt-every", 5,
            "--eval-every", 10, "--dropout", 0.1]
    run(2, "--out", tmp_path / "whole", *args)

    killed = launch(2, "--out", tmp_path / "killed", *args)
    pointer = tmp_path / "killed" / checkpoint.POINTER
    deadline = time.time() + 300
    while time.time() < deadline and not (pointer.exists() and json.load(open(pointer))["latest"] >= "step-0000014"):
        time.sleep(0.01)
    ranks = worker_pids(killed.pid)
    for pid in [*ranks, killed.pid]:  # both ranks (torchrun gives them sessions of their own), then torchrun
        os.kill(pid, signal.SIGKILL)
    killed.wait()
    wait_until_gone(ranks)  # nothing of the killed job writes after this (they are not our children)
    resumed_from = json.load(open(pointer))["latest"]
    assert resumed_from < "step-0000039", "the kill must land before the run ends"
    out = run(2, "--out", tmp_path / "killed", "--data", dataset, "--resume")
    assert "resuming" in out
    a, b = metrics(tmp_path / "whole"), metrics(tmp_path / "killed")
    assert [m["step"] for m in b] == list(range(40))
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"] and x["grad_norm"] == y["grad_norm"] and x.get("val_loss") == y.get("val_loss"), x["step"]


@pytest.mark.parametrize("first,then", [(2, 0), (0, 2)])
def test_resume_on_another_number_of_processes_continues_the_same_batches(dataset, tmp_path, first, then):
    # A flat learning rate, so that 8 steps extended to 16 on --resume is the same schedule as 16 steps.
    args = ["--data", dataset, *SMALL, "--tokens-per-step", 256, "--eval-every", 4, "--lr", 2e-3, "--min-lr", 2e-3]
    run(0, "--out", tmp_path / "whole", *args, "--max-steps", 16)
    run(first, "--out", tmp_path / "moved", *args, "--max-steps", 8)
    out = run(then, "--out", tmp_path / "moved", "--data", dataset, "--resume", "--max-steps", 16)
    assert "resuming" in out
    assert_same_run(tmp_path / "whole", tmp_path / "moved")


def worker_pids(launcher_pid):
    """The training processes torchrun started (its children)."""
    with open(f"/proc/{launcher_pid}/task/{launcher_pid}/children") as f:
        return [int(p) for p in f.read().split()]


def wait_for_steps(run_dir, steps, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(run_dir / "metrics.jsonl") and len(metrics(run_dir)) >= steps:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {steps} steps in {timeout} s")


def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step(dataset, tmp_path):
    proc = launch(2, "--data", dataset, "--out", tmp_path / "run", *SMALL, "--tokens-per-step", 256,
                  "--max-steps", 100_000, "--ckpt-every", 0, "--eval-every", 0)
    wait_for_steps(tmp_path / "run", 3)
    os.kill(worker_pids(proc.pid)[1], signal.SIGTERM)  # rank 1 only
    out, err = proc.communicate(timeout=120)
    assert out.count("stopped at step") == 1 and "checkpoint saved" in out
    last = metrics(tmp_path / "run")[-1]["step"]
    _, state = checkpoint.load(checkpoint.locate(tmp_path / "run"))
    assert state["step"] == last and len(state["rng"]) == 2


def test_a_dead_rank_takes_the_job_down_and_leaves_the_last_checkpoint(dataset, tmp_path):
    # A time budget too: rank 0 calibrates and every rank runs the step count it decides.
    proc = launch(2, "--data", dataset, "--out", tmp_path / "run", *SMALL, "--tokens-per-step", 256,
                  "--max-time", "10m", "--ckpt-every", 2, "--eval-every", 0)
    wait_for_steps(tmp_path / "run", 5)
    dead = worker_pids(proc.pid)[1]
    os.kill(dead, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # down at once, not after --collective-timeout's 30 minutes
    assert proc.returncode != 0 and f"Signal 9 (SIGKILL) received by PID {dead}" in err.split("Root Cause")[-1]
    steps = json.load(open(tmp_path / "run" / "config.json"))["steps"]
    assert steps > 100, "a 10-minute budget of a tiny model"
    weights_, state = checkpoint.load(checkpoint.locate(tmp_path / "run"))
    assert state["step"] >= 3 and all(torch.isfinite(w).all() for w in weights_.values())


def test_two_nodes_on_loopback_equal_one_process(dataset, tmp_path):
    args = ["--data", dataset, *SMALL, "--tokens-per-step", 256, "--max-steps", 10, "--eval-every", 5]
    run(0, "--out", tmp_path / "one", *args)
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [launch(1, "--out", tmp_path / "two", *args,
                    torchrun_args=["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                   "--rdzv-endpoint", endpoint, "--rdzv-id", "gptmill-test"])
             for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    assert_same_run(tmp_path / "one", tmp_path / "two")
