"""datatrove's side of bench/filters_agreement.py, run by the Python of a venv with datatrove and spaCy (never the
project's): each of our rules as datatrove's filter configured with that rule alone, on the texts of IN (a JSON
list), its decisions written to OUT as {rule: [1 kept, 0 dropped, null where datatrove raised]}, and each text
through datatrove's PIIFormatter under "redacted".

    python bench/filters_datatrove.py IN OUT
"""

import json
import sys

from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.utils.text import split_into_words

QUALITY_OFF = dict(min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
                   max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
                   max_non_alpha_words_ratio=None, min_stop_words=None)
REPETITION_OFF = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
                      top_n_grams=(), dup_n_grams=())
FINEWEB_OFF = dict(line_punct_thr=-1.0, short_line_thr=2.0, char_duplicates_ratio=2.0, new_line_ratio=float("inf"))


def quality(**only):
    return GopherQualityFilter(**{**QUALITY_OFF, **only})


def repetition(**only):
    return GopherRepetitionFilter(**{**REPETITION_OFF, **only})


def c4(terminal, rule):
    return C4QualityFilter(filter_no_terminal_punct=terminal, filter_lorem_ipsum=rule == "lorem_ipsum",
                           filter_curly_bracket=rule == "curly_bracket",
                           min_num_sentences=5 if rule == "min_sentences" else -1)


FILTERS = {
    "gopher.dup_paragraphs": repetition(dup_para_frac=0.3),
    "gopher.dup_paragraph_chars": repetition(dup_para_char_frac=0.2),
    "gopher.dup_lines": repetition(dup_line_frac=0.3),
    "gopher.dup_line_chars": repetition(dup_line_char_frac=0.2),
    **{f"gopher.top_{n}gram_chars": repetition(top_n_grams=((n, f),)) for n, f in ((2, 0.2), (3, 0.18), (4, 0.16))},
    **{f"gopher.dup_{n}gram_chars": repetition(dup_n_grams=((n, f),))
       for n, f in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))},
    "gopher.min_words": quality(min_doc_words=50),
    "gopher.max_words": quality(max_doc_words=100_000),
    "gopher.min_mean_word_length": quality(min_avg_word_length=3),
    "gopher.max_mean_word_length": quality(max_avg_word_length=10),
    "gopher.bullet_lines": quality(max_bullet_lines_ratio=0.9),
    "gopher.ellipsis_lines": quality(max_ellipsis_lines_ratio=0.3),
    "gopher.alpha_words": quality(max_non_alpha_words_ratio=0.8),
    "gopher.stop_words": quality(min_stop_words=2),
    **{f"{prefix}.{rule}": c4(terminal, rule) for prefix, terminal in (("c4", True), ("c4_fineweb", False))
       for rule in ("lorem_ipsum", "curly_bracket", "min_sentences")},
    "fineweb.line_punct_ratio": FineWebQualityFilter(**{**FINEWEB_OFF, "line_punct_thr": 0.12}),
    "fineweb.short_line_ratio": FineWebQualityFilter(**{**FINEWEB_OFF, "short_line_thr": 0.67}),
    "fineweb.dup_line_chars": FineWebQualityFilter(**{**FINEWEB_OFF, "char_duplicates_ratio": 0.01}),
}


SYMBOLS = quality(max_symbol_word_ratio=0.1)


def symbol_ratios(text):
    """Gopher's hash and ellipsis ratios, which datatrove checks under one option, hashes first: the ellipsis ratio
    of a text the hashes drop is decided by datatrove's formula, on datatrove's words."""
    result = SYMBOLS.filter(Document(text=text, id="0"))
    reason = None if result is True else result[1]
    if reason == "gopher_too_many_hashes":
        ellipses = (text.count("...") + text.count("…")) / len(split_into_words(text)) <= 0.1
    else:
        ellipses = reason != "gopher_too_many_ellipsis"
    return {"gopher.hash_ratio": reason != "gopher_too_many_hashes", "gopher.ellipsis_ratio": ellipses}


def decide(text):
    decided = {}
    for name, step in FILTERS.items():
        try:
            decided[name] = step.filter(Document(text=text, id="0")) is True
        except ZeroDivisionError:
            decided[name] = None
    try:
        decided.update(symbol_ratios(text))
    except ZeroDivisionError:
        decided.update({"gopher.hash_ratio": None, "gopher.ellipsis_ratio": None})
    return decided


def main():
    with open(sys.argv[1]) as file:
        texts = json.load(file)
    decisions = {}
    for text in texts:
        for name, kept in decide(text).items():
            decisions.setdefault(name, []).append(kept)
    decisions["redacted"] = [PIIFormatter().format(text) for text in texts]
    with open(sys.argv[2], "w") as file:
        json.dump(decisions, file)


if __name__ == "__main__":
    main()
