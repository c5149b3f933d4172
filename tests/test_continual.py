"""Continual pretraining: a run that follows its data from generation to generation, its open schedule and
cool-down branches, and what a night trains on."""

import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import prepare, write
from prepare import format as fmt
from train import checkpoint
from train.cli import cli
from train.config import read_config
from train.data import Mixture
from train.history import History, new_documents

SMALL = ["--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32, "--batch-size", 8, "--no-compile",
         "--device", "cpu", "--no-samples", "--eval-windows", 8, "--dtype", "fp32", "--eval-every", 0]
OPEN = [*SMALL, "--schedule", "open", "--follow-data", "--warmup-steps", 2, "--lr", 3e-3]


def train(*args, ok=True):
    result = CliRunner().invoke(cli, [*map(str, args)], catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def nights(tmp_path):
    """A corpus of 10 CPython modules (night 1), prepared; `grow()` adds 16 short functions and deletes a module
    (the next night)."""
    from prepare.sources import stdlib_files

    src, data = tmp_path / "src", tmp_path / "data"
    for i, f in enumerate(stdlib_files()[200:210]):
        write(src / f"{i:03d}.py", open(f, "rb").read()[:6000], mode="wb")
    prepare("build", src, "--out", data, "--val-fraction", 0.2)

    def grow(night=2):
        for i in range(16):
            write(src / f"night{night}-{i:02d}.py", f"def added_on_night_{night}_number_{i}(x):\n    return x * {i} + {night}\n")
        if os.path.exists(src / "000.py"):
            os.remove(src / "000.py")
        prepare("build", src, "--out", data, "--val-fraction", 0.2)

    return data, grow


def test_a_generation_switch_at_resume_is_reproduced_exactly(nights, tmp_path):
    data, grow = nights
    a, b = tmp_path / "a", tmp_path / "b"
    train("fit", "--data", data, "--out", a, *OPEN, "--max-steps", 4)
    shutil.copytree(a, b)
    grow()
    train("fit", "--out", a, "--resume", "--session-steps", 6)
    train("fit", "--out", b, "--resume", "--session-steps", 3)  # the same session, stopped and resumed on its generation
    train("fit", "--out", b, "--resume", "--session-steps", 3)
    ma, mb = metrics(a), metrics(b)
    assert [m["step"] for m in ma] == list(range(10))
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    assert [m["generation/data"] for m in ma] == [1] * 4 + [2] * 6
    _, state = checkpoint.load(checkpoint.locate(a))
    assert [(e["step"], e["generations"], e["since"]) for e in state["history"]] == [(0, [1], [None]), (4, [2], [1])]
    pointer = checkpoint.read_pointer(a)  # best: the lowest val loss on generation 2's val split, the first there
    assert (pointer["best"], pointer["best_generations"], pointer["best_val_loss"]) == ("step-0000009", [2], ma[9]["val_loss"])
    assert [m["lr"] for m in ma[2:]] == [3e-3] * 8, "the open schedule never decays"
    assert ma[9]["loss"] < ma[0]["loss"] - 1.0
    # Replayed from step 0 on the generations it recorded, at the steps it recorded: the same losses.
    train("replay", a, tmp_path / "c")
    assert [m["loss"] for m in metrics(tmp_path / "c")] == [m["loss"] for m in ma]


def drawn_positions(run_dir, steps):
    """Stream positions of the windows a run drew in `steps`, from its latest checkpoint's history."""
    config, _ = read_config(checkpoint.locate(run_dir))
    _, state = checkpoint.load(checkpoint.locate(run_dir))
    mixture = Mixture(config.data, config.context, state["history"][-1]["generations"], config.window_start, config.sampling)
    history = History(state["history"], mixture, config, config.micro_batches * config.batch_size)
    starts = np.concatenate([history.draw(step, config.micro_batches * config.batch_size)[1] for step in steps])
    return mixture, history, starts


def covered(mixture, starts, context):
    """Whether each train token of the stream is inside one of the windows starting at `starts`."""
    split = mixture.splits[0]["train"]
    cover = np.zeros(split.tokens + 1, np.int64)
    np.add.at(cover, starts, 1)
    np.add.at(cover, np.minimum(starts + context + 1, split.tokens), -1)
    return np.cumsum(cover)[: split.tokens] > 0


def new_positions(data_dir, mixture, since):
    """Stream positions of the tokens that the generation open in `mixture` added since generation `since`."""
    split = mixture.splits[0]["train"]
    old = fmt.read_manifest_file(fmt.generation_path(data_dir, since))
    out = []
    for added in fmt.added_extents(data_dir, old, mixture.snapshots[0].manifest):
        for extent, end in zip(split.extents, split.ends):
            if extent.file == added.file and extent.start <= added.start < extent.end:
                at = int(end) - extent.tokens + added.start - extent.start
                out.append(np.arange(at, at + added.tokens))
    return np.concatenate(out)


def said_new(output):
    """(Reached, total) of a session's line on the new documents."""
    found = re.search(r"new documents: ([\d,]+) of the ([\d,]+) added", output)
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def added_documents(data_dir, old, new):
    manifest = lambda g: fmt.read_manifest_file(fmt.generation_path(data_dir, g))  # noqa: E731
    eot = manifest(new).tokenizer.eot_token
    return sum(int((np.asarray(np.memmap(fmt.token_path(data_dir, e.file), dtype=manifest(new).dtype, mode="r")[e.start : e.end]) == eot).sum())
               for e in fmt.added_extents(data_dir, manifest(old), manifest(new)))


def test_the_new_documents_of_a_night_are_drawn_at_least_once(nights, tmp_path):
    data, grow = nights
    run = tmp_path / "run"
    train("fit", "--data", data, "--out", run, *OPEN, "--max-steps", 3)
    grow()
    # A session too short for them (4 of each step's 8 windows): it says how many it reached, and the next
    # session begins with the rest.
    result = train("fit", "--out", run, "--resume", "--session-steps", 2, "--replay", 0.5)
    reached, total = said_new(result.output)
    assert total == added_documents(data, 1, 2) and 0 < reached < total and "the next session begins with the rest" in result.output
    mixture, history, starts = drawn_positions(run, range(3, 5))
    assert history.reached(5) == (reached, total) and [history.new.at(s) for s in (3, 4)] == [4, 4]
    assert 0 < covered(mixture, starts, 32)[new_positions(data, mixture, 1)].mean() < 1
    grow(night=3)
    result = train("fit", "--out", run, "--resume", "--session-steps", 10)
    assert said_new(result.output) == (total - reached + added_documents(data, 2, 3),) * 2
    mixture, history, starts = drawn_positions(run, range(5, 15))
    era = history.eras[-1]
    assert era["since"] == [1] and len(era["done"][0]) == reached, "night 2's documents drawn in full are not drawn first again"
    assert [e["per_step"] for e in history.eras] == [2, 4, 4], "each era keeps the share it began with (the default's first)"
    # Every token of the documents nights 2 and 3 added, less those night 2 drew in full, is in a window of
    # the last session.
    pending = new_documents(mixture.snapshots[0], mixture.splits[0]["train"], fmt.read_manifest_file(fmt.generation_path(data, 1)),
                            era["done"][0])
    positions = np.concatenate([np.arange(at, at + tokens) for _, _, at, tokens in pending])
    assert len(positions) < len(new_positions(data, mixture, 1)) and covered(mixture, starts, 32)[positions].all()


def tree(run_dir):
    """sha256 of every file of a run directory, its cool-downs apart."""
    out = {}
    for root, dirs, names in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d != checkpoint.COOLDOWNS]
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, run_dir)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_a_cooldown_branch_leaves_the_main_line_bit_identical(nights, tmp_path):
    from train.schedule import MOMENTUM_AT_END, lr_at, momentum_at

    data, _ = nights
    run, twin = tmp_path / "run", tmp_path / "twin"
    train("fit", "--data", data, "--out", run, *OPEN, "--max-steps", 10, "--min-lr", 3e-4)
    shutil.copytree(run, twin)
    before = tree(run)
    result = train("cooldown", run)  # a fifth of the 10 steps so far
    branch = run / checkpoint.COOLDOWNS / "step-0000009"
    assert f"{branch}: cooling down from step 9 over 2 steps" in result.output
    assert tree(run) == {**before, checkpoint.COOLED: tree(run)[checkpoint.COOLED]}, "the main line is as it was"
    cooled = metrics(branch)
    config, plan = read_config(checkpoint.locate(branch))
    assert [m["step"] for m in cooled] == [10, 11] and [m["lr"] for m in cooled] == [1.65e-3, 3e-4]
    assert [m["lr"] for m in cooled] == [lr_at(s, config, plan) for s in (10, 11)]
    assert momentum_at(9, config, plan) == pytest.approx(0.85 + 0.12 * 9 / 400) and momentum_at(11, config, plan) == MOMENTUM_AT_END
    assert "val_loss" in cooled[-1]
    assert checkpoint.locate(run, "cooled") == str(branch / checkpoint.FOLDER / "step-0000011")
    assert "cooled down already" in train("cooldown", run, ok=False).output
    # The next night resumes the main line, never the branch: as if no cool-down had been made.
    for out in (run, twin):
        train("fit", "--out", out, "--resume", "--session-steps", 5)
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(twin)]
    assert [m["lr"] for m in metrics(run)[2:]] == [3e-3] * 13
    result = train("cooldown", run, "--steps", 3)
    assert "from step 14 over 3 steps" in result.output
    assert checkpoint.locate(run, "cooled").endswith(os.path.join("step-0000014", checkpoint.FOLDER, "step-0000017"))
    assert "is a cool-down branch" in train("cooldown", branch, ok=False).output


