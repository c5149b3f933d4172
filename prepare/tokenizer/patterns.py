"""The split patterns a text is cut by before byte-pair merging: GPT-2's and GPT-4's, the two `prepare
tokenizer` offers, and the same regex in the dialect of Hugging Face's `tokenizers`."""

import re

from tiktoken_ext.openai_public import r50k_pat_str

# GPT-4's (cl100k_base) split pattern, as tiktoken writes it: digits in groups of up to 3, runs of spaces
# and newlines kept apart from words.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
                r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
GPT2_PATTERN = r50k_pat_str
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}  # the split patterns `prepare tokenizer` offers


def oniguruma_pattern(pattern):
    """tiktoken's split pattern (fancy-regex) as the same regex for `tokenizers` (Oniguruma): there a counted
    repeat followed by + is not possessive but repeats again (\\p{N}{1,3}+ would take any run of digits),
    and $ ends a line, not the text (\\z does)."""
    return re.sub(r"(\{\d+(?:,\d*)?\})\+", r"\1", pattern).replace("$", "\\z")
