"""PII redaction as FineWeb does it (datatrove's PIIFormatter): e-mail addresses and public IP addresses replaced by
placeholders before tokenizing. The placeholders cycle within a document, not across a process as datatrove's do, so
a document's redacted text doesn't depend on which documents came before it (a rerun or a cluster task gives the
same text)."""

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable


def _is_public_ip(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


@dataclass(frozen=True)
class Redactor:
    pattern: re.Pattern
    placeholders: tuple[str, ...]
    accepts: Callable[[str], bool] = lambda match: True

    def redact(self, text: str) -> tuple[str, int]:
        count = 0

        def replace(match: re.Match) -> str:
            nonlocal count
            if not self.accepts(match.group(0)):
                return match.group(0)
            count += 1
            return self.placeholders[(count - 1) % len(self.placeholders)]

        return self.pattern.sub(replace, text), count


REDACTORS: dict[str, Redactor] = {
    "email": Redactor(
        re.compile(
            r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
            r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
            r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"),
        # example.com and example.org are reserved for examples: the placeholders are nobody's addresses.
        ("email@example.com", "firstname.lastname@example.org")),
    "ip": Redactor(
        re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"),
        # datatrove's: addresses that answered no ping when its list was made.
        ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168"),
        _is_public_ip),
}


def redact(text: str, kinds: list[str]) -> tuple[str, dict[str, int]]:
    """The text with the addresses of each kind replaced (e-mail first, as FineWeb), and how many of each."""
    unknown = [kind for kind in kinds if kind not in REDACTORS]
    if unknown:
        raise ValueError(f"unknown redaction {unknown[0]!r} (known: {', '.join(REDACTORS)})")
    counts = {}
    for kind in REDACTORS:
        if kind in kinds:
            text, counts[kind] = REDACTORS[kind].redact(text)
    return text, counts
