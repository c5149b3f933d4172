"""Document filters in a build (issue #46): the rule sets, language ID and redaction of prepare/filters/ applied
by the workers, and decided by the main process as the first of the screens (prepare/screening.py).

A worker measures each document as read: its language first (when --languages is on), then the chosen rules in
order, stopping at the first that drops it, as datatrove's pipeline does; then it redacts the text, which is what
is tokenized, split and deduplicated. It sends back Verdicts; the main process's screen drops the documents a
verdict condemns and notes, per input, each document's language and score and the addresses redacted. A
decision depends on the document alone, so any worker, task or rerun makes the same one."""

import base64
import dataclasses
import threading

import numpy as np

from prepare.plan import BuildError

LANGUAGE = "language"  # the rule name of a document dropped by language ID
SCORE_SCALE = 1000  # a recorded language score is in thousandths (uint16): enough to see what another threshold keeps


def filters(opts):
    """Whether the build drops documents by rule or language."""
    return bool(opts.get("filter") or opts.get("languages"))


def active(opts):
    """Whether the workers judge documents: filters, or redaction."""
    return filters(opts) or bool(opts.get("redact"))


def rule_names(opts):
    """Every name a verdict may give, in the order the worker applies them: language ID, then the rules."""
    return [LANGUAGE] + [rule.name for rule, _ in rules(opts)]


def rules(opts):
    """[(Rule, threshold)] of the build's --filter sets, --filter-threshold applied."""
    from prepare.filters import rules_of

    return rules_of(opts.get("filter") or [], opts.get("filter_threshold") or {})


_loaded, _lock = {}, threading.Lock()


def language_id(model):
    """The fastText classifier of --language-model ({"path", "sha256"}; None: lid.176.ftz), loaded once per process
    (threads share it; forked workers inherit the one `check` loaded)."""
    from prepare.filters.language import LanguageID

    path = model and model["path"]
    with _lock:
        if path not in _loaded:
            _loaded[path] = LanguageID(path)
        return _loaded[path]


def check(opts):
    """Refuse, in one line, filter options the build cannot apply: an unknown rule set or rule, a threshold out of
    range, a language model that is missing or not fastText's, a language it never predicts."""
    try:
        rules(opts)
    except ValueError as e:
        raise BuildError(f"--filter: {e}") from None
    if opts.get("languages"):
        try:
            model = language_id(opts.get("language_model"))
        except ValueError as e:
            raise BuildError(f"--language-model: {e}") from None
        unknown = [code for code in opts["languages"] if code not in model.labels]
        if unknown:
            raise BuildError(f"--languages: {', '.join(unknown)}: not a language the model predicts")


@dataclasses.dataclass
class Verdicts:
    """What a worker found of each of a batch's documents: the index (in rule_names) of what drops it, -1 if
    nothing does, and the value it measured; its language and score (empty, 0 without language ID); the
    addresses redacted in it, per --redact kind."""

    rule: np.ndarray
    value: np.ndarray
    language: np.ndarray
    score: np.ndarray
    redacted: np.ndarray

    def select(self, docs):
        return Verdicts(self.rule[docs], self.value[docs], self.language[docs], self.score[docs], self.redacted[docs])


def judge(texts, opts):
    """(the texts as they will be written, their Verdicts): measured as read, then redacted (in a worker)."""
    from prepare.filters import first_failed
    from prepare.filters.redact import redact

    n, kinds = len(texts), opts.get("redact") or []
    verdicts = Verdicts(np.full(n, -1, np.int16), np.zeros(n), np.full(n, "", object), np.zeros(n, np.float32),
                        np.zeros((n, len(kinds)), np.int64))
    chosen, names = rules(opts), rule_names(opts)
    model = language_id(opts.get("language_model")) if opts.get("languages") else None
    written = []
    for d, text in enumerate(texts):
        failed = None
        if model is not None:
            code, score = model.predict(text)
            verdicts.language[d], verdicts.score[d] = code, score
            if code not in opts["languages"] or score < opts["min_language_score"]:
                failed = LANGUAGE, score
        if failed is None and chosen:
            failed = first_failed(text, chosen)
        if failed is not None:
            verdicts.rule[d], verdicts.value[d] = names.index(failed[0]), failed[1]
        if kinds:
            text, counts = redact(text, kinds)
            verdicts.redacted[d] = [counts.get(k, 0) for k in kinds]
        written.append(text)
    return written, verdicts


