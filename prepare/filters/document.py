"""A document as the rules see it: its text split once into lines, words and paragraphs, each split made on first use
and shared by every rule that needs it, so a build pays for a split once per document, not once per rule."""

import re
import string
import unicodedata
from functools import cached_property

from prepare.filters.words import split_words

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAKS = re.compile(r"\n+")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def is_symbol(char: str) -> bool:
    """Punctuation or a control character: what a word made only of is not a word to Gopher's count."""
    return char in _ASCII_PUNCTUATION or unicodedata.category(char)[0] == "P" or unicodedata.category(char) == "Cc"


def repeats(items: list[str]) -> tuple[int, int]:
    """(items, characters) repeating an earlier item."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def share(items: list[str], predicate) -> float:
    """The fraction of `items` for which `predicate` holds (0 of none)."""
    return sum(1 for item in items if predicate(item)) / len(items) if items else 0.0


class Document:
    def __init__(self, text: str):
        self.text = text
        self.computed = {}  # what a rule set works out once for several of its rules, under a key of its own

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def words(self) -> list[str]:
        """Words as spaCy's English tokenizer makes them, as datatrove counts (prepare/filters/words.py)."""
        return split_words(self.text)

    @cached_property
    def content_words(self) -> list[str]:
        """The words with at least one character that isn't punctuation."""
        return [word for word in self.words if word.isalnum() or not all(map(is_symbol, word))]

    @cached_property
    def paragraphs(self) -> list[str]:
        return _PARAGRAPH_BREAK.split(self.text.strip())

    @cached_property
    def runs_of_lines(self) -> list[str]:
        """Lines split at runs of newlines (Gopher's repetition rules: blank lines are no lines)."""
        return _LINE_BREAKS.split(self.text)

    @cached_property
    def repeated_paragraphs(self) -> tuple[int, int]:
        """(paragraphs, characters) repeating an earlier paragraph: two rules read them."""
        return repeats(self.paragraphs)

    @cached_property
    def repeated_lines(self) -> tuple[int, int]:
        """(runs_of_lines, characters) repeating an earlier one: two rules read them."""
        return repeats(self.runs_of_lines)

    @cached_property
    def nonblank_lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]
