"""Checks on every LM-written text: an output that fails one is replaced by the templated text.

The model sees attacker-controlled audit data, so its output is treated as untrusted too. A text is rejected when
it is empty or over-long, keeps a template or adapter marker, carries HTML, a markdown link or a URL the data did
not hold, cites a finding the report does not have, or states a number that contradicts the report: a count of
findings (in total or at a severity), a finding's severity or event count, or a NetworkOverview number. Each check
returns the problem in plain words ("states 3 critical findings, report has 1"), or None when the text passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from insight_mcp.agents.reporting.model import NetworkOverview, Report
from insight_mcp.agents.security.model import Finding

MAX_SUMMARY_CHARS = 4000
MAX_EXPLANATION_CHARS = 1500
MAX_NETWORK_CHARS = 2500

_WORD_NUMBERS = {
    "no": 0, "zero": 0, "none": 0, "one": 1, "single": 1, "a single": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
_NUM = r"(\d{1,3}(?:,\d{3})+|\d+|" + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True)) + r")"
_SEV = r"(critical|high|medium|low|informational|info)"
_SEV_NAMES = {"informational": "info"}

_MARKERS = re.compile(r"\{\{|\}\}|\[\[\s*##|##\s*\]\]|\{[a-z_]+\}|untrusted_audit_data|</?untrusted", re.IGNORECASE)
_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?/?\s*>|&lt;\s*/?\s*[a-zA-Z]|\bon[a-z]+\s*=\s*[\"']")
_MD_LINK = re.compile(r"!?\[[^\]\n]{1,200}\]\([^)\s]{1,500}\)")
_URL = re.compile(r"\b(?:https?|ftp|file)://[^\s<>\"')\]]+|\b(?:javascript|vbscript|data):[^\s<>\"')\]]+"
                  r"|\bwww\.[^\s<>\"')\]]+", re.IGNORECASE)
_FINDING_ID = re.compile(r"\bf-[0-9a-f]{20}\b")

_SEVERITY_CLAIMS = (
    # "2 critical findings", "1 critical, 2 high and 3 medium", "no high-severity alerts"
    re.compile(rf"\b{_NUM}\s+(?:of\s+them\s+)?{_SEV}(?:[-\s]severity)?"
               r"(?=\s*(?:findings?|alerts?|detections?|issues?|ones?)\b|\s*(?:[,;.):]|$|and\b|or\b|plus\b))",
               re.IGNORECASE),
    # "3 findings are critical", "2 of them were rated high"
    re.compile(rf"\b{_NUM}\s+(?:of\s+(?:them|these|those|the\s+findings)|findings?|alerts?)\s+(?:are|were|is|was)\s+"
               rf"(?:rated\s+|of\s+)?{_SEV}\b", re.IGNORECASE),
)
_FINDING_CLAIM = re.compile(
    rf"\b{_NUM}\s+(?:(?:total|security|distinct|unique|separate|new|open|more|further|other)\s+)?"
    r"(findings?|alerts?|detections?)\b", re.IGNORECASE)
_TOTAL_BEFORE = re.compile(
    r"(?:there\s+(?:are|were|is|was|have\s+been)|total\s+of|in\s+total|overall|altogether|in\s+all|found|raised|"
    r"produced|reported|detected|identified|flagged|yielded)\s*$", re.IGNORECASE)
_TOTAL_AFTER = re.compile(
    r"\s*(?:in\s+total|overall|altogether|in\s+all|(?:were|was|have\s+been)\s+(?:raised|found|detected|reported|"
    r"produced|flagged)|between|during|in\s+the\s+(?:window|period|report)|this\s+(?:window|period))",
    re.IGNORECASE)
_NOTHING = re.compile(
    r"\b(?:nothing\s+to\s+report|no\s+(?:security\s+)?(?:issues|threats|problems|incidents|concerns)\b|"
    r"all\s+clear|no\s+suspicious\s+activity|no\s+action\s+(?:is\s+)?(?:needed|required))", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?:[.!?;:]\s|\n)")

_STATED_SEVERITY = (
    re.compile(rf"\b{_SEV}[-\s]severity\b", re.IGNORECASE),
    re.compile(rf"\bseverity(?:\s+level)?\s*(?:is|of|:|=|was)\s*(?:only\s+|just\s+)?[\"']?{_SEV}\b", re.IGNORECASE),
    re.compile(rf"\b(?:this|the|a|an)\s+{_SEV}\s+(?:finding|alert|detection)\b", re.IGNORECASE),
    re.compile(rf"\brated\s+(?:as\s+)?{_SEV}\b", re.IGNORECASE),
)
_DOWNPLAY = re.compile(
    r"\b(?:benign|harmless|safe\s+to\s+ignore|(?:can|may|should)\s+(?:safely\s+)?be\s+(?:ignored|dismissed)|"
    r"no\s+action\s+(?:is\s+)?(?:needed|required)|not\s+(?:a\s+)?(?:concern|serious|important|threat|risk)\b|"
    r"nothing\s+to\s+worry)", re.IGNORECASE)
_EVENT_CLAIM = re.compile(rf"\b{_NUM}\s+(?:[a-z-]+\s+)?events?\b", re.IGNORECASE)

_NOT_A_COUNT = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?\b|\b\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+)?Z?\b|\b\d{1,2}:\d{2}(?::\d{2})?\b"
    r"|\b[\w-]*[A-Za-z_][\w-]*\d[\w-]*\b|\b\d+[A-Za-z_][\w-]*\b|\b[\w-]+\.[A-Za-z]{2,}\b")
_BARE_NUMBER = re.compile(r"(?<![\w.,:/-])(\d{1,3}(?:,\d{3})+|\d+)(?![\w:/-]|[.,]\d)")
# The words allowed between a number and its noun are letters only: "12 IPs made 30 requests" must not read as 12
# requests.
_NETWORK_NOUNS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("external_ips",), re.compile(r"(?:[a-z-]+\s+){0,2}?external\s+(?:ip|ips|ip\s+addresses|addresses|sources)\b")),
    (("anonymizer_ips",), re.compile(r"(?:[a-z-]+\s+){0,3}?(?:anonymi[sz]ers?|anonymi[sz]ing|tor\s+exit)")),
    (("risky_destinations",), re.compile(r"(?:[a-z-]+\s+){0,2}?(?:risky\s+)?destinations?\b")),
    (("egress_denials",), re.compile(r"(?:[a-z-]+\s+){0,2}?(?:egress\b|(?:denied\s+|blocked\s+)?connections?\b)")),
    (("ip_access_denials",), re.compile(r"(?:[a-z-]+\s+){0,3}?(?:denials?\b|(?:denied\s+|blocked\s+)?requests?\b)")),
    (("denied_ips",), re.compile(r"(?:[a-z-]+\s+)?(?:denied|blocked)\s+(?:ip\s+addresses|addresses|ips?|sources)\b")),
    # "2 addresses" or "12 IPs" alone could be any of the address counts
    (("external_ips", "denied_ips", "anonymizer_ips"),
     re.compile(r"(?:[a-z-]+\s+)?(?:ip\s+addresses|addresses|ips?|sources)\b")),
)


def _number(token: str) -> int:
    token = token.lower().strip()
    if token in _WORD_NUMBERS:
        return _WORD_NUMBERS[token]
    return int(token.replace(",", ""))


def _severity(token: str) -> str:
    token = token.lower()
    return _SEV_NAMES.get(token, token)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def check_text(text: str, *, max_chars: int, data: str) -> str | None:
    """The checks every part shares: not empty, bounded, no markers, no markup, no link the data did not hold."""
    if not text or not text.strip():
        return "empty text"
    if len(text) > max_chars:
        return f"too long ({len(text)} characters, at most {max_chars})"
    if _MARKERS.search(text):
        return "contains an unresolved template or data marker"
    if _HTML.search(text):
        return "contains HTML"
    if _MD_LINK.search(text):
        return "contains a markdown link"
    for url in _URL.findall(text):
        if url.rstrip(".,;:!?") not in data:
            return "contains a link that is not in the data"
    return None


def _sentence_prefix(text: str, start: int) -> str:
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, start)]
    return text[(ends[-1] if ends else 0):start]


def _finding_claims(text: str) -> Iterator[tuple[int, bool, str]]:
    """(number, stated as the total?, the phrase) for every "N findings" in the text."""
    for match in _FINDING_CLAIM.finditer(text):
        n = _number(match.group(1))
        prefix = _sentence_prefix(text, match.start()).strip()
        total = (not prefix or bool(_TOTAL_BEFORE.search(prefix)) or bool(_TOTAL_AFTER.match(text, match.end()))
                 or n == 0)
        yield n, total, match.group(0)


def check_summary(text: str, cited: Iterable[str], report: Report, data: str) -> str | None:
    """An executive summary: shared checks, real finding ids only, and every stated count equal to the report's."""
    problem = check_text(text, max_chars=MAX_SUMMARY_CHARS, data=data)
    if problem:
        return problem
    ids = {f.id for f in report.findings}
    for finding_id in [*cited, *_FINDING_ID.findall(text)]:
        if finding_id not in ids:
            return f"cites {str(finding_id)[:40]!r}, which is not a finding in the report"
    counts = report.counts
    for pattern in _SEVERITY_CLAIMS:
        for match in pattern.finditer(text):
            n, severity = _number(match.group(1)), _severity(match.group(2))
            actual = counts.by_severity.get(severity, 0)
            if n != actual:
                return f"states {_plural(n, severity + ' finding')}, report has {actual}"
    allowed = {counts.total, *counts.by_severity.values(), *counts.by_category.values(),
               *(p.findings for p in report.principals), *(w.findings for w in report.workspaces)}
    for n, total, phrase in _finding_claims(text):
        if total and n != counts.total:
            return f"states {_plural(n, 'finding')} in total, report has {counts.total}"
        if not total and n not in allowed:
            return f"states {phrase!r}, which matches no count in the report"
    if counts.total and (nothing := _NOTHING.search(text)):
        return f"says {nothing.group(0)!r}, report has {_plural(counts.total, 'finding')}"
    return None