def drop_filtered(names, thresholds, features, ids, positions, candidates):
    """The screen of the filters: each of the `candidates` a verdict condemns, with the rule, the value it measured,
    the threshold and (with language ID) the document's language."""
    verdicts = features.verdicts
    for d in np.flatnonzero(candidates & (verdicts.rule >= 0)):
        rule = names[verdicts.rule[d]]
        why = {"rule": rule, "value": round(float(verdicts.value[d]), 6), "threshold": thresholds[rule]}
        if verdicts.language[d]:
            why["language"] = str(verdicts.language[d])
        yield d, "filtered", why


def thresholds_of(opts):
    """{rule name: the threshold the build applies}, language ID's being --min-language-score."""
    return {LANGUAGE: opts.get("min_language_score"), **{rule.name: threshold for rule, threshold in rules(opts)}}


class Notes:
    """Per input of a build's work: each document's language and score in position order (with language ID), and
    the addresses redacted in its documents (with --redact), every document read: removed ones were redacted too,
    and a count that does not depend on what dedup later drops is the same for a cluster job as for one build."""

    def __init__(self, opts, inputs):
        self.kinds = opts.get("redact") or []
        self.languages = [[] for _ in range(inputs)] if opts.get("languages") else None
        self.scores = [[] for _ in range(inputs)] if opts.get("languages") else None
        self.redacted = np.zeros((inputs, len(self.kinds)), np.int64)

    def note(self, owners, verdicts):
        """A batch's documents, in position order within each input."""
        if self.languages is not None:
            for i, code, score in zip(owners, verdicts.language, verdicts.score):
                self.languages[i].append(str(code))
                self.scores[i].append(score)
        if self.kinds:
            np.add.at(self.redacted, owners, verdicts.redacted)

    def record(self, i):
        """What an input's screening record keeps of them."""
        out = {}
        if self.languages is not None:
            out["languages"] = pack_languages(self.languages[i], self.scores[i])
        if self.kinds:
            out["redacted"] = dict(zip(self.kinds, map(int, self.redacted[i])))
        return out


def pack_languages(codes, scores):
    """Each document's language and score, compactly (a JSON list costs ~8 bytes a document, and source segments
    are rewritten as they merge): the codes met, each document's index among them (uint8 base64: lid.176 knows 176;
    uint16 past 256 codes) and its score in thousandths (uint16 base64): 4 bytes of text a document."""
    table = list(dict.fromkeys(codes))
    index = {code: k for k, code in enumerate(table)}
    of = np.array([index[c] for c in codes], np.uint8 if len(table) <= 256 else "<u2")
    thousandths = np.round(np.asarray(scores, np.float64) * SCORE_SCALE).clip(0, SCORE_SCALE).astype("<u2")
    return {"codes": table, "of": base64.b64encode(of.tobytes()).decode(),
            "scores": base64.b64encode(thousandths.tobytes()).decode()}


def unpack_languages(packed):
    """[(code, score)] of each document of an input, by position (the inverse of pack_languages)."""
    scores = np.frombuffer(base64.b64decode(packed["scores"]), "<u2") / SCORE_SCALE
    of = np.frombuffer(base64.b64decode(packed["of"]), np.uint8 if len(packed["codes"]) <= 256 else "<u2")
    return [(packed["codes"][k], float(s)) for k, s in zip(of, scores)]
