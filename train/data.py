"""Training data: random context+1 windows from prepared datasets' shards, read through np.memmap.

A run trains on a mixture of datasets (one dataset is a mixture of one). Each window of a step first draws
its dataset with the mixture's weights, then a start uniformly over that dataset's split, read as one
stream: every live extent holds whole documents that begin with end-of-text, so a window may run on from
one extent into the next, and no live token is out of reach however short the extents retirement left.
The windows of step `s` are a pure function of (seed, s, mixture): a resumed or repeated run sees exactly the
same batches whatever the number of processes, each process reading its own slice of them.
"""

import dataclasses
import hashlib
import json

import numpy as np
import torch

from prepare import format as fmt
from prepare.storage import dataset
from prepare.tokenizer import same_identity
from train.epochs import Starts

EVAL_SEED = 1234  # eval windows are the same for every run on a dataset, whatever its --seed


class Split:
    """One split's live extents in a leased snapshot of the dataset, read as one stream of tokens. Token files
    are opened afresh for each batch: a memmap held for a whole run grows RSS."""

    def __init__(self, snapshot, split, context):
        self.snapshot, self.name, self.context = snapshot, split, context
        self.extents = snapshot.manifest.extents[split]
        self.ends = np.cumsum([e.tokens for e in self.extents], dtype=np.int64)  # where each extent ends in the stream
        self.tokens = int(self.ends[-1]) if len(self.extents) else 0
        self.windows = max(0, self.tokens - context)  # starts of a context+1 window
        self.vocab_size = snapshot.manifest.tokenizer.vocab_size

    def draw(self, count, rng):
        """Stream positions of `count` windows, drawn uniformly over every start."""
        return rng.integers(0, self.windows, size=count)

    def read(self, starts):
        """The (context+1)-token int64 windows at stream positions `starts`, each token file opened once."""
        opened = {}
        out = np.empty((len(starts), self.context + 1), np.int64)
        for row, start in enumerate(starts):
            out[row] = self.span(int(start), int(start) + self.context + 1, opened)
        return out

    def span(self, start, stop, opened):
        """Tokens [start, stop) of the stream as int64, read from as many extents as they lie in. An id beyond
        the vocabulary (a token file whose bytes were damaged after prepare checked them) stops here, named."""
        pieces = []
        index = int(np.searchsorted(self.ends, start, side="right"))
        while start < stop:
            extent = self.extents[index]
            if extent.file not in opened:
                opened[extent.file] = self.snapshot.open_tokens(extent.file)
            first = extent.start + start - int(self.ends[index] - extent.tokens)
            piece = np.asarray(opened[extent.file][first : min(extent.end, first + stop - start)], np.int64)
            if piece.max() >= self.vocab_size:
                at = first + int(piece.argmax())
                raise fmt.DatasetError(
                    f"{fmt.token_path(self.snapshot.data_dir, extent.file)}: token id {piece.max()} at position {at} "
                    f"is outside the vocabulary of {self.vocab_size}: the file is corrupt (`python -m prepare verify "
                    f"{self.snapshot.data_dir}` checks them all); rerun prepare with --rebuild")
            pieces.append(piece)
            start, index = start + len(piece), index + 1
        return np.concatenate(pieces)

    def files_at(self, starts):
        """The token files the windows at stream positions `starts` read, in the order they first come."""
        first = np.searchsorted(self.ends, starts, side="right")
        ends = np.asarray(starts) + self.context  # a window's last token
        last = np.minimum(np.searchsorted(self.ends, ends, side="right"), len(self.ends) - 1)
        extents = [i for a, b in zip(first.tolist(), last.tolist()) for i in range(a, b + 1)]
        return list(dict.fromkeys(self.extents[i].file for i in extents))

    def sample(self, count, rng, rows=slice(None)):
        """The `rows` of `count` (context+1)-token int64 windows drawn with `rng`."""
        return self.read(self.draw(count, rng)[rows])

    def document_starts(self):
        """The stream position of every document's first token (its end-of-text), read once from the files."""
        eot, opened, starts = self.snapshot.manifest.tokenizer.eot_token, {}, []
        for extent, end in zip(self.extents, self.ends):
            if extent.file not in opened:
                opened[extent.file] = self.snapshot.open_tokens(extent.file)
            tokens = opened[extent.file][extent.start : extent.end]
            starts.append(np.flatnonzero(tokens == eot) + int(end - extent.tokens))
        return np.concatenate(starts) if starts else np.zeros(0, np.int64)


