"""Scoring a model on downstream tasks (prepare/evals/): the log-probability of each option's scored
tokens, then each task's accuracy.

Sequences are batched by length and run through the model's body once; only the hidden states of the scored
positions meet the output layer, whose softmax covers the tokenizer's vocabulary (not the padding ids), as
in a Hugging Face model of the same weights. Under torchrun each process scores every world-size-th item and
the counts are summed.
"""

import dataclasses
import json
import os
import sys

import torch
from tqdm import tqdm

from train.device import autocast, pick_dtype

LOGIT_ROWS = 512  # scored positions per output-layer product: 512 x 50257 fp32 logits are 100 MB


@dataclasses.dataclass
class Option:
    """What a model gives one option of an item."""

    logprob: float  # summed over its scored tokens
    tokens: int
    greedy: bool  # every scored token is the model's most likely next token

    @property
    def mean(self):
        return self.logprob / max(self.tokens, 1)


@dataclasses.dataclass
class TaskScore:
    name: str
    kind: str
    items: int
    correct: float  # the task's accuracy rule: HellaSwag's summed log-probability, CORE's per-token or greedy
    correct_norm: float  # HellaSwag's per-token rule (acc_norm); the same as `correct` for CORE tasks
    baseline: float

    @property
    def acc(self):
        return self.correct / self.items

    @property
    def acc_norm(self):
        return self.correct_norm / self.items

    @property
    def centered(self):
        """CORE's centred accuracy: 0 at random guessing, 1 when every item is right."""
        return (self.acc - self.baseline) / (1 - self.baseline)


def cropped(sequence, span, context):
    """A sequence of at most context + 1 tokens (the model reads all but the last), cut from the left as
    nanochat does for a model of short context, and its scored span moved with it."""
    cut = max(0, len(sequence) - context - 1)
    start, end = span
    return sequence[cut:], (max(1, start - cut), end - cut)


@torch.no_grad()
def option_scores(model, tasks, batch_size, device, dtype, world=None, progress=False):
    """{(task index, item index): [Option, ...]} for this process's share of every task's items."""
    rank, size = (world.rank, world.size) if world else (0, 1)
    vocab, context = model.config.vocab_size, model.config.context
    requests = []  # (key, option index, tokens, span)
    for t, task in enumerate(tasks):
        for i in range(rank, len(task.items), size):
            item = task.items[i]
            for o, (sequence, span) in enumerate(zip(item.sequences, item.spans)):
                requests.append(((t, i), o, *cropped(sequence, span, context)))
    # Batches of similar lengths pad little; the longest first, so that an out-of-memory comes early.
    requests.sort(key=lambda r: -len(r[2]))
    results = {key: [None] * len(tasks[key[0]].items[key[1]].sequences) for key, *_ in requests}
    was_training = model.training
    model.eval()
    weight = model.lm_head.weight[:vocab].float().T  # cast once: every chunk of every batch multiplies by it
    with tqdm(total=len(requests), disable=not progress, unit="seq", dynamic_ncols=True) as bar:
        for first in range(0, len(requests), batch_size):
            batch = requests[first : first + batch_size]
            length = len(batch[0][2])
            ids = torch.zeros(len(batch), length, dtype=torch.long)
            rows, positions = [], []
            for b, (_, _, tokens, (start, end)) in enumerate(batch):
                ids[b, : len(tokens)] = torch.tensor(tokens)
                rows += [b] * (end - start)
                positions += range(start - 1, end - 1)  # the position that predicts each scored token
            ids = ids.to(device)
            with autocast(device, dtype):
                hidden = model.body(ids[:, :-1])
            rows, positions = torch.tensor(rows, device=device), torch.tensor(positions, device=device)
            scored, targets = hidden[rows, positions].float(), ids[rows, positions + 1]
            logprob = torch.empty(len(rows), dtype=torch.float64, device=device)
            greedy = torch.empty(len(rows), dtype=torch.bool, device=device)
            for s in range(0, len(rows), LOGIT_ROWS):
                logits = scored[s : s + LOGIT_ROWS] @ weight
                target = targets[s : s + LOGIT_ROWS, None]
                logprob[s : s + LOGIT_ROWS] = torch.log_softmax(logits, dim=-1).gather(1, target)[:, 0].double()
                # the target is the most likely token when its logit is the largest (amax: 7x faster than argmax on CPU)
                greedy[s : s + LOGIT_ROWS] = logits.gather(1, target)[:, 0] >= logits.amax(dim=-1)
            sums = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(0, rows, logprob).tolist()
            misses = torch.zeros(len(batch), dtype=torch.long, device=device).index_add_(0, rows, (~greedy).long())
            misses = misses.tolist()
            for b, (key, option, _, (start, end)) in enumerate(batch):
                results[key][option] = Option(sums[b], end - start, misses[b] == 0)
            bar.update(len(batch))
    model.train(was_training)
    return results


