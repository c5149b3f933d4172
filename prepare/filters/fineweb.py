"""FineWeb's own rules (Penedo et al. 2024, section 3.5), on the document's non-blank lines, as datatrove's
FineWebQualityFilter measures them; its later newline-per-word rule is not FineWeb's and is left out."""

from prepare.filters.c4 import SENTENCE_ENDS
from prepare.filters.document import Document, repeats, share
from prepare.filters.rule import fraction


def _duplicate_line_chars(document: Document) -> float:
    chars = repeats(document.nonblank_lines)[1]
    total = len(document.text) - document.text.count("\n")
    return chars / total if total else 0.0


RULES = (
    fraction("fineweb.line_punct_ratio", lambda d: share(d.nonblank_lines, lambda line: line[-1] in SENTENCE_ENDS),
             "min", 0.12),
    fraction("fineweb.short_line_ratio", lambda d: share(d.nonblank_lines, lambda line: len(line) <= 30), "max", 0.67),
    # 0.01 is datatrove's default, which examples/fineweb.py ran to make FineWeb.
    fraction("fineweb.dup_line_chars", _duplicate_line_chars, "max", 0.01),
)
