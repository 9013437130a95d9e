"""Every rule: events that should fire it do, near-misses do not. Each scenario gets its own real workspace file.

The cases live beside each rule as `<id>.cases.yaml` and run through the package's rule_cases module, the same code
`insight-mcp rules test` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from insight_mcp.agents.security.rule_cases import (
    CaseFile,
    Kind,
    Scenario,
    case_files,
    case_rule_id,
    cases_by_rule,
    check_scenario,
)
from insight_mcp.agents.security.rules import builtin_rule_dirs, is_cases_file, load_rules, rule_set_version
from insight_mcp.agents.settings import DetectionSettings

CASES = cases_by_rule(builtin_rule_dirs())
RULES = {rule.id: path for rule, path in load_rules(builtin_rule_dirs())}


def _params(kind: Kind) -> list[Any]:
    out = []
    for rule_id, case in CASES.items():
        for scenario in case.fires if kind == "fires" else case.near_misses:
            out.append(pytest.param(rule_id, case, scenario, id=f"{rule_id}-{scenario.name}"))
    return out


def test_every_rule_has_cases_beside_it() -> None:
    missing = sorted(set(RULES) - set(CASES))
    assert not missing, f"rules without <id>.cases.yaml beside them: {missing}"
    for folder in builtin_rule_dirs():
        for path in case_files(folder):
            rule_id = case_rule_id(path)
            assert rule_id in RULES and RULES[rule_id].parent == folder, f"{path} sits beside no rule {rule_id}"
    for rule_id, case in CASES.items():
        assert case.fires and case.near_misses, f"{rule_id} needs both fires and near_misses"


def test_case_files_are_not_rules_and_do_not_change_the_rule_set_version(tmp_path: Path) -> None:
    assert not any(is_cases_file(path) for path in RULES.values())
    folder = tmp_path / "mine"
    folder.mkdir()
    settings = DetectionSettings(rules_dir=folder)
    before = rule_set_version(settings)
    (folder / "anything.cases.yaml").write_text("fires: []\n")
    assert rule_set_version(settings) == before
    assert load_rules([folder]) == []


@pytest.mark.parametrize(("rule_id", "case", "scenario"), _params("fires"))
def test_rule_fires(rule_id: str, case: CaseFile, scenario: Scenario) -> None:
    result = check_scenario(rule_id, "fires", scenario, case.window_of(scenario), DetectionSettings())
    assert result.passed, f"{rule_id}: {result.reason}"


@pytest.mark.parametrize(("rule_id", "case", "scenario"), _params("near_misses"))
def test_rule_ignores_near_miss(rule_id: str, case: CaseFile, scenario: Scenario) -> None:
    result = check_scenario(rule_id, "near_miss", scenario, case.window_of(scenario), DetectionSettings())
    assert result.passed, f"{rule_id}: {result.reason}"
