"""Mixtures: several prepared datasets in one run, with weights, epoch caps, per-dataset evaluation and exact resume."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from conftest import write
from prepare import format as fmt
from test_train import SMALL, killed_and_resumed, metrics, train
from train.cli import cli
from train.config import ConfigError, DataSource
from train.resolve import parse_data, read_mixture
from train.data import Mixture, step_windows

def token_set(data_dir):
    manifest = fmt.read_manifest(data_dir)
    return set(np.concatenate([np.fromfile(fmt.token_path(data_dir, e.file), manifest.dtype)[e.start : e.end]
                               for split in fmt.SPLITS for e in manifest.extents[split]]).tolist())


def test_each_window_comes_from_a_dataset_drawn_by_weight(dataset, small_dataset):
    mixture = Mixture([DataSource(str(dataset), 0.7), DataSource(str(small_dataset), 0.3)], 32)
    counts, small_tokens = np.zeros(2), token_set(small_dataset)
    for step in range(400):
        windows, which = step_windows(mixture, 5, step, 16)
        counts += np.bincount(which, minlength=2)
        if step < 20:  # each window is read from the dataset drawn for it
            assert all(set(w.tolist()) <= small_tokens for w in windows[which == 1])
            assert not any(set(w.tolist()) <= small_tokens for w in windows[which == 0])
    share = counts[0] / counts.sum()
    assert abs(share - 0.7) < 4 * (0.7 * 0.3 / counts.sum()) ** 0.5, counts  # 4 standard deviations
    # Relative weights: 7 and 3 are 0.7 and 0.3, window for window; processes read slices of the same windows.
    same = Mixture([DataSource(str(dataset), 7), DataSource(str(small_dataset), 3)], 32)
    assert np.array_equal(step_windows(same, 5, 9, 16)[0], step_windows(mixture, 5, 9, 16)[0])
    halves = [step_windows(mixture, 5, 9, 16, slice(r * 8, (r + 1) * 8)) for r in (0, 1)]
    assert np.array_equal(np.concatenate([h[0] for h in halves]), step_windows(mixture, 5, 9, 16)[0])
    assert all(np.array_equal(h[1], step_windows(mixture, 5, 9, 16)[1]) for h in halves)


def test_a_dataset_leaves_the_mixture_at_its_epoch_cap(dataset, small_dataset):
    mixture = Mixture([DataSource(str(dataset), 1), DataSource(str(small_dataset), 1, max_epochs=2)], 32)
    big, little = mixture.train_tokens
    # The small dataset gets half the tokens until it has been seen twice: after 4 x its size in all.
    assert np.array_equal(mixture.shares_at(4 * little - 1), [0.5, 0.5])
    assert np.array_equal(mixture.shares_at(4 * little), [1.0, 0.0])
    assert np.allclose(mixture.expected_epochs(10 * little), [(2 * little + 6 * little) / big, 2.0])
    late = int(4 * little // (16 * 32)) + 1  # the first step after the cap draws from the big dataset only
    assert (step_windows(mixture, 0, late, 16)[1] == 0).all() and (step_windows(mixture, 0, 0, 256)[1] == 1).any()
    both = Mixture([DataSource(str(dataset), 1, max_epochs=1), DataSource(str(small_dataset), 1, max_epochs=2)], 32)
    assert both.capacity() == big + 2 * little


def test_mixture_options_and_files(tmp_path):
    assert parse_data("data/web=0.7") == DataSource("data/web", 0.7)
    assert parse_data("data/web") == DataSource("data/web", 1.0)
    with pytest.raises(ConfigError, match="weight after '=' must be a number"):
        parse_data("data/web=lots")
    with pytest.raises(ConfigError, match="not a positive number"):
        parse_data("data/web=-1")
    path = write(tmp_path / "mix.json", json.dumps([{"path": "data/a", "weight": 2, "max_epochs": 4},
                                                    {"path": "x/a", "weight": 1, "name": "other"}]))
    assert read_mixture(path) == [DataSource("data/a", 2, 4, "a"), DataSource("x/a", 1, None, "other")]
    write(tmp_path / "bad.json", json.dumps([{"path": "data/a", "wieght": 2}]))
    with pytest.raises(ConfigError, match="unknown key 'wieght'"):
        read_mixture(tmp_path / "bad.json")


def test_a_run_on_a_mixture_evaluates_each_dataset_and_counts_epochs(dataset, small_dataset, tmp_path):
    run = tmp_path / "run"
    train("--data", f"{dataset}=0.75", "--data", f"{small_dataset}=0.25", "--out", run, *SMALL, "--max-steps", 40,
          "--eval-every", 13, "--lr", 1e-2)
    lines = metrics(run)
    names = [dataset.name, small_dataset.name]
    evaluated = [m for m in lines if "val_loss" in m]
    assert [m["step"] for m in evaluated] == [13, 26, 39]
    for m in evaluated:
        assert m["val_loss"] == pytest.approx(0.75 * m[f"val_loss/{names[0]}"] + 0.25 * m[f"val_loss/{names[1]}"], rel=1e-12)
        assert m["train_eval_loss"] == pytest.approx(0.75 * m[f"train_eval_loss/{names[0]}"] + 0.25 * m[f"train_eval_loss/{names[1]}"], rel=1e-12)
    # Four words are learned fast: the small dataset's loss falls far below the other's.
    assert evaluated[-1][f"val_loss/{names[1]}"] < evaluated[0][f"val_loss/{names[1]}"] - 1
    # Epochs count the windows each dataset gave, step by step.
    mixture = Mixture([DataSource(str(dataset), 0.75), DataSource(str(small_dataset), 0.25)], 32)
    seen = np.zeros(2)
    for m in lines:
        seen += np.bincount(step_windows(mixture, 1337, m["step"], 8)[1], minlength=2)
        assert [m[f"epochs/{n}"] for n in names] == pytest.approx(seen * 32 / mixture.train_tokens, rel=1e-12)
    # One line per dataset in the plot and in eval, which defaults to the run's datasets.
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["eval", "--run", str(run), "--checkpoint", "latest", "--windows", 16, "--json",
                                       "--dtype", json.load(open(run / "config.json"))["dtype"]])
    scores = {json.loads(line)["data"]: json.loads(line)["loss"] for line in result.output.splitlines()}
    assert scores.keys() == {str(dataset), str(small_dataset)}
    for path, name in zip((dataset, small_dataset), names):
        assert scores[str(path)] == pytest.approx(lines[-1][f"val_loss/{name}"], abs=1e-4)
    assert (run / "loss.png").stat().st_size > 0


def test_mixture_sigkill_and_resume_is_bit_identical(dataset, small_dataset, tmp_path):
    mix = write(tmp_path / "mix.json", json.dumps([{"path": str(dataset), "weight": 0.6}, {"path": str(small_dataset), "weight": 0.4}]))
    args = ["--mixture", mix, *SMALL, "--max-steps", 40, "--ckpt-every", 10, "--eval-every", 10, "--dropout", 0.1]
    a, b = killed_and_resumed(tmp_path, args, 40, kill_after=19)  # the mixture comes from the run's config
    timing = ("tokens_per_sec", "flops_per_sec", "data_wait_sec", "elapsed_sec", "mfu")
    for x, y in zip(a, b):  # losses, grad norms, per-dataset val losses and epochs
        assert {k: v for k, v in x.items() if k not in timing} == {k: v for k, v in y.items() if k not in timing}, x["step"]
    assert "val_loss/small" in a[-1] and "epochs/small" in a[-1]


def test_other_weights_on_resume_need_allow_data_change(dataset, small_dataset, tmp_path):
    run = tmp_path / "run"
    train("--data", f"{dataset}=0.5", "--data", f"{small_dataset}=0.5", "--out", run, *SMALL, "--max-steps", 2, "--eval-every", 0)
    result = train("--out", run, "--resume", "--data", f"{dataset}=0.9", "--data", f"{small_dataset}=0.1", "--max-steps", 4, ok=False)
    assert "train data changed" in result.stderr and "--allow-data-change" in result.stderr
    train("--out", run, "--resume", "--data", f"{dataset}=0.9", "--data", f"{small_dataset}=0.1", "--max-steps", 4, "--allow-data-change")
    assert json.load(open(run / "config.json"))["data"][0]["weight"] == 0.9
    assert [m["step"] for m in metrics(run)] == [0, 1, 2, 3]


def test_datasets_with_another_tokenizer_are_refused_by_name(dataset, small_dataset, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(small_dataset, odd)
    manifest = fmt.read_manifest(odd)
    manifest = dataclasses.replace(manifest, generation=manifest.generation + 1,
                                   tokenizer=dataclasses.replace(manifest.tokenizer, ranks_sha256="0" * 64))
    fmt.publish(odd, manifest)
    result = train("--data", f"{dataset}=0.5", "--data", f"{odd}=0.5", "--out", tmp_path / "run", *SMALL,
                   "--max-steps", 2, ok=False)
    assert result.stderr.startswith(f"error: {odd}: tokenizer") and "must share one tokenizer" in result.stderr
    assert "Traceback" not in result.output
    result = train("--data", f"{dataset}=0.5", "--data", f"{small_dataset}=0.5", "--data", f"{tmp_path / 'x' / small_dataset.name}",
                   "--out", tmp_path / "run", *SMALL, "--max-steps", 2, ok=False)
    assert "two datasets are named" in result.stderr


def test_budgets_beyond_the_epoch_caps_are_refused(dataset, small_dataset, tmp_path):
    mix = write(tmp_path / "mix.json", json.dumps([{"path": str(small_dataset), "max_epochs": 1}]))
    result = train("--mixture", mix, "--out", tmp_path / "run", *SMALL, "--max-steps", 10_000, ok=False)
    assert "max_epochs allow" in result.stderr and "budget" in result.stderr
