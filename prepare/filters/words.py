"""Words as spaCy's English tokenizer splits them (spaCy 3.8's blank "en"), which datatrove's filters count with,
without spaCy: each run of non-space characters loses prefixes and suffixes one at a time (punctuation, quotes,
brackets, currency; a period only after a lowercase letter, digit or two capitals), stopping at a special case
(spaCy's own table, english_special_cases.json: "don't", "e.g.", "):"), then splits at infixes (hyphens between
letters, "lower.Upper", "a,b", "a/b"). Character classes are spaCy's for Latin script; for others, approximations
(docs/filters.md#words). A run of letters and digits, most of any prose, is a word at once."""

import json
import os
import re
from functools import lru_cache
from itertools import chain

with open(os.path.join(os.path.dirname(__file__), "english_special_cases.json"), encoding="utf-8") as _file:
    _TABLE = json.load(_file)
SPECIAL_CASES: dict[str, list[str]] = {**{key: [key] for key in _TABLE["whole"]}, **_TABLE["split"]}

_PUNCT = r"…|……|,|:|;|!|\?|¿|؟|¡|\(|\)|\[|\]|\{|\}|<|>|_|#|\*|&|。|？|！|，|、|；|：|～|·|।|،|۔|؛|٪"
_PUNCT_CHARS = r"…,:;!?¿؟¡()\[\]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_QUOTE = "|".join(re.escape(q) for q in _QUOTES)
_ELLIPSES = r"\.\.+|…"
_CURRENCY = r"\$|£|€|¥|฿|US\$|C\$|A\$|₽|﷼|₴|₠|₡|₢|₣|₤|₥|₦|₧|₨|₩|₪|₫|₭|₮|₯|₰|₱|₲|₳|₵|₶|₷|₸|₹|₺|₻|₼|₾|₿"
_ICONS = (r"[\u00A6\u00A9\u00AE\u00B0\u2100-\u214F\u2190-\u21FF\u2300-\u23FF\u2500-\u27BF\u2B00-\u2BFF"
          r"\U0001F000-\U0001FAFF]")
_UNITS = (r"km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|m/s|km/h|kmh|"
          r"mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%")
_LOWER = "a-zß-öø-ÿ"
_UPPER = "A-ZÀ-ÖØ-Þ"
_ALPHA = r"[^\W\d_]"

_PREFIX = re.compile("^(?:" + "|".join([
    "§", "%", "=", "—", "–", r"\+(?![0-9])", _PUNCT, _ELLIPSES, _QUOTE, _CURRENCY, _ICONS]) + ")")
_SUFFIX = re.compile("(?:" + "|".join(f"(?:{piece})$" for piece in [
    _PUNCT, _ELLIPSES, _QUOTE, _ICONS, "'s|'S|’s|’S|—|–", r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.",
    rf"(?<=[0-9])(?:{_CURRENCY})", rf"(?<=[0-9])(?:{_UNITS})",
    rf"(?<=[0-9{_LOWER}%²\-+{re.escape(_QUOTES)}{_PUNCT_CHARS}])\.",
    rf"(?<=[{_UPPER}][{_UPPER}])\."]) + ")")
_INFIX = re.compile("|".join([
    _ELLIPSES, _ICONS, r"(?<=[0-9])[+\-*^](?=[0-9-])",
    rf"(?<=[{_LOWER}{re.escape(_QUOTES)}])\.(?=[{_UPPER}{re.escape(_QUOTES)}])",
    rf"(?<={_ALPHA}),(?={_ALPHA})", rf"(?<=[0-9]|{_ALPHA})(?:---|--|——|-|–|—|~)(?={_ALPHA})",
    rf"(?<=[0-9]|{_ALPHA})[:<>=/](?={_ALPHA})"]))