def test_a_collected_generation_is_refused_in_one_line(nights, tmp_path):
    data, grow = nights
    run = tmp_path / "run"
    train("fit", "--data", data, "--out", run, *OPEN, "--max-steps", 2)
    grow()
    prepare("gc", data)
    first = fmt.read_manifest_file(fmt.generation_path(data, 1))
    assert all(os.path.exists(fmt.token_path(data, f)) for f in first.files), "the pin keeps what generation 1 names"
    info = prepare("info", data).stdout
    name = next(iter(fmt.read_pins(data)))
    assert f"pinned by {run}: generations 1; `prepare unpin {data} {name}`" in info
    prepare("unpin", data, name)
    assert not os.path.exists(fmt.generation_path(data, 1))
    result = train("fit", "--out", run, "--resume", "--session-steps", 2, ok=False)
    assert result.output.count("\n") == 1 and "generation 1, which" in result.output and "was collected" in result.output


@pytest.mark.serial  # torchrun
@pytest.mark.parametrize("shard", ["none", "fsdp"])
def test_two_processes_follow_the_data_as_one(nights, tmp_path, shard):
    """torchrun, replicated or sharded: rank 0 chooses the generations, and every process draws the same new
    documents."""
    from test_distributed import assert_same_run, run as launch

    data, grow = nights
    one, two = tmp_path / "one", tmp_path / "two"
    train("fit", "--data", data, "--out", one, *OPEN, "--batch-size", 4, "--tokens-per-step", 256, "--max-steps", 3)
    shutil.copytree(one, two)
    grow()
    train("fit", "--out", one, "--resume", "--session-steps", 4)
    out = launch(2, "--out", two, "--resume", "--session-steps", 4, "--shard", shard)
    assert "over 2 processes" in out and "new documents:" in out
    assert_same_run(one, two)
    assert [m["generation/data"] for m in metrics(two)] == [1] * 3 + [2] * 4
    sharded = os.path.isdir(os.path.join(checkpoint.locate(two), checkpoint.SHARDS))
    assert sharded == (shard == "fsdp")


