"""FineWeb's own rules (Penedo et al. 2024, section 3.5), on the document's non-blank lines, as datatrove's
FineWebQualityFilter measures them; its later newline-per-word rule is not FineWeb's and is left out."""

from prepare.filters.c4 import SENTENCE_ENDS
from prepare.filters.document import Document
from prepare.filters.rule import fraction


def _line_fraction(document: Document, predicate) -> float:
    lines = document.nonblank_lines
    return sum(1 for line in lines if predicate(line)) / len(lines) if lines else 0.0


def _duplicate_line_chars(document: Document) -> float:
    seen: set[str] = set()
    chars = 0
    for line in document.nonblank_lines:
        if line in seen:
            chars += len(line)
        else:
            seen.add(line)
    total = len(document.text) - document.text.count("\n")
    return chars / total if total else 0.0


RULES = (
    fraction("fineweb.line_punct_ratio", lambda d: _line_fraction(d, lambda line: line[-1] in SENTENCE_ENDS),
             "min", 0.12),
    fraction("fineweb.short_line_ratio", lambda d: _line_fraction(d, lambda line: len(line) <= 30), "max", 0.67),
    # 0.01 is datatrove's default, which examples/fineweb.py ran to make FineWeb.
    fraction("fineweb.dup_line_chars", _duplicate_line_chars, "max", 0.01),
)
