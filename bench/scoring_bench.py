"""Downstream scoring speed on this CPU: seconds per HellaSwag-sized item for `tiny-llama` and `llama-small`, and
what the whole val set (10,042 items) would take.

Items are HellaSwag's shape (a context and four endings, completion style), made of English text so that
their token counts are those of the real set: about 40 context tokens and 4 endings of about 20 (the real file
cannot be downloaded here). Models are freshly initialised: the speed does not depend on the weights.
"""

import os
import random
import time

import torch

from prepare.evals.task import Item, Task
from prepare.tokenizer import load_encoding
from train.models.llama import Llama
from train.models.llama_family import SHAPES, LlamaConfig
from train.scoring import score_tasks

HELLASWAG_ITEMS = 10_042
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data", "tinystories", "tinystories_val.txt")
CONTEXT_WORDS, ENDING_WORDS = 32, 16  # about 40 and 20 GPT-2 tokens of plain English


def words():
    if os.path.exists(SHARED):
        with open(SHARED, encoding="utf-8") as f:
            return f.read().split()
    with open(random.__file__, encoding="utf-8") as f:  # text every machine has, without ../shared
        return f.read().split()


def hellaswag_like(count, encoding):
    rng, text = random.Random(0), words()
    span = lambda n: " ".join(text[(s := rng.randrange(len(text) - n)) : s + n])  # noqa: E731
    items = []
    for _ in range(count):
        context = [encoding.eot_token] + encoding.encode_ordinary(span(CONTEXT_WORDS))
        sequences = [context + encoding.encode_ordinary(" " + span(ENDING_WORDS)) for _ in range(4)]
        items.append(Item(sequences, [(len(context), len(s)) for s in sequences], 0))
    return Task("hellaswag", "hellaswag", items, 0.25)


def main():
    torch.set_num_threads(os.cpu_count())
    encoding = load_encoding("gpt2")
    device = torch.device("cpu")
    for preset, count in (("tiny-llama", 400), ("llama-small", 40)):
        model = Llama(LlamaConfig(vocab_size=encoding.n_vocab, **SHAPES[preset])).eval()
        task = hellaswag_like(count, encoding)
        tokens = sum(len(s) for item in task.items for s in item.sequences) / count / 4
        for dtype in ("fp32", "bf16"):
            score_tasks(model, [Task(task.name, task.kind, task.items[:8], 0.25)], 16, device, dtype)  # warm-up
            start = time.perf_counter()
            score_tasks(model, [task], 16, device, dtype)
            per_item = (time.perf_counter() - start) / count
            print(f"{preset:11s} {dtype}: {per_item * 1000:7.1f} ms per item ({tokens:.0f} tokens per option, "
                  f"{count} items): the 10,042 HellaSwag items in {per_item * HELLASWAG_ITEMS / 60:.1f} min")


if __name__ == "__main__":
    main()
