"""Clean corpora: a build drops a document that repeats one it keeps (--dedup) or shares text with a downstream
task (--decontaminate), before writing it (docs/dedup.md; prepare/screening.py applies both).

    methods.py        the --dedup methods by name: a new method is a module and a line there
    hashing.py        what a text hashes to: exact key, words, n-grams
    near.py           --dedup near: MinHash LSH over word 5-grams
    index.py          the index of kept documents: its parts, and a new document's twin among them
    contamination.py  --decontaminate: the 13-grams of the tasks' items
    removed.py        what a build removed, and the inputs read again when a twin goes
"""

from prepare.dedup.contamination import Contamination
from prepare.dedup.hashing import exact_key, lowered_bytes
from prepare.dedup.index import Index
from prepare.dedup.methods import METHODS
from prepare.dedup.near import (BANDS, DUPLICATE_JACCARD, PERMUTATIONS, ROWS, band_keys, jaccard, removal_probability,
                                shingle_hashes, signature)
from prepare.dedup.removed import reconsidered, removed_totals