def check_explanation(text: str, finding: Finding, data: str) -> str | None:
    """One finding's explanation: shared checks, its own severity and event count, no other finding, no downplay."""
    problem = check_text(text, max_chars=MAX_EXPLANATION_CHARS, data=data)
    if problem:
        return problem
    for pattern in _STATED_SEVERITY:
        for match in pattern.finditer(text):
            if _severity(match.group(1)) != finding.severity:
                return f"calls a {finding.severity} finding {_severity(match.group(1))}"
    if finding.severity in ("high", "critical") and (downplay := _DOWNPLAY.search(text)):
        return f"downplays a {finding.severity} finding ({downplay.group(0)!r})"
    for other in _FINDING_ID.findall(text):
        if other != finding.id:
            return "mentions another finding"
    allowed_events = {finding.event_count, len(finding.evidence.event_ids)}
    for match in _EVENT_CLAIM.finditer(text):
        n = _number(match.group(1))
        if n not in allowed_events:
            return f"states {_plural(n, 'event')}, finding has {finding.event_count}"
    return None


def _network_numbers(net: NetworkOverview) -> dict[str, int]:
    return {
        "external_ips": net.external_ips,
        "anonymizer_ips": len(net.anonymizer_ips),
        "risky_destinations": len(net.risky_destinations),
        "egress_denials": net.egress_denials,
        "ip_access_denials": net.ip_access_denials,
        "denied_ips": len(net.denied_ips),
    }


