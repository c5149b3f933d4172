"""The canary set: texts that a fast encoder must give tiktoken's ids for, each time it is loaded, before a build
uses it (prepare/tokenizer/encoder.py). They cover what differs between implementations of a split pattern: the
patterns' alternatives (contractions in either case, runs of digits, letters of every kind, marks, punctuation
with line ends after it), every whitespace character alone and in runs, at the end of a text and before a letter,
Unicode's newer letters and digits (a table of another version splits them otherwise), special-token strings as
text, a run of whitespace longer than LONG_RUN, random mixes of all of these (fast encoders take long and short
runs apart), and a sample of the vocabulary's own tokens."""

import random

from prepare.tokenizer.encodings import ENDOFTEXT
from prepare.tokenizer.whitespace import LONG_RUN

WHITESPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028"
              "\u2029\u202f\u205f\u3000")
CHARACTERS = (
    "aZ09é ßÆœΩжЯ中文日本語한국어ไทยעבריתالعربية"  # letters of several scripts
    "\u0301\u0308\u093f\u0e31"  # marks (not letters for either pattern)
    "١٢٣४५৬²³½ⅫⅦ〇"  # digits and numbers of other scripts
    "!?.,;:'\"`~@#$%^&*()[]{}<>/\\|-_=+…—«»€£¥©®™"  # punctuation and symbols
    "\U0001f600\U0001f44d\U0001f3fd\u200d\U0001f9d1\ufe0f"  # emoji, modifiers, joiners, selectors
    "\x00\x01\x1b\x7f\ufeff\ue000\uffff\u0378"  # controls, BOM, private use, a noncharacter, an unassigned one
    "\U00011f00\U0001e030\U0001fae8\U00010d40\U000105c0\U0001e4f0"  # letters and digits new in Unicode 15 and 16
)
CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'d", "'D"]


def canary_texts(encoding):
    """(label, text) pairs, 100,000 characters in all; the same within a process, but for the vocabulary's sample."""
    texts = [
        ("contractions", " ".join(f"word{c} {c}x{c} it{c}{c}" for c in CONTRACTIONS)),
        ("digits", " ".join(str(10**k + k) for k in range(20)) + " 1,234.5678 x1y22z333 ١٢٣٤٥ 12345678"),
        ("special tokens", f"{ENDOFTEXT}<|fim_prefix|><|fim_middle|><|fim_suffix|><|endofprompt|> {ENDOFTEXT}x"),
        ("line ends", "a.\r\n\r\nb!\n\n\n  c?\r\r\n d;\n \n\te,\r \r\nf\n"),
        ("long run", "x" + " " * (LONG_RUN + 5) + "y" + "\n" * 1000 + "!\r\n" + " \t" * 500),
    ]
    for space in WHITESPACE:
        texts.append((f"whitespace U+{ord(space):04X}",
                      f"a{space}b{space * 2}c{space * 3}!{space * 5}1{space * 40}\n{space}x{space}'s{space * 2}"))
    rng = random.Random(0)
    pool = CHARACTERS + WHITESPACE + "aaaaeeeetttt    \n"
    for n in (1, 2, 3, 7, 31, 64, 257, 4099):
        texts.append((f"mix of {n}", "".join(rng.choice(pool) for _ in range(n))))
    texts.append(("runs", "".join(rng.choice(pool) * rng.randint(1, 70) for _ in range(400))))
    tokens = list(encoding._mergeable_ranks)
    texts.append(("vocabulary", "".join(t.decode("utf-8", "replace") for t in tokens[:: max(1, len(tokens) // 2000)])))
    return texts
