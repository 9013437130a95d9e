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


def test_every_detection_names_its_attack_techniques_and_tactics(tmp_path: Path) -> None:
    from insight_mcp.agents.security.mitre import TECHNIQUES, tactic_names
    from insight_mcp.agents.security.rules import RuleFileError

    for rule, path in load_rules(builtin_rule_dirs()):
        assert rule.mitre, f"{path.name} names no ATT&CK technique"
        unknown = [t for t in rule.mitre if t not in TECHNIQUES]
        assert not unknown, f"{path.name}: add {unknown} to agents/security/mitre.py"
        assert rule.tactics, f"{path.name} has no tactic"
    spray = next(rule for rule, _ in load_rules(builtin_rule_dirs()) if "T1110.003" in rule.mitre)
    assert "Credential Access" in tactic_names(spray.tactics)

    # A user's rule may cite a technique we do not list, naming its tactics itself, by id or by name.
    source = (builtin_rule_dirs()[0] / "brute_force_user.yaml").read_text()
    own = tmp_path / "own"
    own.mkdir()
    (own / "brute_force_mine.yaml").write_text(source.replace("id: brute_force_user", "id: brute_force_mine").replace(
        "mitre: [T1110, T1110.001]", "mitre: [T1110, T1999]\ntactics: [impact, TA0007]"))
    mine = next(rule for rule, _ in load_rules([own]))
    assert mine.tactics == ["TA0006", "TA0007", "TA0040"]  # its own two, T1110's, in kill-chain order
    (own / "brute_force_mine.yaml").write_text(source.replace("id: brute_force_user", "id: brute_force_mine").replace(
        "mitre: [T1110, T1110.001]", "mitre: [T1110]\ntactics: [Lunch Break]"))
    with pytest.raises(RuleFileError, match="not an ATT&CK tactic"):
        load_rules([own])
