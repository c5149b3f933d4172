"""`prepare build`'s filter options (docs/filters.md): parsed, checked against the registries of prepare/filters/,
and settled as the dataset records them."""

import functools
import math
import os

import click

from prepare import clitools
from prepare.filtering import language_id


def comma_list(choices, what):
    """A click callback: 'b,a' -> the names in the order of `choices` (a callable giving the registry's, imported
    when used), or sorted where any name goes (None): the recorded option does not depend on the order given, and
    rule sets apply in FineWeb's order. None if not given."""
    def parse(ctx, param, value):
        if value is None:
            return None
        names, known = {v.strip() for v in value.split(",") if v.strip()}, choices()
        unknown = sorted(names - set(known)) if known is not None else []
        if unknown or not names:
            among = f"; choose among {', '.join(known)}" if known is not None else ""
            raise click.BadParameter(f"{', '.join(unknown) or repr(value)}: not {what}{among} (comma-separated)")
        return [n for n in known if n in names] if known is not None else sorted(names)
    return parse


def rule_sets():
    from prepare.filters import RULE_SETS

    return list(RULE_SETS)


def redactors():
    from prepare.filters.redact import REDACTORS

    return list(REDACTORS)


def thresholds(ctx, param, values):
    """--filter-threshold RULE=VALUE (repeatable) -> {rule: value}, or None."""
    out = {}
    for value in values:
        rule, _, number = value.partition("=")
        try:
            out[rule.strip()] = float(number)
            if not math.isfinite(out[rule.strip()]):
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{value!r}: give RULE=VALUE, e.g. gopher.min_words=30") from None
    return dict(sorted(out.items())) or None


def filter_options(opts):
    """The filter options as recorded: a language score and model only with --languages (the score defaults to
    FineWeb's 0.65), another model by its absolute path and its sha256 (the same file elsewhere is the same model;
    another file at the same path is not)."""
    if opts["filter_threshold"] and not opts["filter"]:
        clitools.fail("--filter-threshold changes a rule of --filter: give --filter too")
    if not opts["languages"]:
        for given in ("min_language_score", "language_model"):
            if opts[given] is not None:
                clitools.fail(f"--{given.replace('_', '-')} applies to --languages: give --languages too")
        return
    opts["min_language_score"] = 0.65 if opts["min_language_score"] is None else opts["min_language_score"]
    if opts["language_model"] is not None:
        path = os.path.abspath(opts["language_model"])
        try:
            digest = language_id({"path": path}).digest
        except ValueError as e:
            clitools.fail(f"--language-model: {e}")
        opts["language_model"] = {"path": path, "sha256": digest}


OPTIONS = [
    click.option("--filter", callback=comma_list(rule_sets, "a rule set"),
                 help="Drop documents by the rules of these sets (gopher, c4, fineweb, code; comma-separated), at "
                      "the papers' thresholds; recorded, a change needs --rebuild. See docs/filters.md."),
    click.option("--filter-threshold", multiple=True, callback=thresholds, metavar="RULE=VALUE",
                 help="Another threshold for a rule of --filter (repeatable)."),
    click.option("--languages", callback=comma_list(lambda: None, "a language code"),
                 help="Keep only documents that fastText's language ID (lid.176) gives one of these languages "
                      "(e.g. en,de), at --min-language-score or more."),
    click.option("--min-language-score", type=click.FloatRange(0, 1),
                 help="The least language score kept with --languages. [default: 0.65]"),
    click.option("--language-model", type=click.Path(dir_okay=False),
                 help="Another fastText classifier for --languages (e.g. lid.176.bin) [default: lid.176.ftz]."),
    click.option("--redact", callback=comma_list(redactors, "an address kind"),
                 help="Replace these addresses (email, ip; comma-separated) by placeholders before tokenizing."),
]


def filter_flags(command):
    """The decorator adding the filter options to a command."""
    return functools.reduce(lambda c, option: option(c), reversed(OPTIONS), command)
