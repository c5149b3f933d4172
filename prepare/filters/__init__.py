"""Document filters: published quality rules (docs/filters.md), fastText language ID, and PII redaction.

    rule.py      a Rule: a measure, a bound and the paper's threshold
    document.py  a text split once (lines, words, paragraphs...) for every rule to share
    gopher.py    Gopher's quality and repetition rules (Rae et al. 2021, appendix A)
    c4.py        C4's document rules (Raffel et al. 2020), and FineWeb's variant without terminal punctuation
    fineweb.py   FineWeb's own rules (Penedo et al. 2024)
    code.py      The Stack / StarCoder's rules for source files
    language.py  fastText language identification (lid.176)
    redact.py    e-mail and IP addresses replaced as FineWeb does

A new rule set is one file and one line in RULE_SETS.
"""

from prepare.filters import c4, code, fineweb, gopher
from prepare.filters.document import Document
from prepare.filters.rule import Rule

RULE_SETS: dict[str, tuple[Rule, ...]] = {
    "gopher": gopher.RULES,
    "c4": c4.RULES,
    "c4_fineweb": c4.FINEWEB_RULES,
    "fineweb": fineweb.RULES,
    "code": code.RULES,
}


def rules_of(sets: list[str], thresholds: dict[str, float]) -> list[tuple[Rule, float]]:
    """The rules of the named sets, in order, each with its threshold: the paper's unless `thresholds` names it."""
    unknown = [name for name in sets if name not in RULE_SETS]
    if unknown:
        raise ValueError(f"unknown rule set {unknown[0]!r} (known: {', '.join(RULE_SETS)})")
    chosen = [rule for name in dict.fromkeys(sets) for rule in RULE_SETS[name]]
    by_name = {rule.name: rule for rule in chosen}
    for name, value in thresholds.items():
        if name not in by_name:
            known = {rule.name for rules in RULE_SETS.values() for rule in rules}
            where = "not in the chosen sets" if name in known else "unknown"
            raise ValueError(f"rule {name!r} {where} (chosen sets: {', '.join(sets) or 'none'})")
        low, high = by_name[name].limits
        if not low <= value <= high:
            raise ValueError(f"threshold of {name} must be within [{low:g}, {high:g}], not {value:g}")
    return [(rule, float(thresholds.get(rule.name, rule.threshold))) for rule in chosen]


def first_failed(text: str, rules: list[tuple[Rule, float]]) -> tuple[str, float, float] | None:
    """(rule name, measured value, threshold) of the first rule that drops `text`, or None if every rule keeps it."""
    document = Document(text)
    for rule, threshold in rules:
        value = float(rule.measure(document))
        if not rule.keeps(value, threshold):
            return rule.name, value, threshold
    return None
