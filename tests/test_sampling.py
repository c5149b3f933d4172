"""The two ways of drawing windows besides uniform ones: starts at documents, and epochs without replacement.
Both are pure functions of (seed, step): the same windows whatever the order steps are asked for in, the
number of processes, or a resume."""

import json

import numpy as np
import pytest

from conftest import prepare, write
from test_train import SMALL
from train.config import DataSource
from train.data import Mixture, step_windows
from train.epochs import permuted


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 1000, 4097])
def test_permuted_is_a_permutation_chosen_by_its_key(n):
    order = permuted(np.arange(n), n, [7, 1])
    assert sorted(order.tolist()) == list(range(n))
    assert np.array_equal(order, permuted(np.arange(n), n, [7, 1]))
    if n >= 64:
        assert not np.array_equal(order, permuted(np.arange(n), n, [7, 2])) and not np.array_equal(order, np.arange(n))
        assert np.array_equal(permuted(np.arange(n)[::-3], n, [7, 1]), order[::-3])  # element-wise: any subset, any order


@pytest.fixture(scope="module")
def documents(vocabulary, tmp_path_factory):
    """Documents of very different lengths (a few tokens to several contexts), words spelling their number (in the
    shared datasets' vocabulary, so that they mix)."""
    root = tmp_path_factory.mktemp("documents")
    rng = np.random.default_rng(0)
    for i in range(40):
        write(root / "src" / f"{i:02d}.txt", " ".join([f"doc{i}"] * int(rng.integers(1, 200))) + "\n")
    prepare("build", root / "src", "--out", root / "data", "--encoding", vocabulary, "--val-fraction", 0.1, "--shard-tokens", 1000)
    return root / "data"


def stream(split):
    return split.span(0, split.tokens, {})


def test_document_starts_cover_every_token_from_a_document_or_context_boundary(documents):
    mixture = Mixture([DataSource(str(documents))], 16, window_start="document")
    split, starts = mixture.splits[0]["train"], mixture.starts[0]
    tokens, eot = stream(split), mixture.manifest.tokenizer.eot_token
    assert np.array_equal(split.document_starts(), np.flatnonzero(tokens == eot))
    positions = starts.positions(np.arange(starts.count))
    lengths = np.diff(np.append(split.document_starts(), split.tokens))
    assert starts.count == int(np.sum(-(-lengths // 16)))
    for p in positions:  # a document's start, or a multiple of the context after the start of its own document
        own = split.document_starts()[np.searchsorted(split.document_starts(), p, side="right") - 1]
        assert (p - own) % 16 == 0 or p == split.windows - 1
    covered = np.zeros(split.tokens, bool)
    for p in positions:
        covered[p : p + 17] = True
    assert covered.all(), "every token is in some window"
    assert set(split.document_starts().tolist()) <= set(positions.tolist())  # each document starts a window
    windows, _ = step_windows(mixture, 0, 3, 64)
    assert all(any(np.array_equal(w, tokens[p : p + 17]) for p in positions) for w in windows)


@pytest.mark.parametrize("window_start", ["any", "document"])
def test_epochs_visit_every_start_once_each_in_a_new_order(documents, window_start):
    mixture = Mixture([DataSource(str(documents))], 16, window_start=window_start, sampling="epochs")
    starts = mixture.starts[0]
    split = mixture.splits[0]["train"]
    every = sorted(starts.positions(np.arange(starts.count)).tolist())
    per_step, steps = 8, -(-2 * starts.count // 8)
    positions = np.concatenate([starts.in_epochs(np.arange(s * per_step, (s + 1) * per_step), [0, 0]) for s in range(steps)])
    first, second = positions[: starts.count], positions[starts.count : 2 * starts.count]
    assert sorted(first.tolist()) == every and sorted(second.tolist()) == every
    assert not np.array_equal(first, second)
    # the windows a step reads are those positions' tokens
    windows, _ = step_windows(mixture, 0, 2, per_step)
    tokens = stream(split)
    assert all(np.array_equal(w, tokens[p : p + 17]) for w, p in zip(windows, positions[2 * per_step : 3 * per_step]))


def test_a_mixtures_epochs_are_a_pure_function_of_seed_and_step(documents, small_dataset):
    sources = [DataSource(str(documents), 0.6), DataSource(str(small_dataset), 0.4)]
    ahead = Mixture(sources, 16, sampling="epochs", window_start="document")
    for step in range(30):
        step_windows(ahead, 5, step, 12)
    fresh = Mixture(sources, 16, sampling="epochs", window_start="document")  # a resume at step 29, on any process
    whole, which = step_windows(fresh, 5, 29, 12)
    assert np.array_equal(whole, step_windows(ahead, 5, 29, 12)[0])
    assert np.array_equal(np.concatenate([step_windows(fresh, 5, 29, 12, slice(r * 4, (r + 1) * 4))[0] for r in range(3)]), whole)
    # no start of a dataset repeats before its epoch is over
    counts = fresh.windows_before(5, 30, 12)
    for index, starts in enumerate(fresh.starts):
        numbers = np.arange(min(counts[index], starts.count))
        assert len(set(starts.in_epochs(numbers, [5, index]).tolist())) == len(numbers)


def test_training_with_document_starts_and_epochs_learns_and_resumes_exactly(documents, tmp_path):
    from test_train import killed_and_resumed

    args = ["--data", documents, *SMALL, "--context", 16, "--window-start", "document", "--sampling", "epochs",
            "--eval-every", 0, "--max-steps", 40, "--ckpt-every", 10]
    whole, resumed = killed_and_resumed(tmp_path, args, 40, kill_after=19, resume_args=["--data", documents])
    config = json.load(open(tmp_path / "whole" / "config.json"))
    assert (config["window_start"], config["sampling"]) == ("document", "epochs")
    assert [m["loss"] for m in resumed] == [m["loss"] for m in whole]
    assert np.mean([m["loss"] for m in whole[-5:]]) < np.mean([m["loss"] for m in whole[:5]]) - 0.5
