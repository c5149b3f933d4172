"""Downstream tasks that place a model among published ones, read from their published files and turned into
token sequences to score.

- `hellaswag`: HellaSwag's validation set (10,042 items) scored completion style, as llm.c and build-nanogpt
  do: the context, then each of the four endings after a space; `acc` picks the ending with the highest
  summed log-probability, `acc_norm` the highest per token.
- `core`: the CORE metric of the DCLM paper (arXiv 2406.11794) as nanochat scores it: the 22 tasks of the
  eval bundle's core.yaml, each with its few-shot count and continuation delimiter; a multiple-choice or
  schema item is right when its gold option has the highest log-probability per token, a language-modelling
  item when greedy decoding reproduces its continuation exactly; each task's accuracy is centred on its random
  baseline from eval_meta_data.csv, and CORE is their mean.

Every sequence starts with end-of-text, as a document does in training and a prompt does in `sample`.
"""

import csv
import dataclasses
import json
import os
import random

import yaml

from prepare.tokenizer import encode
from train.fetch import FetchError, cached_file, cached_zip_folder

HELLASWAG_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
CORE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"  # the bundle nanochat downloads
SUITES = ("hellaswag", "core")
# Items are shuffled by this seed before any --max-per-task cut (nanochat's), so the first N are a fair sample
# and always the same ones; nanochat's few-shot examples of item i are drawn with Random(FEWSHOT_SEED + i).
SUBSET_SEED, FEWSHOT_SEED = 1337, 1234
KINDS = ("multiple_choice", "schema", "language_modeling")


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
    kind: str  # "hellaswag" or one of KINDS
    items: list
    baseline: float = 0.0  # the accuracy of a random guess, as a fraction: CORE centres on it


def decontamination_notes(data_dirs, suites):
    """One line for each dataset a run trained on that was not decontaminated against a suite it is scored on
    (`prepare build --decontaminate`): its scores may count items the model saw in training."""
    from prepare.format import DatasetError, read_manifest

    notes = []
    for path in data_dirs:
        try:
            done = read_manifest(path).options.get("decontaminate") or []
        except DatasetError:
            notes.append(f"note: the run's dataset {path} is not here: whether it was decontaminated against {', '.join(suites)} is unknown")
            continue
        missing = [suite for suite in suites if suite not in done]
        if missing:
            notes.append(f"note: the run's dataset {path} was not decontaminated against {', '.join(missing)} "
                         f"(prepare build --decontaminate {','.join(missing)}): its scores may count items the model trained on")
    return notes


