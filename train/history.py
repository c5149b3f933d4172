"""A run that follows its data (--follow-data): which generation of each dataset each step trained on, and what
each session draws first. The history is a list of eras, one per set of generations, saved in every checkpoint
(its layout: docs/continual.md); the documents a resume finds added since the last session are drawn once each,
document after document, beside a --replay share drawn as usual. A step's windows stay a pure function of
(seed, step, the history), and every generation trained on is pinned, so that the run can replay itself.
"""

import hashlib
import os

import numpy as np

from prepare import format as fmt
from prepare.storage import dataset
from prepare.storage.store import StorageError
from train.data import Mixture
from train.distributed import JobError
from train.epochs import permuted

NEW_DOCUMENTS_KEY = 0x6E6577  # keeps the new documents' order apart from every other draw of the seed
MIXED_STEPS = 16  # the new documents' windows are shuffled among those of the next 16 steps
AHEAD = 8  # steps whose token files a bucket dataset fetches before they run


def pin_name(run_dir):
    """A run's pin in a dataset: its directory's name and a hash of its absolute path."""
    path = os.path.abspath(run_dir)
    return f"{os.path.basename(path)}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def first_era(generations):
    return {"step": 0, "generations": list(generations), "since": [None] * len(generations),
            "done": [[] for _ in generations]}


def gone(run_dir):
    return (f"which {run_dir} trained on, was collected (was its pin released?); the run cannot tell which documents "
            f"it has not drawn yet: start a new run, or resume without --follow-data")


