"""gigatoken for an encoding: an exact byte-pair encoder, 15-30x tiktoken's speed, that gives tiktoken's ids where
the encoding's split pattern is one it implements (GPT-2's, GPT-4's, o200k's) and its ranks are 0 to n-1, special
tokens taken as plain text (as a build takes them). It is loaded from the encoding's own ranks, and loaded anew
when its cache has grown past CACHE_BYTES (prepare/tokenizer/encoder.py chooses it and calls it)."""

import base64
import functools
import os
import resource
import sys
import tempfile

from prepare.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN

# o200k_base's split pattern as tiktoken writes it (tiktoken_ext.openai_public builds it inside o200k_base).
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
PRETOKENIZERS = {GPT2_PATTERN: "gpt2", GPT4_PATTERN: "gpt4", O200K_PATTERN: "o200k"}  # gigatoken's name of each
# gigatoken 0.10 keeps every distinct piece it has merged, without bound (a text of random words: 580 MiB in
# 84 MB): a process whose memory has grown by CACHE_BYTES since it first looked loads it anew, its cache empty.
CACHE_BYTES = 256 << 20  # its natural size is less on code and prose (10 MiB on stdlib x4)
CHECK_CHARS = 1 << 20  # characters encoded between two looks at the memory


def loader(encoding):
    """(a function that loads gigatoken's encoder of `encoding`, None), or (None, why there is none)."""
    pretokenizer = PRETOKENIZERS.get(encoding._pat_str)
    if pretokenizer is None:
        return None, "no faster encoder is known to split as its pattern does"
    ranks = sorted(encoding._mergeable_ranks.items(), key=lambda item: item[1])
    if [rank for _, rank in ranks] != list(range(len(ranks))):
        return None, "its ranks are not 0 to n-1, which gigatoken needs"
    try:
        import gigatoken
    except ImportError:
        return None, "gigatoken, many times faster, is not installed (pip install gigatoken)"
    rank_file = b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in ranks)
    return functools.partial(from_ranks, gigatoken, rank_file, pretokenizer), None


def from_ranks(gigatoken, rank_file, pretokenizer):
    """gigatoken's encoder of the ranks in `rank_file` (tiktoken's format), which it reads from a file only."""
    with tempfile.NamedTemporaryFile(suffix=".tiktoken") as f:
        f.write(rank_file)
        f.flush()
        return gigatoken.Tokenizer.from_tiktoken(f.name, pretokenizer=pretokenizer, special_tokens={})


def one_document(text):
    """`text` as a batch of one document for gigatoken: its UTF-8 bytes (a lone surrogate: a UnicodeEncodeError)."""
    import gigatoken

    return gigatoken.BytesSource(text.encode("utf-8"))


def resident_memory():
    """(bytes, True): this process's resident memory now; or (bytes, False): its peak, where there is no /proc
    (macOS; getrusage gives kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE, True
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (peak if sys.platform == "darwin" else peak * 1024), False


PAGE = os.sysconf("SC_PAGE_SIZE")