def parse_suites(text):
    """--tasks hellaswag,core -> ["hellaswag", "core"]."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUITES]
    if unknown or not names:
        raise TaskError(f"--tasks {text!r}: choose among {', '.join(SUITES)} (comma-separated)")
    return list(dict.fromkeys(names))


def load_suites(names, encoding, max_per_task=None):
    """The Tasks of each suite named, tokenized by `encoding`; at most `max_per_task` items per task."""
    tasks = []
    for name in names:
        tasks += hellaswag(encoding, max_per_task) if name == "hellaswag" else core(encoding, max_per_task)
    return tasks


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
                wrong = [k for k, kind in fields.items() if not isinstance(row, dict) or not isinstance(row.get(k), kind)]
                if wrong:
                    raise TaskError(f"{path}:{number}: no {wrong[0]!r} of type {fields[wrong[0]].__name__}")
                rows.append(row)
    except OSError as e:
        raise TaskError(f"{path}: {e.strerror}") from None
    if not rows:
        raise TaskError(f"{path}: no items")
    return rows


def item_texts(suite):
    """{task name: the text of each item with each of its options} of a suite, from the same files (and
    cache) as the scores: what `prepare build --decontaminate` looks for in a corpus. No tokenizer, no torch."""
    if suite == "hellaswag":
        path = cached_file(HELLASWAG_URL, "hellaswag/hellaswag_val.jsonl")
        rows = read_jsonl(path, {"ctx": str, "endings": list, "label": int})
        return {"hellaswag": [f"{row['ctx']} {ending}" for row in rows for ending in row["endings"]]}
    bundle, specs = core_specs()
    texts = {}
    for spec in specs:
        kind = spec.get("icl_task_type")
        rows = read_jsonl(os.path.join(bundle, "eval_data", spec["dataset_uri"]), CORE_FIELDS[kind])
        delimiter = spec.get("continuation_delimiter", " ")
        if kind == "multiple_choice":
            items = [f"{row['query']}{delimiter}{choice}" for row in rows for choice in row["choices"]]
        elif kind == "schema":
            items = [f"{option}{delimiter}{row['continuation']}" for row in rows for option in row["context_options"]]
        else:
            items = [f"{row['context']}{delimiter}{row['continuation']}" for row in rows]
        texts[spec["label"]] = items
    return texts


CORE_FIELDS = {"multiple_choice": {"query": str, "choices": list, "gold": int},
               "schema": {"context_options": list, "continuation": str, "gold": int},
               "language_modeling": {"context": str, "continuation": str}}


def core_specs():
    """(the eval bundle's folder, the task specs of its core.yaml), each checked to have a known type."""
    bundle = cached_zip_folder(CORE_URL, "eval_bundle.zip", "eval_bundle")
    config_path = os.path.join(bundle, "core.yaml")
    try:
        with open(config_path, encoding="utf-8") as f:
            specs = yaml.safe_load(f)["icl_tasks"]
    except OSError as e:
        raise TaskError(f"{e.filename}: {e.strerror}; is {bundle} the unpacked eval bundle of {CORE_URL}?") from None
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise TaskError(f"{config_path}: not as the eval bundle's ({type(e).__name__}: {e})") from None
    for spec in specs:
        if spec.get("icl_task_type") not in KINDS:
            raise TaskError(f"{config_path}: task {spec.get('label')!r} of type {spec.get('icl_task_type')!r}: the types are {', '.join(KINDS)}")
    return bundle, specs


def hellaswag(encoding, max_per_task=None):
    path = cached_file(HELLASWAG_URL, "hellaswag/hellaswag_val.jsonl")
    items = []
    for row in shuffled(read_jsonl(path, {"ctx": str, "endings": list, "label": int}), max_per_task):
        if not 0 <= row["label"] < len(row["endings"]):
            raise TaskError(f"{path}: item {row.get('ind', '?')} has label {row['label']} for {len(row['endings'])} endings")
        context = [encoding.eot_token] + encode(encoding, row["ctx"])
        sequences = [context + encode(encoding, " " + ending) for ending in row["endings"]]
        items.append(Item(sequences, [(len(context), len(s)) for s in sequences], row["label"]))
    return [Task("hellaswag", "hellaswag", items, baseline=0.25)]


def core(encoding, max_per_task=None):
    bundle = cached_zip_folder(CORE_URL, "eval_bundle.zip", "eval_bundle")
    config_path, meta_path = os.path.join(bundle, "core.yaml"), os.path.join(bundle, "eval_meta_data.csv")
    try:
        with open(config_path, encoding="utf-8") as f:
            specs = yaml.safe_load(f)["icl_tasks"]
        with open(meta_path, encoding="utf-8", newline="") as f:
            baselines = {row["Eval Task"]: float(row["Random baseline"]) for row in csv.DictReader(f)}
    except OSError as e:
        raise TaskError(f"{e.filename}: {e.strerror}; is {bundle} the unpacked eval bundle of {CORE_URL}?") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise TaskError(f"{bundle}: core.yaml or eval_meta_data.csv is not as the eval bundle's ({type(e).__name__}: {e})") from None
    tasks = []
    for spec in specs:
        label, kind = spec.get("label"), spec.get("icl_task_type")
        if kind not in KINDS or label not in baselines:
            raise TaskError(f"{config_path}: task {label!r} of type {kind!r}: the types are {', '.join(KINDS)}, "
                            f"and each label needs its row in {meta_path}")
        fields = CORE_FIELDS[kind]
        rows = shuffled(read_jsonl(os.path.join(bundle, "eval_data", spec["dataset_uri"]), fields), max_per_task)
        shots, delimiter = spec.get("num_fewshot", [0])[0], spec.get("continuation_delimiter", " ")
        items = [core_item(kind, rows, index, shots, delimiter, encoding, label) for index in range(len(rows))]
        tasks.append(Task(label, kind, items, baseline=baselines[label] / 100))
    return tasks


def core_item(kind, rows, index, shots, delimiter, encoding, label):
    """Item `index` of a CORE task with its few-shot examples, each example then the item, rendered as
    nanochat's templates render them."""
    others = [i for i in range(len(rows)) if i != index]
    examples = [rows[i] for i in random.Random(FEWSHOT_SEED + index).sample(others, min(shots, len(others)))]
    row = rows[index]
    if kind == "multiple_choice":
        shown = "".join(f"{e['query']}{delimiter}{e['choices'][e['gold']]}\n\n" for e in examples)
        prompts = [f"{shown}{row['query']}{delimiter}{choice}" for choice in row["choices"]]
    elif kind == "schema":
        shown = "".join(f"{e['context_options'][e['gold']]}{delimiter}{e['continuation']}\n\n" for e in examples)
        prompts = [f"{shown}{option}{delimiter}{row['continuation']}" for option in row["context_options"]]
    else:
        shown = "".join(f"{e['context'].strip()}{delimiter}{e['continuation']}\n\n" for e in examples)
        prompts = [f"{shown}{row['context'].strip()}{delimiter}".strip(), f"{shown}{row['context'].strip()}{delimiter}{row['continuation']}"]
    sequences = [[encoding.eot_token] + encode(encoding, p) for p in prompts]
    if kind == "multiple_choice":  # the options follow a common prefix, which is not scored
        start = common_length(sequences)
        spans = [(start, len(s)) for s in sequences]
    elif kind == "schema":  # the options differ before a common continuation, which alone is scored
        end = common_length([s[::-1] for s in sequences])
        spans = [(len(s) - end, len(s)) for s in sequences]
    else:
        # The continuation is what follows the context's tokens (nanochat requires those to be a prefix of the
        # whole). A tokenizer can merge across the boundary (cl100k's pattern joins "):" with the "\n" after
        # it): then scoring starts at the first token that differs, the merged one, as for multiple choice.
        without, sequence = sequences
        sequences, spans = [sequence], [(min(common_length([without, sequence]), len(sequence) - 1), len(sequence))]
    if not 0 <= row.get("gold", 0) < len(sequences):
        raise TaskError(f"{label}: item {index} has gold {row['gold']} for {len(sequences)} options")
    return Item(sequences, spans, row.get("gold", 0))


def common_length(sequences):
    """The length of the prefix all `sequences` share."""
    shortest = min(len(s) for s in sequences)
    return next((i for i in range(shortest) if len({s[i] for s in sequences}) > 1), shortest)


def load_eval_tasks(config, encoding, world):
    """The downstream tasks that --eval-tasks names, read by rank 0 first (which downloads them once), then by
    the others from the cache; one message on failure."""
    if not config.eval_tasks:
        return []

    def loaded():
        try:
            return load_suites(parse_suites(config.eval_tasks), encoding, config.eval_tasks_max), None
        except (TaskError, FetchError) as e:
            return None, f"--eval-tasks: {e}"

    tasks, error = loaded() if world.is_main else (None, None)
    if world.broadcast(error) is None and not world.is_main:
        tasks, error = loaded()
    error = world.first_error(error)
    if error:
        from train.distributed import JobError

        raise JobError(error)
    return tasks
