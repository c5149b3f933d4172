"""--shard fsdp under torchrun (gloo on CPU): the same losses as one process, sharded checkpoints that resume on
another number of processes and that one process reads, and the mistakes refused in one line."""

import os
import shutil

import pytest
import torch
from click.testing import CliRunner

from test_distributed import LOSS_TOLERANCE, SMALL, WEIGHT_TOLERANCE, assert_same_run, metrics, run, weights
from train import checkpoint
from train.cli import cli

pytestmark = pytest.mark.serial  # torchrun's processes share the cores

# Two Llama blocks (two units of sharding besides the root) under Muon, whose matrices FSDP shards; 512 tokens a
# step split over 1, 2 and 4 processes; the open schedule (flat after one warmup step: a run extended on --resume
# is the same schedule as one run of all its steps, and it can be cooled down).
ARGS = ["--model", "tiny-llama", "--n-layer", 2, *SMALL[4:], "--tokens-per-step", 512, "--eval-every", 4,
        "--lr", 3e-3, "--schedule", "open", "--warmup-steps", 1, "--eval-windows", 18]


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """A 12-step run on one process ("whole"), and the same 12 steps in four legs ("moved"): 3 sharded over 2
    processes (copied as "two"), resumed to 6 sharded over 4, to 9 on one process, to 12 sharded over 2."""
    root = tmp_path_factory.mktemp("sharding")
    run(0, "--data", dataset, "--out", root / "whole", *ARGS, "--max-steps", 12)
    moved = ["--data", dataset, "--out", root / "moved"]
    run(2, *moved, *ARGS, "--max-steps", 3, "--shard", "fsdp")
    shutil.copytree(root / "moved", root / "two")
    run(4, *moved, "--resume", "--max-steps", 6)
    run(0, *moved, "--resume", "--max-steps", 9, "--shard", "none")
    run(2, *moved, "--resume", "--max-steps", 12, "--shard", "fsdp")
    return root


def test_two_sharded_processes_equal_one_process(runs):
    whole, two = metrics(runs / "whole"), metrics(runs / "two")
    assert [m["step"] for m in two] == list(range(3))
    for x, y in zip(whole, two):
        assert abs(x["loss"] - y["loss"]) < LOSS_TOLERANCE, (x["step"], x["loss"], y["loss"])
    folder = checkpoint.locate(runs / "two")
    assert sorted(os.listdir(os.path.join(folder, checkpoint.SHARDS))) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not os.path.exists(os.path.join(folder, "model.safetensors")), "no process holds the model whole"


def test_a_run_moved_over_2_4_1_and_2_processes_equals_one_process(runs):
    """2 -> 4 and 4 -> 1 re-split sharded checkpoints; 1 -> 2 shards a whole one."""
    assert_same_run(runs / "whole", runs / "moved")
    assert metrics(runs / "whole")[-1]["loss"] < metrics(runs / "whole")[0]["loss"] - 0.5
    one, moved = weights(runs / "whole"), weights(runs / "moved")
    assert max((one[k] - moved[k]).abs().max().item() for k in one) < WEIGHT_TOLERANCE
    _, state = checkpoint.load(checkpoint.locate(runs / "moved"))
    assert state["sharding"] == {"kind": "fsdp", "world_size": 2}


def test_one_process_samples_and_evaluates_a_sharded_checkpoint(runs):
    result = CliRunner().invoke(cli, ["sample", "--run", str(runs / "two"), "--prompt", "def ", "--max-new-tokens",
                                      "8", "--device", "cpu"])
    assert result.exit_code == 0 and result.output.startswith("def "), result.output
    result = CliRunner().invoke(cli, ["eval", "--run", str(runs / "two"), "--device", "cpu", "--windows", "16"])
    assert result.exit_code == 0 and "val" in result.output, result.output


def test_a_sharded_run_cools_down_on_one_process(runs, tmp_path):
    shutil.copytree(runs / "two", tmp_path / "run")
    result = CliRunner().invoke(cli, ["cooldown", str(tmp_path / "run"), "--steps", "2"])
    assert result.exit_code == 0, result.output
    branch = tmp_path / "run" / checkpoint.COOLDOWNS / "step-0000002"
    assert [m["step"] for m in metrics(branch)] == [3, 4] and metrics(branch)[-1]["lr"] < 3e-3
    assert os.path.exists(os.path.join(checkpoint.locate(tmp_path / "run", "cooled"), "model.safetensors"))


def one_line_error(args):
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code not in (0, None) and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_missing_or_unreadable_shard_is_refused_in_one_line(runs, tmp_path):
    shutil.copytree(runs / "two", tmp_path / "run")
    folder = checkpoint.locate(tmp_path / "run")
    shards = os.path.join(folder, checkpoint.SHARDS)
    os.remove(os.path.join(shards, "__1_0.distcp"))
    line = one_line_error(["sample", "--run", str(tmp_path / "run"), "--prompt", "a", "--device", "cpu"])
    assert "__1_0.distcp: missing" in line and "2 processes" in line
    state = checkpoint.load_state(folder)
    torch.save({**state, "sharding": {"kind": "tp", "world_size": 2}}, os.path.join(folder, "state.pt"))
    line = one_line_error(["sample", "--run", str(tmp_path / "run"), "--prompt", "a", "--device", "cpu"])
    assert "'tp'" in line and "cannot re-split" in line


def test_sharding_on_one_process_or_a_model_without_blocks_is_refused(dataset, tmp_path):
    line = one_line_error(["fit", "--data", dataset, "--out", str(tmp_path / "run"), *map(str, ARGS),
                           "--max-steps", "1", "--shard", "fsdp"])
    assert "--shard fsdp on one process" in line and not os.path.exists(tmp_path / "run")
    from train.sharding import ShardingError, sharded_model

    model = torch.nn.Module()
    model.blocks = lambda: None
    config = type("Config", (), {"family": "llama"})
    with pytest.raises(ShardingError, match="names no blocks to shard"):
        sharded_model(model, config, torch.device("cpu"))


def test_the_memory_estimate_divides_the_states_over_the_shards():
    from train.memory import RUNTIME_BYTES, parameter_count, step_bytes
    from train.models.llama_family import LlamaConfig

    shape = LlamaConfig(vocab_size=512, context=32, n_layer=2, n_head=2, n_embd=32)
    states = [step_bytes(shape, 4, "fp32", "cpu", shards)[0] - RUNTIME_BYTES for shards in (1, 4)]
    assert states == [16 * parameter_count(shape), 4 * parameter_count(shape)]
