"""What every eval task is made of: Items (a token sequence per option, the span of each that is scored, the
right option) in a Task, the error a task's files raise, reading their JSONL records, and the fixed shuffle
that makes the first N items of a task a fair sample, always the same."""

import dataclasses
import json
import random

# Items are shuffled by this seed before any --max-per-task cut (nanochat's).
SUBSET_SEED = 1337


class TaskError(Exception):
    pass


@dataclasses.dataclass
class Item:
    """One question: a token sequence per option (one for a language-modelling item), the span of each
    sequence's tokens that is scored ([start, end) positions), and the index of the right option."""

    sequences: list
    spans: list
    gold: int = 0


@dataclasses.dataclass
class Task:
    name: str
    kind: str  # "hellaswag" or one of core.KINDS
    items: list
    baseline: float = 0.0  # the accuracy of a random guess, as a fraction: CORE centres on it


def shuffled(rows, max_per_task):
    rows = list(rows)
    random.Random(SUBSET_SEED).shuffle(rows)
    return rows[:max_per_task] if max_per_task else rows


def read_jsonl(path, fields):
    """The records of a JSONL file, each checked to have `fields` (name -> type)."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as e:
                    raise TaskError(f"{path}:{number}: not JSON ({e})") from None
                wrong = [k for k, kind in fields.items()
                         if not isinstance(row, dict) or not isinstance(row.get(k), kind)]
                if wrong:
                    raise TaskError(f"{path}:{number}: no {wrong[0]!r} of type {fields[wrong[0]].__name__}")
                rows.append(row)
    except OSError as e:
        raise TaskError(f"{path}: {e.strerror}") from None
    if not rows:
        raise TaskError(f"{path}: no items")
    return rows
