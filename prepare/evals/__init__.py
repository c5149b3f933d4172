"""Eval tasks, one file per suite, read from their published files (cached once, cache.py) and turned into
token sequences to score: what `train score` and `fit --eval-tasks` score and what `prepare build
--decontaminate` removes from a corpus. No torch: both stages import it. A new suite is one file with
`tasks(encoding, max_per_task)` and `texts()`, and one line in SUITES."""

from prepare.evals import core, hellaswag
from prepare.evals.task import TaskError

SUITES = {"hellaswag": hellaswag, "core": core}


def parse_suites(text):
    """--tasks hellaswag,core -> ["hellaswag", "core"]."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUITES]
    if unknown or not names:
        raise TaskError(f"--tasks {text!r}: choose among {', '.join(SUITES)} (comma-separated)")
    return list(dict.fromkeys(names))


def load_suites(names, encoding, max_per_task=None):
    """The Tasks of each suite named, tokenized by `encoding`; at most `max_per_task` items per task."""
    return [task for name in names for task in SUITES[name].tasks(encoding, max_per_task)]


def item_texts(suite):
    """{task name: the text of each item with each of its options} of a suite, from the same files (and
    cache) as the scores: what `prepare build --decontaminate` looks for in a corpus. No tokenizer."""
    return SUITES[suite].texts()
