"""Gopher's quality and repetition rules (Rae et al. 2021, appendix A, table A1), thresholds as published; the
details the paper leaves open (what a word, line and paragraph is) as datatrove implements them (docs/filters.md)."""

from collections import Counter

from prepare.filters.document import Document, share
from prepare.filters.rule import Rule, fraction

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])


def _per_word(count: int, document: Document) -> float:
    return count / len(document.words) if document.words else 0.0


def _has_letter(word: str) -> bool:
    return word.isalpha() or any(map(str.isalpha, word))


def _mean_word_length(document: Document) -> float:
    words = document.content_words
    return sum(map(len, words)) / len(words) if words else 0.0


def _per_char(chars: int, document: Document) -> float:
    return chars / len(document.text) if document.text else 0.0


def _top_ngram_chars(n: int):
    """The characters of the most frequent word n-gram (its words joined by spaces), all its occurrences, as a
    fraction of the text; of n-grams as frequent, the first."""
    def measure(document: Document) -> float:
        words = document.words
        if len(words) < n:
            return 0.0
        ngram, count = Counter(zip(*(words[k:] for k in range(n)))).most_common(1)[0]
        return _per_char((sum(map(len, ngram)) + n - 1) * count, document)
    return measure


def _duplicate_ngram_chars(n: int):
    """The characters of the words of n-grams that repeat an earlier one, as a fraction of the text. As datatrove
    counts them: a scan that jumps past a repeat, so its words count once and the n-grams it jumps over are never
    seen. Only the positions whose n-gram occurred before are visited here, in order, with the same outcome."""
    def measure(document: Document) -> float:
        # An n-gram that repeats holds a shorter one that does: past the first n without repeats, none.
        if document.computed.get("gopher.unique_ngrams_from", n + 1) <= n:
            return 0.0
        words = document.words
        ngrams = list(zip(*(words[k:] for k in range(n))))
        first = dict(zip(reversed(ngrams), range(len(ngrams) - 1, -1, -1)))
        if len(first) == len(ngrams):  # nothing repeats: most prose
            document.computed["gopher.unique_ngrams_from"] = n
            return 0.0
        jumped: set[int] = set()
        repeated = resume = 0
        for i in [i for i, f in enumerate(map(first.__getitem__, ngrams)) if f != i]:
            if i < resume:
                continue
            ngram = ngrams[i]
            if first[ngram] in jumped and not any(ngrams[p] == ngram for p in range(i) if p not in jumped):
                continue  # every earlier occurrence was jumped over: new to the scan
            repeated += sum(map(len, ngram))
            jumped.update(range(i + 1, i + n))
            resume = i + n
        return _per_char(repeated, document)
    return measure


QUALITY = (
    Rule("gopher.min_words", lambda d: len(d.content_words), "min", 50),
    Rule("gopher.max_words", lambda d: len(d.content_words), "max", 100_000),
    Rule("gopher.min_mean_word_length", _mean_word_length, "min", 3),
    Rule("gopher.max_mean_word_length", _mean_word_length, "max", 10),
    Rule("gopher.hash_ratio", lambda d: _per_word(d.text.count("#"), d), "max", 0.1),
    Rule("gopher.ellipsis_ratio", lambda d: _per_word(d.text.count("...") + d.text.count("…"), d), "max", 0.1),
    fraction("gopher.bullet_lines", lambda d: share(d.lines, lambda s: s.lstrip().startswith(("•", "-"))),
             "max", 0.9),
    fraction("gopher.ellipsis_lines", lambda d: share(d.lines, lambda s: s.rstrip().endswith(("...", "…"))),
             "max", 0.3),
    fraction("gopher.alpha_words", lambda d: _per_word(sum(1 for w in d.words if _has_letter(w)), d), "min", 0.8),
    Rule("gopher.stop_words", lambda d: len(STOP_WORDS.intersection(d.words)), "min", 2),
)

REPETITION = (
    fraction("gopher.dup_paragraphs", lambda d: d.repeated_paragraphs[0] / len(d.paragraphs), "max", 0.3),
    fraction("gopher.dup_paragraph_chars", lambda d: _per_char(d.repeated_paragraphs[1], d), "max", 0.2),
    fraction("gopher.dup_lines", lambda d: d.repeated_lines[0] / len(d.runs_of_lines), "max", 0.3),
    fraction("gopher.dup_line_chars", lambda d: _per_char(d.repeated_lines[1], d), "max", 0.2),
    *(fraction(f"gopher.top_{n}gram_chars", _top_ngram_chars(n), "max", limit)
      for n, limit in ((2, 0.2), (3, 0.18), (4, 0.16))),
    *(fraction(f"gopher.dup_{n}gram_chars", _duplicate_ngram_chars(n), "max", limit)
      for n, limit in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))),
)

# Repetition first, as FineWeb orders them: a page of one repeated line is recorded as repetition, not as short.
RULES = REPETITION + QUALITY