def best(values):
    """The index of the largest value, the first of equals (as numpy's argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_tasks(model, tasks, batch_size, device, dtype, world=None, progress=False):
    """A TaskScore per task, over every process's items."""
    options = option_scores(model, tasks, batch_size, device, dtype, world, progress)
    counts = []
    for t, task in enumerate(tasks):
        correct = correct_norm = 0
        for key, scored in options.items():
            if key[0] != t:
                continue
            gold = task.items[key[1]].gold
            if task.kind == "language_modeling":
                correct += scored[0].greedy
                correct_norm += scored[0].greedy
            else:
                by_mean = best([o.mean for o in scored]) == gold
                correct += (best([o.logprob for o in scored]) == gold) if task.kind == "hellaswag" else by_mean
                correct_norm += by_mean
        counts += [correct, correct_norm]
    if world:
        counts = world.sum(counts)
    return [TaskScore(task.name, task.kind, len(task.items), counts[2 * t], counts[2 * t + 1], task.baseline)
            for t, task in enumerate(tasks)]


def summary(scores):
    """The figures a run logs: hellaswag/acc and hellaswag/acc_norm; each CORE task's centred accuracy as
    core/<task>, and CORE itself as core."""
    figures = {}
    core = [s for s in scores if s.kind != "hellaswag"]
    for s in scores:
        if s.kind == "hellaswag":
            figures.update({"hellaswag/acc": s.acc, "hellaswag/acc_norm": s.acc_norm})
    if core:
        figures.update({f"core/{s.name}": s.centered for s in core})
        figures["core"] = sum(s.centered for s in core) / len(core)
    return figures


@dataclasses.dataclass(frozen=True)
class Scores:
    """What `train score` finds: each task's score, and the notes on datasets not decontaminated against them."""

    tasks: list[TaskScore]
    notes: list[str]

    def lines(self, as_json=False):
        """A line per task, then CORE's (when a CORE task was scored): text, or one JSON object each."""
        lines = []
        for s in self.tasks:
            second = {"acc_norm": s.acc_norm} if s.kind == "hellaswag" else {"centered": s.centered}
            figures = {"acc": s.acc, **second}
            text = f"{s.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()) + f" ({s.items:,} items)"
            lines.append(json.dumps({"task": s.name, "kind": s.kind, "items": s.items, **figures}) if as_json else text)
        if any(s.kind != "hellaswag" for s in self.tasks):
            core = summary(self.tasks)["core"]
            lines.append(json.dumps({"task": "core", "core": core}) if as_json else f"CORE {core:.4f}")
        return lines


def score_model(model_name, tasks="hellaswag,core", max_per_task=None, which="cooled", batch_size=16, device="auto",
                dtype="fp32", as_json=False, *, say, warn):
    """`train score`: the Scores of MODEL (a run or checkpoint directory, or a Hugging Face model) on `tasks`, said
    by rank 0 (the other processes of a torchrun job score their share of the items and return None); the notes
    come after the scores they qualify, to `warn`."""
    from train.checkpoint import load_encoding, load_model
    from train.config import RunConfig
    from train.distributed import init_world
    from prepare.evals import load_suites, parse_suites
    from train.downstream import decontamination_notes
    from train.fetch import hub_model
    from train.hf import is_hf_directory, load_hf_model

    suites = parse_suites(tasks)
    world = init_world(device, RunConfig.collective_timeout)
    notes = []
    try:
        if os.path.isdir(model_name) and not is_hf_directory(model_name):
            model, config = load_model(model_name, which, world.device)
            encoding = load_encoding(model_name, which, config)
            notes = decontamination_notes([source.path for source in config.data], suites)
        else:
            model, encoding = load_hf_model(hub_model(model_name), world.device)
        scores = score_tasks(model, load_suites(suites, encoding, max_per_task), batch_size, world.device,
                             pick_dtype(dtype, world.device), world, progress=world.is_main and sys.stderr.isatty())
        if not world.is_main:
            world.finish()
            return None
        result = Scores(scores, notes)
        for line in result.lines(as_json):
            say(line)
        for note in notes:
            warn(note)
        world.finish()
        return result
    finally:
        world.close()
