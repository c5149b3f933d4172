"""Training a byte-level BPE tokenizer on a corpus: `prepare tokenizer SOURCES... --vocab-size N --out DIR`.

The documents come from the same SOURCE kinds a build reads, at most --max-chars characters of them, taken
from every input in proportion to its size (an input's share is read from its start). Hugging Face's
`tokenizers` learns the merges (in Rust, on every core); the merges become tiktoken ranks (bytes 0-255 first,
then each merged token in the order it was learned) and `<|endoftext|>` takes the id after them, so the
result encodes with tiktoken at tiktoken's speed, like any other encoding.
"""

import functools
import json
import os
import re
import sys
import time

import tiktoken
from tqdm import tqdm

from prepare.plan import current_inputs
from prepare.reading import warn
from prepare.readers import iter_documents
from prepare.readers.base import Part, SourceStats
from prepare.tokenizer.encodings import ENDOFTEXT, byte_characters, save_directory
from prepare.tokenizer.patterns import PATTERNS, oniguruma_pattern
from prepare.tokenizer.whitespace import part_cut

# A run of whitespace is one pre-token, and the merges learned in one cost time in the square of its length:
# runs are learned from their first TRAINING_RUN characters.
TRAINING_RUN = 1024
LONG_WHITESPACE = re.compile(r"(?<!\s)(\s{%d})\s+" % TRAINING_RUN)  # (?<!\s): tried once per run


def sample_documents(sources, opts, max_chars, bar, cut=None):
    """The documents to learn from: each input's share of `max_chars` (in proportion to its size), read from
    its start, the last document cut to fit. Inputs in a fixed order, so a rerun reads the same text. `cut`: as
    for iter_documents, a long document comes in Parts (cut where the split pattern would cut it too)."""
    inputs = sorted(current_inputs(sources, opts).values(), key=lambda e: e["id"])
    total = sum(e.get("size", 0) for e in inputs) or 1
    fraction = min(1.0, max_chars / total)
    for entry in inputs:
        budget = max(1, round(entry.get("size", 0) * fraction)) if fraction < 1 else float("inf")
        for doc in iter_documents(entry, opts, SourceStats(), warn, cut=cut):
            text = doc[: budget] if budget < len(doc) else doc
            text = LONG_WHITESPACE.sub(r"\1", text)
            budget -= len(text)
            bar.update(len(text))
            yield Part(text, doc.continued, doc.more and budget > 0) if isinstance(doc, Part) else text
            if budget <= 0:
                break


def train(sources, out, vocab_size, pattern, max_chars, opts):
    """Learn a vocabulary of `vocab_size` ids (end-of-text included) and write it as a tokenizer directory.
    Returns (encoding, characters read, documents read, seconds)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    start = time.perf_counter()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(oniguruma_pattern(PATTERNS[pattern])), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    on_terminal = sys.stderr.isatty()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=on_terminal, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    counted = {"documents": 0, "chars": 0}

    def documents():
        for text in sample_documents(sources, opts, max_chars, bar, functools.partial(part_cut, PATTERNS[pattern])):
            counted["documents"] += not getattr(text, "more", False)  # a Part counts where its document ends
            counted["chars"] += len(text)
            yield str(text)

    bar = tqdm(total=max_chars, unit="char", unit_scale=True, desc="reading", disable=not on_terminal, leave=False)
    tokenizer.train_from_iterator(documents(), trainer)
    bar.close()
    alphabet = {char: b for b, char in byte_characters().items()}
    ranks = {bytes([b]): b for b in range(256)}
    for merge in json.loads(tokenizer.to_str())["model"]["merges"]:
        pair = merge.split(" ") if isinstance(merge, str) else merge
        left, right = (bytes(alphabet[c] for c in part) for part in pair)
        ranks.setdefault(left + right, len(ranks))
    name = os.path.basename(os.path.normpath(out))
    encoding = tiktoken.Encoding(name=name, pat_str=PATTERNS[pattern], mergeable_ranks=ranks,
                                 special_tokens={ENDOFTEXT: len(ranks)})
    save_directory(encoding, out)
    return encoding, counted["chars"], counted["documents"], time.perf_counter() - start