def test_new_documents_are_drawn_once_each_and_whole_documents_first():
    from train.history import NewWindows

    sizes = [1, 5, 40, 2, 3, 9] * 10
    docs = [[("f", 1000 * i, 1000 * i, 32 * n - 3) for i, n in enumerate(sizes)]]
    new = NewWindows(docs, [10**9], 32, per_step=4, first=10, key=[1, 2])
    assert new.total == sum(sizes) and sorted(new.order(np.arange(new.total))) == list(range(new.total))
    assert [new.at(s) for s in (9, 10, 11)] == [0, 4, 4] and new.at(10 + new.total // 4) == new.total % 4
    for step in (26, 40, 70):  # a session cut short: what it drew is whole documents, but for the last chunk's
        drawn = set(new.order(np.arange(new.before(step))).tolist())
        partly = [d for d in range(len(sizes)) if 0 < sum(w in drawn for w in np.flatnonzero(new.owner == d)) < sizes[d]]
        assert 0 < new.drawn_documents(step).sum() and sum(sizes[d] for d in partly) < new.chunk + max(sizes)


def test_in_a_mixture_the_new_documents_of_each_dataset_are_drawn(nights, gpt2_dataset, tmp_path):
    data, grow = nights
    small_dataset = gpt2_dataset  # a dataset of the same tokenizer that does not grow
    run = tmp_path / "run"
    train("fit", "--data", f"{small_dataset}=1", "--data", f"{data}=1", "--out", run, *OPEN, "--max-steps", 2)
    grow()
    result = train("fit", "--out", run, "--resume", "--session-steps", 12)
    assert said_new(result.output) == (added_documents(data, 1, 2),) * 2
    mixture, history, starts = drawn_positions(run, range(2, 14))
    assert set(history.new.dataset.tolist()) == {1} and history.eras[-1]["since"] == [1, 1]
    assert [m["generation/data"] for m in metrics(run)] == [1, 1] + [2] * 12


def test_a_night_runs_each_stage_with_its_commands_defaults():
    """`train nightly` calls the stages' functions; what it does not set is what the commands default to."""
    import inspect

    from train import cli as train_cli_module
    from train.cooldown import cool_down
    from train.evaluate import evaluate_run
    from train.export import export_run
    from train.scoring import score_model

    stages = ((train_cli_module.cooldown, cool_down, ["r"]), (train_cli_module.evaluate, evaluate_run, ["--run", "r"]),
              (train_cli_module.score, score_model, ["m"]), (train_cli_module.export, export_run, ["r", "o"]))
    for command, function, required in stages:
        parameters = inspect.signature(function).parameters
        defaults = command.make_context(command.name, required).params
        optional = [p.name for p in command.params if not p.required]
        assert {n: defaults[n] for n in optional} == {n: parameters[n].default for n in optional}, command.name
