"""A quality rule: one number measured on a document and the bound it must keep, so that a removed document can be
recorded with the rule, its value and the threshold it crossed, and a threshold changed without new code."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from prepare.filters.document import Document

BOUNDS = ("min", "max")


@dataclass(frozen=True)
class Rule:
    name: str
    measure: Callable[["Document"], float]
    bound: str
    threshold: float
    # The thresholds that make sense (a fraction can't exceed 1): anything else is a user's mistake.
    limits: tuple[float, float] = (0.0, float("inf"))

    def __post_init__(self):
        if self.bound not in BOUNDS:
            raise ValueError(f"rule {self.name}: bound must be one of {BOUNDS}, not {self.bound!r}")

    def keeps(self, value: float, threshold: float | None = None) -> bool:
        threshold = self.threshold if threshold is None else threshold
        return value >= threshold if self.bound == "min" else value <= threshold


def fraction(name: str, measure: Callable[["Document"], float], bound: str, threshold: float) -> Rule:
    """A rule whose value is a fraction, its thresholds in [0, 1]."""
    return Rule(name, measure, bound, threshold, (0.0, 1.0))