def check_network(text: str, report: Report, data: str) -> str | None:
    """The network narrative: shared checks, and every number it states is the NetworkOverview's number."""
    problem = check_text(text, max_chars=MAX_NETWORK_CHARS, data=data)
    if problem:
        return problem
    if report.network is None:
        return None
    numbers = _network_numbers(report.network)
    for match in re.finditer(rf"\b{_NUM}\b", text, re.IGNORECASE):
        if match.group(1).isdigit() and _NOT_A_COUNT.match(text, _token_start(text, match.start())):
            continue
        following = text[match.end():match.end() + 60].lower()
        following = re.split(r"[.;:!?()]", following, maxsplit=1)[0].strip()
        for names, noun in _NETWORK_NOUNS:
            if noun.match(following):
                n = _number(match.group(1))
                if all(n != numbers[name] for name in names):
                    name = names[0]
                    return f"states {n} for {name.replace('_', ' ')}, the network overview has {numbers[name]}"
                break
    masked = _NOT_A_COUNT.sub(" ", text)
    for match in _BARE_NUMBER.finditer(masked):
        n = _number(match.group(1))
        if n not in numbers.values():
            return f"states the number {n}, which is not in the network overview"
    return None


def _token_start(text: str, index: int) -> int:
    while index > 0 and not text[index - 1].isspace() and text[index - 1] not in "(\"'":
        index -= 1
    return index