# spaCy's URL_MATCH, its top-level domain class (lowercase letters of any script) approximated.
_URL = re.compile(
    r"^(?:(?:[\w\+\-\.]{2,})://)?(?:\S+(?::\S*)?@)?(?:(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)"
    r"(?:\.\d{1,3}){2})(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])"
    r"(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))|(?:(?:[A-Za-z0-9\u00a1-\uffff]"
    r"[A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+(?:[^\W\dA-Z_À-ÖØ-Þ]{2,63}))(?::\d{2,5})?"
    r"(?:[/?#]\S*)?$")
# The longest special case made of several pieces ("):", "''"): spaCy joins such pieces back after splitting.
_LONGEST_JOINED = 6
_RUNS = re.compile(r"\S+")


def _suffix_length(text: str) -> int:
    """The length of the leftmost suffix that ends the text: searched in its last characters (a suffix is short),
    from the start only when a run of periods may begin earlier."""
    start = max(0, len(text) - 8)
    match = _SUFFIX.search(text, start)
    if match and match.start() == start and start and text[start] == ".":
        match = _SUFFIX.search(text)
    return match.end() - match.start() if match else 0


def _split_affixes(chunk: str) -> tuple[list[str], str, list[str]]:
    prefixes, suffixes, last = [], [], -1
    while chunk and len(chunk) != last and chunk not in SPECIAL_CASES:
        last = len(chunk)
        match = _PREFIX.search(chunk)
        pre = match.end() if match else 0
        if pre and chunk[pre:] in SPECIAL_CASES:
            return prefixes + [chunk[:pre]], chunk[pre:], suffixes
        suf = _suffix_length(chunk[pre:])
        if suf and chunk[:-suf] in SPECIAL_CASES:
            return prefixes, chunk[:-suf], suffixes + [chunk[-suf:]]
        if pre and suf and pre + suf <= len(chunk):
            prefixes.append(chunk[:pre])
            suffixes.append(chunk[-suf:])
            chunk = chunk[pre:-suf]
        elif pre:
            prefixes.append(chunk[:pre])
            chunk = chunk[pre:]
        elif suf:
            suffixes.append(chunk[-suf:])
            chunk = chunk[:-suf]
    return prefixes, chunk, suffixes


def _infixed(core: str) -> list[str]:
    if core in SPECIAL_CASES:
        return SPECIAL_CASES[core]
    if _URL.match(core):
        return [core]
    pieces, start = [], 0
    for match in _INFIX.finditer(core):
        if match.start() == 0:
            continue
        if match.start() != start:
            pieces.append(core[start:match.start()])
        if match.end() != match.start():
            pieces.append(match.group())
        start = match.end()
    if start < len(core):
        pieces.append(core[start:])
    return pieces


def _joined(pieces: list[str]) -> list[str]:
    """Consecutive pieces that spell a special case, replaced by its words (leftmost, longest first)."""
    words, i = [], 0
    while i < len(pieces):
        for j in range(min(len(pieces), i + _LONGEST_JOINED), i + 1, -1):
            special = SPECIAL_CASES.get("".join(pieces[i:j]))
            if special is not None:
                words += special
                i = j
                break
        else:
            words.append(pieces[i])
            i += 1
    return words


@lru_cache(maxsize=1 << 16)
def _split_run(run: str) -> tuple[str, ...]:
    """The words of one run of non-space characters; cached, as spaCy caches them: prose repeats its runs, and a
    repeated run costs no Python at all (the cache and the chaining below are C)."""
    if run in SPECIAL_CASES:
        return tuple(SPECIAL_CASES[run])
    if run.isalpha() or run.isdigit():  # no affix to take off: most words of prose
        return (run,)
    prefixes, core, suffixes = _split_affixes(run)
    pieces = prefixes + (_infixed(core) if core else []) + suffixes[::-1]
    return tuple(_joined(pieces) if len(pieces) > 1 else pieces)


def split_words(text: str) -> list[str]:
    return list(chain.from_iterable(map(_split_run, _RUNS.findall(text))))
