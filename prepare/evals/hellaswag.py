"""HellaSwag's validation set (10,042 items), scored completion style as llm.c and build-nanogpt score it: the
context, then each of the four endings after a space; `acc` picks the ending with the highest summed
log-probability, `acc_norm` the highest per token."""

from prepare.evals.cache import cached_file
from prepare.evals.task import Item, Task, TaskError, read_jsonl, shuffled
from prepare.tokenizer import encode

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
CACHED = "hellaswag/hellaswag_val.jsonl"  # where in the cache
FIELDS = {"ctx": str, "endings": list, "label": int}


def tasks(encoding, max_per_task=None):
    """The one Task, its sequences starting with end-of-text as a document does in training."""
    path = cached_file(URL, CACHED)
    items = []
    for row in shuffled(read_jsonl(path, FIELDS), max_per_task):
        if not 0 <= row["label"] < len(row["endings"]):
            raise TaskError(f"{path}: item {row.get('ind', '?')} has label {row['label']} for "
                            f"{len(row['endings'])} endings")
        context = [encoding.eot_token] + encode(encoding, row["ctx"])
        sequences = [context + encode(encoding, " " + ending) for ending in row["endings"]]
        items.append(Item(sequences, [(len(context), len(s)) for s in sequences], row["label"]))
    return [Task("hellaswag", "hellaswag", items, baseline=0.25)]


def texts():
    """{task name: the text of each item with each of its options}: what decontamination looks for."""
    rows = read_jsonl(cached_file(URL, CACHED), FIELDS)
    return {"hellaswag": [f"{row['ctx']} {ending}" for row in rows for ending in row["endings"]]}