def open_dataset(data_dir, context, generation=None, gone=None):
    """A leased snapshot of the dataset, a directory or a bucket URL (the generation in force, or the one given:
    `gone` says why it is needed if it was collected) and its train/val splits, after a cheap check of every
    file's size. The snapshot stays readable, whatever prepare does meanwhile, until it is closed."""
    snapshot = dataset.open_snapshot(data_dir, generation, gone)
    splits = {name: Split(snapshot, name, context) for name in fmt.SPLITS}
    if not splits["train"].windows:
        snapshot.close()
        raise fmt.DatasetError(
            f"{data_dir}: context {context} is longer than the data (the train split holds "
            f"{splits['train'].tokens} tokens); use a smaller --context or prepare more text"
        )
    return snapshot, splits


class Mixture:
    """The run's datasets (config.DataSource), each a leased snapshot with its splits, and how a step's windows
    are shared out among them."""

    def __init__(self, sources, context, generations=None, window_start="any", sampling="random", gone=None):
        """`generations`: the generation of each dataset to open (another process's choice, or a checkpoint's:
        `gone` says why, if one was collected), else those in force.
        `window_start`: "any" token, or a "document"'s start (Starts); `sampling`: windows drawn "random"ly, or
        in "epochs" that each visit every start once."""
        self.sources, self.context, self.sampling = sources, context, sampling
        self.snapshots, self.splits = [], []
        try:
            for source, generation in zip(sources, generations or [None] * len(sources)):
                snapshot, splits = open_dataset(source.path, context, generation, gone)
                self.snapshots.append(snapshot)
                self.splits.append(splits)
                self.check_compatible(source, snapshot.manifest)
        except BaseException:
            self.close()
            raise
        self.starts = None
        if window_start == "document" or sampling == "epochs":
            self.starts = [Starts(splits["train"], window_start == "document") for splits in self.splits]
        self.before = {}  # (seed, windows per step) -> each dataset's windows in the steps before each step (epochs)
        self.train_tokens = np.array([s.manifest.tokens("train") for s in self.snapshots], np.float64)
        weights = np.array([s.weight for s in sources], np.float64)
        self.shares = weights / weights.sum()  # each dataset's probability for a window, before any epoch cap

    def check_compatible(self, source, manifest):
        first, ours = self.snapshots[0].manifest.tokenizer, manifest.tokenizer
        if not same_identity(dataclasses.asdict(ours), dataclasses.asdict(first)) or ours.eot_token != first.eot_token:
            raise fmt.DatasetError(
                f"{source.path}: tokenizer {ours.name} (end of text {ours.eot_token}) differs from "
                f"{self.sources[0].path}'s {first.name} (end of text {first.eot_token}); a mixture's datasets must "
                f"share one tokenizer"
            )

    @property
    def generations(self):
        return [s.manifest.generation for s in self.snapshots]

    @property
    def manifest(self):
        """The first dataset's manifest: its tokenizer is every dataset's."""
        return self.snapshots[0].manifest

    def fingerprint(self):
        """Identity of what the run trains on: every dataset's train data, weight and epoch cap."""
        parts = [[s.name, fmt.fingerprint(snap.manifest), share, s.max_epochs]
                 for s, snap, share in zip(self.sources, self.snapshots, self.shares.tolist())]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def capacity(self):
        """Train tokens the epoch caps allow in all (infinite if some dataset has no cap)."""
        caps = [s.max_epochs for s in self.sources]
        return float("inf") if None in caps else float(np.dot(caps, self.train_tokens))

    def phases(self):
        """(tokens at which it begins, each dataset's probability for a window) of each phase of the mixture.
        A phase ends when a dataset with max_epochs reaches that many expected epochs (the tokens so far times
        its share): it leaves, and its share goes to the others by their weights."""
        inside = np.ones(len(self.sources), bool)
        left = np.array([(s.max_epochs or np.inf) for s in self.sources]) * self.train_tokens
        start = 0.0
        while inside.any():
            shares = np.where(inside, self.shares, 0) / self.shares[inside].sum()
            yield start, shares
            with np.errstate(divide="ignore", invalid="ignore"):
                until = np.where(inside, left / shares, np.inf)  # tokens until each one's cap
            leaving = int(np.argmin(until))
            if until[leaving] == np.inf:
                return
            start += until[leaving]
            left -= shares * until[leaving]
            inside[leaving] = False
        yield start, np.zeros(len(self.sources))  # every dataset used up its epochs (see capacity)

    def shares_at(self, tokens):
        """Each dataset's probability for a window after `tokens` training tokens."""
        for start, shares in self.phases():
            if start > tokens:
                break
            current = shares
        return current

    def expected_epochs(self, tokens):
        """Epochs of each dataset's train tokens that `tokens` training tokens are expected to hold."""
        phases = list(self.phases()) + [(np.inf, None)]
        seen = sum(shares * max(0.0, min(end, tokens) - start) for (start, shares), (end, _) in zip(phases, phases[1:]))
        return seen / self.train_tokens

    def choose(self, count, rng, tokens_before):
        """The dataset of each of `count` windows, by the shares in force after `tokens_before` tokens."""
        shares = np.cumsum(self.shares_at(tokens_before))
        return np.minimum(np.searchsorted(shares, rng.random(count) * shares[-1], side="right"), len(shares) - 1)

    def windows_before(self, seed, step, count, first=0, new=None):
        """How many windows each dataset gave the usual draws of steps [first, step) (of `count` windows each, less
        those of `new` documents, history.NewWindows): the steps' choices replayed from their seeds once, and
        kept (one dataset gave them all)."""
        taken = new.before(step) if new else 0
        if len(self.sources) == 1:
            return np.array([(step - first) * count - taken], np.int64)
        done = self.before.setdefault((seed, count, first), [np.zeros(len(self.sources), np.int64)])
        while len(done) <= step - first:
            t = first + len(done) - 1
            usual = count - (new.at(t) if new else 0)
            which = self.choose(usual, np.random.default_rng([seed, t]), t * count * self.context)
            done.append(done[-1] + np.bincount(which, minlength=len(self.sources)))
        return done[step - first]

    def draw(self, seed, step, count, first=0, number=0, new=None):
        """(The dataset index, the stream position) of each of step `step`'s windows drawn as the run draws them:
        `count` less those `new` documents take in this step. With `--sampling epochs` the epochs are counted
        from `first`, the first step on these generations, and a later set of generations (`number` > 0) is
        visited in orders of its own."""
        rng = np.random.default_rng([seed, step])
        which = self.choose(count - (new.at(step) if new else 0), rng, step * count * self.context)
        before = self.windows_before(seed, step, count, first, new) if self.sampling == "epochs" else None
        starts = np.zeros(len(which), np.int64)
        for index, splits in enumerate(self.splits):
            drawn = which == index
            if before is not None:
                key = [seed, index] + ([number] if number else [])
                starts[drawn] = self.starts[index].in_epochs(before[index] + np.arange(int(drawn.sum())), key)
            elif self.starts:
                numbers = rng.integers(0, self.starts[index].count, int(drawn.sum()))
                starts[drawn] = self.starts[index].positions(numbers)
            else:
                starts[drawn] = splits["train"].draw(int(drawn.sum()), rng)
        return which, starts

    def read(self, which, starts, rows=slice(None)):
        """The `rows` of the windows at stream positions `starts` of the datasets `which`."""
        starts, mine = starts[rows], which[rows]
        out = np.empty((len(mine), self.context + 1), np.int64)
        for index, splits in enumerate(self.splits):
            drawn = mine == index
            out[drawn] = splits["train"].read(starts[drawn])
        return out

    def fetch_ahead(self, which, starts):
        """For datasets in a bucket, start fetching the token files that the windows at `starts` of the datasets
        `which` read (in that order), and then val's, which evaluations read."""
        for index, (snapshot, splits) in enumerate(zip(self.snapshots, self.splits)):
            files = getattr(snapshot, "files", None)  # a RemoteSnapshot's (prepare/storage/reader.py)
            if files is not None:
                files.ahead(splits["train"].files_at(starts[which == index]))
                files.ahead(e.file for e in splits["val"].extents)

    def data_wait(self):
        """Seconds this process's reads waited for the token files of datasets in a bucket."""
        return sum(getattr(s, "files", None) and s.files.waited or 0.0 for s in self.snapshots)

    def close(self):
        for snapshot in self.snapshots:
            snapshot.close()


def step_windows(mixture, seed, step, count, rows=slice(None)):
    """(The `rows` of one optimizer step's `count` windows, all its micro-batches over all processes; the
    dataset index of each of the `count` windows). Every process draws all of a step's windows, which costs
    nothing, and reads only its own rows."""
    which, starts = mixture.draw(seed, step, count)
    return mixture.read(which, starts, rows), which


def eval_windows(split, count, rows=slice(None)):
    """The `rows` of a fixed set of windows, so eval losses compare across runs, resumes and batch sizes."""
    return split.sample(count, np.random.default_rng(EVAL_SEED), rows)


def to_device(windows, device):
    """Inputs and targets (shifted by one) on `device`; pinned, non-blocking copies on CUDA."""
    batch = torch.from_numpy(windows)
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    return batch[:, :-1], batch[:, 1:]
