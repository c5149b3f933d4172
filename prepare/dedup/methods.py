"""The --dedup methods, by the name the option takes (prepare/cli.py offers these choices). Every method first
compares a document's exact key, which the index is keyed by (prepare/dedup/index.py): `exact` is that alone.
A method that compares more is one module giving what MinHash gives in near.py (a per-document feature, the
arrays an index part holds for lookups, the lookups in a part and in memory) and one line here."""

from prepare.dedup import near

METHODS = {
    "exact": None,  # the exact key alone
    "near": near.MINHASH,
}
COMPARISONS = [m for m in METHODS.values() if m is not None]  # each one's arrays are in every index part
KINDS = (*METHODS, "contaminated", "filtered")  # what a document is removed as, in the order reports list them
