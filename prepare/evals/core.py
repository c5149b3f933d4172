"""The CORE metric of the DCLM paper (arXiv 2406.11794) as nanochat scores it: the 22 tasks of the eval
bundle's core.yaml, each with its few-shot count and continuation delimiter; a multiple-choice or schema item
is right when its gold option has the highest log-probability per token, a language-modelling item when greedy
decoding reproduces its continuation exactly; each task's accuracy is centred on its random baseline from
eval_meta_data.csv, and CORE is their mean."""

import csv
import os
import random

import yaml

from prepare.evals.cache import cached_zip_folder
from prepare.evals.task import Item, Task, TaskError, read_jsonl, shuffled
from prepare.tokenizer import encode

URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"  # the bundle nanochat downloads
FEWSHOT_SEED = 1234  # nanochat's few-shot examples of item i are drawn with Random(FEWSHOT_SEED + i)
KINDS = ("multiple_choice", "schema", "language_modeling")
FIELDS = {"multiple_choice": {"query": str, "choices": list, "gold": int},
          "schema": {"context_options": list, "continuation": str, "gold": int},
          "language_modeling": {"context": str, "continuation": str}}


def bundle():
    return cached_zip_folder(URL, "eval_bundle.zip", "eval_bundle")


def tasks(encoding, max_per_task=None):
    """A Task per task of core.yaml, its sequences starting with end-of-text as a document does in training."""
    folder = bundle()
    config_path, meta_path = os.path.join(folder, "core.yaml"), os.path.join(folder, "eval_meta_data.csv")
    try:
        with open(config_path, encoding="utf-8") as f:
            specs = yaml.safe_load(f)["icl_tasks"]
        with open(meta_path, encoding="utf-8", newline="") as f:
            baselines = {row["Eval Task"]: float(row["Random baseline"]) for row in csv.DictReader(f)}
    except OSError as e:
        raise TaskError(f"{e.filename}: {e.strerror}; is {folder} the unpacked eval bundle of {URL}?") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise TaskError(f"{folder}: core.yaml or eval_meta_data.csv is not as the eval bundle's "
                        f"({type(e).__name__}: {e})") from None
    found = []
    for spec in specs:
        label, kind = spec.get("label"), spec.get("icl_task_type")
        if kind not in KINDS or label not in baselines:
            raise TaskError(f"{config_path}: task {label!r} of type {kind!r}: the types are {', '.join(KINDS)}, "
                            f"and each label needs its row in {meta_path}")
        rows = shuffled(read_jsonl(os.path.join(folder, "eval_data", spec["dataset_uri"]), FIELDS[kind]), max_per_task)
        shots, delimiter = spec.get("num_fewshot", [0])[0], spec.get("continuation_delimiter", " ")
        items = [core_item(kind, rows, index, shots, delimiter, encoding, label) for index in range(len(rows))]
        found.append(Task(label, kind, items, baseline=baselines[label] / 100))
    return found


def specs():
    """(the eval bundle's folder, the task specs of its core.yaml), each checked to have a known type."""
    folder = bundle()
    config_path = os.path.join(folder, "core.yaml")
    try:
        with open(config_path, encoding="utf-8") as f:
            found = yaml.safe_load(f)["icl_tasks"]
    except OSError as e:
        raise TaskError(f"{e.filename}: {e.strerror}; is {folder} the unpacked eval bundle of {URL}?") from None
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise TaskError(f"{config_path}: not as the eval bundle's ({type(e).__name__}: {e})") from None
    for spec in found:
        if spec.get("icl_task_type") not in KINDS:
            raise TaskError(f"{config_path}: task {spec.get('label')!r} of type {spec.get('icl_task_type')!r}: "
                            f"the types are {', '.join(KINDS)}")
    return folder, found


def texts():
    """{task name: the text of each item with each of its options}: what decontamination looks for."""
    folder, found = specs()
    by_task = {}
    for spec in found:
        kind = spec.get("icl_task_type")
        rows = read_jsonl(os.path.join(folder, "eval_data", spec["dataset_uri"]), FIELDS[kind])
        delimiter = spec.get("continuation_delimiter", " ")
        if kind == "multiple_choice":
            items = [f"{row['query']}{delimiter}{choice}" for row in rows for choice in row["choices"]]
        elif kind == "schema":
            items = [f"{option}{delimiter}{row['continuation']}" for row in rows for option in row["context_options"]]
        else:
            items = [f"{row['context']}{delimiter}{row['continuation']}" for row in rows]
        by_task[spec["label"]] = items
    return by_task


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
        context = f"{shown}{row['context'].strip()}{delimiter}"
        prompts = [context.strip(), f"{context}{row['continuation']}"]
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
