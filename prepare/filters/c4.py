"""C4's document rules (Raffel et al. 2020, section 2.2), in the order and with the line rules of C4's own code
(tensorflow_datasets' c4_utils, as datatrove follows it): a page goes when a line it would keep holds "lorem ipsum" or
a curly bracket, or when the lines it keeps hold fewer than 5 sentences. The lines C4 removes are only left out of
the count here, not out of the text (docs/filters.md). FineWeb keeps lines that don't end in terminal punctuation:
the set c4_fineweb."""

import re

from prepare.filters.document import Document, is_symbol
from prepare.filters.rule import Rule

_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCTUATION = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# The characters that end a sentence to spaCy's sentencizer, which datatrove counts C4's sentences with.
SENTENCE_ENDS = frozenset("!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？｡。")


def kept_lines(text: str, terminal_punctuation: bool) -> list[tuple[str, str]]:
    """(line, lowered) for each line C4 keeps before its keyword rules: no word over 1000 characters, citations
    removed, at least 3 words, and (in C4, not in FineWeb) a terminal punctuation mark at its end."""
    kept = []
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if len(words) < 3 or any(len(word) > 1000 for word in words):
            continue
        line = _CITATION.sub("", line)
        if terminal_punctuation and (not line.endswith(_END_PUNCTUATION) or line.endswith("...")):
            continue
        kept.append((line, line.lower()))
    return kept


def sentence_count(line: str) -> int:
    """Sentences as spaCy's sentencizer finds them: a new one at each word after a sentence-ending mark."""
    count, after_end = 1, False
    for word in Document(line).words:
        if word in SENTENCE_ENDS:
            after_end = True
        elif after_end and not all(map(is_symbol, word)):
            count, after_end = count + 1, False
    return count


def _rules(prefix: str, terminal_punctuation: bool) -> tuple[Rule, ...]:
    def lines(document: Document) -> list[tuple[str, str]]:
        key = f"c4.lines_{terminal_punctuation}"
        if key not in document.computed:
            document.computed[key] = kept_lines(document.text, terminal_punctuation)
        return document.computed[key]

    def lorem_ipsum(document: Document) -> float:
        return sum("lorem ipsum" in lowered for _, lowered in lines(document))

    def curly_bracket(document: Document) -> float:
        # C4 drops a line that mentions javascript before it looks for a bracket in it.
        return sum("{" in line and "javascript" not in lowered for line, lowered in lines(document))

    def sentences(document: Document) -> float:
        return sum(sentence_count(line) for line, lowered in lines(document)
                   if "javascript" not in lowered and not any(p in lowered for p in _POLICY))

    return (
        Rule(f"{prefix}.lorem_ipsum", lorem_ipsum, "max", 0),
        Rule(f"{prefix}.curly_bracket", curly_bracket, "max", 0),
        Rule(f"{prefix}.min_sentences", sentences, "min", 5),
    )


RULES = _rules("c4", terminal_punctuation=True)
FINEWEB_RULES = _rules("c4_fineweb", terminal_punctuation=False)
