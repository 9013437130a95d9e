"""Cleaning attacker-controlled text: what goes, what stays."""

from __future__ import annotations

import pytest

from insight_mcp.agents.untrusted import clean_text, clean_value


@pytest.mark.parametrize(("raw", "clean"), [
    ("SELECT event_id FROM system.access.audit", "SELECT event_id FROM system.access.audit"),  # printable: as is
    ("line one\nline two\ttabbed\r\n", "line one\nline two\ttabbed\r\n"),  # newlines and tabs stay
    ("bell\x07 escape\x1b[31m del\x7f nul\x00", "bell escape[31m del nul"),
    ("admin\u202egnp.exe", "admingnp.exe"),  # a right-to-left override
    ("zero\u200bwidth \ufeffbom", "zerowidth bom"),
    ("tag\U000e0041\U000e0042 chars", "tag chars"),
    ("c1 control\x85 and é kept", "c1 control and é kept"),
    ("", ""),
])
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_clean_value_walks_keys_and_nested_values() -> None:
    assert clean_value({"k\x00ey": ["a\u202eb", {"n": 1, "s": "x\x1b"}], "none": None}) == {
        "key": ["ab", {"n": 1, "s": "x"}], "none": None}