class NewWindows:
    """The windows an era draws first: each new document's start and every `context` tokens inside it (so that
    every token of it is trained on), `per_step` of each step's windows from step `first` on, in an order
    drawn from (seed, era number), until all are drawn: document after document, shuffled over MIXED_STEPS
    steps at a time."""

    def __init__(self, documents, last_starts, context, per_step, first, key):
        """`documents`: per dataset, a list of (file, position in it, stream position, tokens); `last_starts`:
        per dataset, the last stream position a window fits at (the last windows move back to it)."""
        dataset, starts, owner, self.documents = [], [], [], []
        for index, docs in enumerate(documents):
            for file, position, at, tokens in docs:
                count = -(-tokens // context)
                dataset.append(np.full(count, index))
                starts.append(at + context * np.arange(count))
                owner.append(np.full(count, len(self.documents)))
                self.documents.append((index, file, position))
        join = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        self.dataset, self.starts, self.owner = join(dataset), join(starts), join(owner)
        self.starts = np.minimum(self.starts, np.asarray(last_starts, np.int64)[self.dataset])
        self.total, self.per_step, self.first, self.key = len(self.starts), per_step, first, key
        # The documents in an order drawn from the key, each one's windows one after another; the windows are
        # then drawn chunk by chunk in a shuffled order inside each chunk: a step mixes the windows of many
        # documents, and a session cut short has drawn whole documents, not a scattering of all of them.
        rank = permuted(np.arange(len(self.documents)), len(self.documents), key)
        self.sequence = np.lexsort((np.arange(self.total), rank[self.owner])) if self.total else np.zeros(0, np.int64)
        self.chunk = per_step * MIXED_STEPS

    def before(self, step):
        """New windows drawn in the steps before `step` of the era."""
        return min(self.total, max(0, step - self.first) * self.per_step)

    def at(self, step):
        return self.before(step + 1) - self.before(step)

    def order(self, numbers):
        """The windows drawn `numbers`th (int64 in [0, total))."""
        chunk, offset = np.divmod(numbers, self.chunk)
        out = np.empty_like(numbers)
        for c in np.unique(chunk):
            size = min(self.chunk, self.total - int(c) * self.chunk)
            within = permuted(offset[chunk == c], size, [*self.key, int(c)])
            out[chunk == c] = self.sequence[int(c) * self.chunk + within]
        return out

    def drawn_documents(self, step):
        """Whether each document had all its windows drawn by the end of the steps before `step`."""
        windows = np.zeros(self.total, bool)
        windows[self.order(np.arange(self.before(step)))] = True
        missing = np.bincount(self.owner[~windows], minlength=len(self.documents))
        return missing == 0


def new_documents(snapshot, split, since_manifest, done):
    """(file, position, stream position, tokens) of every train document of `snapshot` that generation
    `since_manifest` had not, less those `done` ([file, position] pairs)."""
    if since_manifest is None:
        return []
    where = {}  # file -> [(start, end, stream position of start)] of the live extents in it
    for extent, end in zip(split.extents, split.ends):
        where.setdefault(extent.file, []).append((extent.start, extent.end, int(end) - extent.tokens))
    done, eot, out = {tuple(d) for d in done}, snapshot.manifest.tokenizer.eot_token, []
    for added in dataset.added_extents(snapshot.data_dir, since_manifest, snapshot.manifest):
        tokens = np.asarray(snapshot.open_tokens(added.file)[added.start : added.end])
        firsts = np.flatnonzero(tokens == eot)
        lengths = np.diff(np.append(firsts, len(tokens)))
        for first, length in zip(firsts.tolist(), lengths.tolist()):
            position = added.start + first
            if (added.file, position) in done:
                continue
            start, _, at = next(e for e in where[added.file] if e[0] <= position < e[1])
            out.append((added.file, position, at + position - start, length))
    return out


def read_generation(path, generation, run_dir):
    """A generation's manifest (its records are kept with it while a run pins it), or one line if it is gone."""
    try:
        return dataset.read_generation(path, generation)
    except fmt.DatasetError:
        raise JobError(f"{path}: generation {generation}, " + gone(run_dir)) from None


def era_windows(era, number, mixture, config, count):
    """The NewWindows of `era` (the `number`th of the run) on its opened `mixture`."""
    documents = []
    opened = zip(config.data, mixture.snapshots, mixture.splits, era["since"], era["done"])
    for source, snapshot, splits, since, done in opened:
        old = None if since is None else read_generation(source.path, since, config.out)
        documents.append(new_documents(snapshot, splits["train"], old, done))
    # Fixed when the era's first session starts: a later --replay is the next era's.
    per_step = era.setdefault("per_step", max(1, round((1 - config.replay) * count)))
    last_starts = [splits["train"].windows - 1 for splits in mixture.splits]
    key = [NEW_DOCUMENTS_KEY, config.seed, number]
    return NewWindows(documents, last_starts, config.context, per_step, era["step"], key)


def next_era(previous, number, step, generations, config, count):
    """The era that begins at `step` on `generations` after `previous` (the `number`th era, which ran until
    `step`): what counts as old, and which new documents are already drawn."""
    if previous["generations"] is None:  # a run that followed no data before: nothing is known to be new
        return {**first_era(generations), "step": step}
    since, done = list(previous["generations"]), [[] for _ in generations]
    if any(s is not None for s in previous["since"]):
        mixture = Mixture(config.data, config.context, previous["generations"], config.window_start, config.sampling,
                          gone(config.out))
        try:
            new = era_windows(previous, number, mixture, config, count)
            drawn = new.drawn_documents(step)
        finally:
            mixture.close()
        if not drawn.all():  # the rest goes on being new, and what was drawn is done
            since = list(previous["since"])
            done = [list(d) for d in previous["done"]]
            for (index, file, position), full in zip(new.documents, drawn):
                if full:
                    done[index].append([file, position])
    return {"step": step, "generations": list(generations), "since": since, "done": done}


class History:
    """The eras of a run and the step windows they give. `eras`: the saved list; the last is this session's,
    on `mixture`."""

    def __init__(self, eras, mixture, config, count):
        self.eras, self.mixture, self.seed = eras, mixture, config.seed
        self.ahead = 0  # the first step whose windows' files are not yet asked for
        self.number = len(eras) - 1
        self.new = era_windows(eras[-1], self.number, mixture, config, count) if config.follow_data else None

    @property
    def first(self):
        return self.eras[-1]["step"]

    def draw(self, step, count):
        """(The dataset index, the stream position) of each of step `step`'s `count` windows: the usual draw,
        then this step's share of the new documents' windows."""
        which, starts = self.mixture.draw(self.seed, step, count, self.first, self.number, self.new)
        if self.new and self.new.at(step):
            chosen = self.new.order(np.arange(self.new.before(step), self.new.before(step + 1)))
            which = np.concatenate([which, self.new.dataset[chosen]])
            starts = np.concatenate([starts, self.new.starts[chosen]])
        return which, starts

    def windows(self, step, count, rows=slice(None)):
        """(The `rows` of step `step`'s `count` windows, the dataset index of each of the `count`). The files of
        the next AHEAD steps' windows start coming from a bucket first (their draws are known now)."""
        for ahead in range(max(step, self.ahead), step + AHEAD):
            later, at = self.draw(ahead, count)
            self.mixture.fetch_ahead(later[rows], at[rows])
        self.ahead = step + AHEAD
        which, starts = self.draw(step, count)
        return self.mixture.read(which, starts, rows), which

    def reached(self, step):
        """(New documents drawn in full by the end of the steps before `step`, new documents)."""
        if not self.new:
            return 0, 0
        return int(self.new.drawn_documents(step).sum()), len(self.new.documents)


def resume_eras(state, mixture, same_data, start_step, config, count):
    """The eras of a run resumed at `start_step` (from checkpoint `state`) on `mixture`: a new one if a
    following run finds another generation in force. `same_data`: whether the train data is the checkpoint's
    (for a checkpoint written before histories)."""
    before = {**first_era(mixture.generations), "generations": mixture.generations if same_data else None}
    eras = state.get("history") or [before]
    if eras[-1]["generations"] == mixture.generations:
        return eras
    if not config.follow_data:  # --allow-data-change: the run goes on as one era, on the generations in force
        return [first_era(mixture.generations)]
    return eras + [next_era(eras[-1], len(eras) - 1, start_step, mixture.generations, config, count)]


def open_mixture(config, world, generations=None):
    """The run's datasets, leased. Rank 0 opens `generations` (a cool-down's, its checkpoint's) or those in
    force; the others open exactly those, so that every process slices the same global batches whatever a
    prepare publishes meanwhile."""

    def opened(generations, why=None):
        try:
            return Mixture(config.data, config.context, generations, config.window_start, config.sampling, why), None
        except (fmt.DatasetError, StorageError) as e:  # said once, by rank 0, whichever process met it
            return None, str(e)

    mixture, error = opened(generations, gone(config.out)) if world.is_main else (None, None)
    error, generations = world.broadcast((error, mixture and mixture.generations))
    if error is None and not world.is_main:
        mixture, error = opened(generations)
    error = world.first_error(error)
    if error:
        if mixture:
            mixture.close()
        raise JobError(error)
    return mixture


def pin(config, mixture):
    """Pin the generations the run trains on now (rank 0; while the mixture holds their leases)."""
    for source, generation in zip(config.data, mixture.generations):
        dataset.pin(source.path, pin_name(config.out), os.path.abspath(config.out), generation)
