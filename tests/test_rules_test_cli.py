"""`insight-mcp rules test [DIR]`: each rule's cases, beside it, run through the real engine from the real command.

It passes only when every rule has a firing and a near-miss case and all of them pass; a bad case file, a case file
with no rule and a missing folder are reported in words a person can act on, never as a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from insight_mcp.agents.security.rules import builtin_rule_dirs, load_rules
from insight_mcp.clients.cli import app

RULE = """
id: {id}
title: Five or more failed sign-ins for one user in a day
description: A user's own rule, shipped with its cases.
category: brute_force
severity: low
mitre: [T1110]
threat_model: account_takeover
tables: [system.access.audit]
parameters:
  min_failures: {{default: 5, description: Failed sign-ins in the window that raise a finding.}}
recommendation: Ask the user whether the attempts were theirs.
query: |
  SELECT user_identity.email AS principal, workspace_id, min(event_time) AS first_seen,
         max(event_time) AS last_seen, count(*) AS event_count, slice(collect_list(event_id), 1, 5) AS evidence_ids
  FROM system.access.audit
  WHERE event_time >= :since AND event_time < :until AND response.status_code IN (401, 403)
  GROUP BY user_identity.email, workspace_id
  HAVING count(*) >= :min_failures
"""
WINDOW = {"since": "2026-11-10T00:00:00", "until": "2026-11-11T00:00:00"}
FIRES = {"name": "five failures", "expect": {"principal": "mallory@corp.example"},
         "audit": [{"t": "2026-11-10T10:00:00", "email": "mallory@corp.example", "status": 401, "repeat": 5}]}
NEAR_MISS = {"name": "four failures",
             "audit": [{"t": "2026-11-10T10:00:00", "email": "bob@corp.example", "status": 401, "repeat": 4}]}


def _cli(tmp_path: Path, args: list[str], **detections: Any) -> Any:
    """Run the real command line with a settings file holding these detection settings."""
    config = tmp_path / "insight.yaml"
    config.write_text(yaml.safe_dump({"detections": {k: str(v) for k, v in detections.items()}}))
    return CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "--config", str(config), *args])


def _rule(folder: Path, rule_id: str, cases: dict[str, Any] | str | None) -> Path:
    """Write a user rule and, unless None, its cases file beside it (a mapping, or raw text)."""
    folder.mkdir(exist_ok=True)
    (folder / f"{rule_id}.yaml").write_text(RULE.format(id=rule_id))
    if cases is not None:
        text = cases if isinstance(cases, str) else yaml.safe_dump(cases, sort_keys=False)
        (folder / f"{rule_id}.cases.yaml").write_text(text)
    return folder


def test_the_built_in_rules_and_the_configured_folder_pass_their_cases(tmp_path: Path) -> None:
    """Every built-in scenario runs in test_rules.py; here the command line finds the built-in folders and the
    configured one, and tests the rules it is asked for (a rule, a network rule, a sequence and the user's)."""
    mine = _rule(tmp_path / "mine", "my_failed_signins", {"window": WINDOW, "fires": [FIRES],
                                                          "near_misses": [NEAR_MISS]})
    chosen = ["brute_force_user", "anonymizer_source_ip", "failed_signins_then_success_then_persistence",
              "my_failed_signins"]
    result = _cli(tmp_path, ["rules", "test", "--json", *(f"--rule={r}" for r in chosen)], rules_dir=mine)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {rule.id for rule, _ in load_rules(builtin_rule_dirs())} >= set(chosen[:-1])
    assert [r["rule_id"] for r in report["rules"]] == chosen
    assert report["passed"] is True and report["folders"][-1] == str(mine)
    assert report["folders"][:-1] == [str(folder) for folder in builtin_rule_dirs()]
    unknown = _cli(tmp_path, ["rules", "test", "--rule", "no_such_rule"], rules_dir=mine)
    assert unknown.exit_code == 2 and "no rule no_such_rule in" in unknown.output
    for r in report["rules"]:
        assert r["status"] == "passed" and r["problems"] == [], r
        assert r["fires_passed"] == r["fires_total"] >= 1 and r["near_misses_passed"] == r["near_misses_total"] >= 1
        assert r["cases_file"] == str(Path(r["rule_file"]).with_name(f"{r['rule_id']}.cases.yaml"))
    assert report["scenarios_run"] == sum(len(r["scenarios"]) for r in report["rules"]) > 10


def test_a_user_folder_with_a_rule_and_its_cases_passes(tmp_path: Path) -> None:
    mine = _rule(tmp_path / "mine", "my_failed_signins", {"window": WINDOW, "fires": [FIRES],
                                                          "near_misses": [NEAR_MISS]})
    result = _cli(tmp_path, ["rules", "test", str(mine)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "my_failed_signins" in line)
    assert row.split("│")[2:5] == [" 1/1   ", " 1/1         ", " passed "], row
    assert "brute_force_user" not in result.output  # only the folder asked for
    assert "all 1 rule(s) passed their 2 case(s)" in result.output

    data = json.loads(_cli(tmp_path, ["rules", "test", str(mine), "--json"]).stdout)
    [rule] = data["rules"]
    assert [(s["kind"], s["name"], s["passed"]) for s in rule["scenarios"]] == [
        ("fires", "five failures", True), ("near_miss", "four failures", True)]
    assert rule["scenarios"][0]["reason"] == "fired for mallory@corp.example (1 finding(s))"


def test_a_rule_without_a_near_miss_fails_and_says_what_to_add(tmp_path: Path) -> None:
    mine = _rule(tmp_path / "mine", "only_fires", {"window": WINDOW, "fires": [FIRES]})
    _rule(mine, "no_cases_at_all", None)
    result = _cli(tmp_path, ["rules", "test", str(mine)])
    assert result.exit_code == 1, result.output
    assert (f"only_fires: no near-miss case: add a scenario under near_misses: in {mine / 'only_fires.cases.yaml'}"
            in result.output)
    assert f"no_cases_at_all: no cases file: add {mine / 'no_cases_at_all.cases.yaml'}" in result.output
    assert "2 of 2 rule(s) failed: no_cases_at_all, only_fires" in result.output
    statuses = {r["rule_id"]: r["status"] for r in json.loads(
        _cli(tmp_path, ["rules", "test", str(mine), "--json"]).stdout)["rules"]}
    assert statuses == {"only_fires": "no near-miss case", "no_cases_at_all": "no cases file"}


def test_a_failing_case_fails_the_run_with_its_reason(tmp_path: Path) -> None:
    too_few = {**FIRES, "name": "three failures", "audit": [{**FIRES["audit"][0], "repeat": 3}]}
    too_many = {**NEAR_MISS, "name": "six failures", "audit": [{**NEAR_MISS["audit"][0], "repeat": 6}]}
    mine = _rule(tmp_path / "mine", "my_failed_signins", {"window": WINDOW, "fires": [FIRES, too_few],
                                                          "near_misses": [NEAR_MISS, too_many]})
    result = _cli(tmp_path, ["rules", "test", str(mine)])
    assert result.exit_code == 1, result.output
    assert ("my_failed_signins: fires 'three failures': did not fire for mallory@corp.example: no finding"
            in result.output)
    assert ("my_failed_signins: near-miss 'six failures': fired on a near-miss, naming bob@corp.example"
            in result.output)
    row = next(line for line in result.output.splitlines() if line.startswith("│ my_failed_signins"))
    assert row.split("│")[2:5] == [" 1/2   ", " 1/2         ", " failed "], row


def test_a_case_can_require_the_findings_severity(tmp_path: Path) -> None:
    wrong = {**FIRES, "name": "reported high", "expect": {"principal": "mallory@corp.example", "severity": "high"}}
    right = {**FIRES, "name": "reported low", "expect": {"principal": "mallory@corp.example", "severity": "low"}}
    mine = _rule(tmp_path / "mine", "my_failed_signins", {"window": WINDOW, "fires": [right, wrong],
                                                          "near_misses": [NEAR_MISS]})
    result = _cli(tmp_path, ["rules", "test", str(mine)])
    assert result.exit_code == 1, result.output
    assert "fires 'reported high': fired for mallory@corp.example at low, not high" in result.output
    assert "reported low" not in result.output.split("failed:")[-1]


@pytest.mark.parametrize(("text", "message"), [
    ("window: {since: 2026-11-10\nfires: [\n", "not valid YAML at line 2, column 6: did not find expected"),
    ("- just\n- a list\n", "a case file holds a mapping with fires: and near_misses:"),
    (yaml.safe_dump({"window": WINDOW, "fires": [FIRES], "near_misses": [
        {"name": "typo", "audit": [{"t": "2026-11-10T10:00:00", "stauts": 401}]}]}),
     "near_misses[0]: audit[0] has unknown keys ['stauts']; audit rows take action, email"),
    (yaml.safe_dump({"window": WINDOW, "fires": [{"name": "who?", "audit": FIRES["audit"]}], "near_misses": []}),
     "fires[0] 'who?' needs expect: {principal: ...}, whom the finding must name"),
    (yaml.safe_dump({"window": WINDOW, "tests": [FIRES]}),
     "tests: unknown key: a case file holds window, fires and near_misses"),
    (yaml.safe_dump({"window": WINDOW, "fires": [{**FIRES, "clusterz": []}]}),
     "fires[0]: unknown key 'clusterz': a scenario holds name, window, expect and table sections"),
])
def test_a_malformed_cases_file_is_named_with_its_problem(tmp_path: Path, text: str, message: str) -> None:
    mine = _rule(tmp_path / "mine", "my_failed_signins", text)
    result = _cli(tmp_path, ["rules", "test", str(mine)])
    assert result.exit_code == 1, result.output
    assert f"my_failed_signins: {mine / 'my_failed_signins.cases.yaml'}: {message}" in result.output, result.output
    assert "bad cases file" in result.output and "Traceback" not in result.output


def test_a_cases_file_without_its_rule_is_reported(tmp_path: Path) -> None:
    cases = {"window": WINDOW, "fires": [FIRES], "near_misses": [NEAR_MISS]}
    mine = _rule(tmp_path / "mine", "my_failed_signins", cases)
    (mine / "my_typo.cases.yaml").write_text(yaml.safe_dump(cases))
    (mine / "brute_force_user.cases.yaml").write_text(yaml.safe_dump(cases))
    result = _cli(tmp_path, ["rules", "test", str(mine), "--json"])
    assert result.exit_code == 1, result.output
    rules = {r["rule_id"]: r for r in json.loads(result.stdout)["rules"]}
    assert rules["my_failed_signins"]["status"] == "passed"
    assert rules["my_typo"]["status"] == "unknown rule" and rules["my_typo"]["rule_file"] is None
    assert f"there is no rule 'my_typo' beside it ({mine / 'my_typo'}.yaml)" in rules["my_typo"]["problems"][0]
    assert "its cases must sit beside it" in rules["brute_force_user"]["problems"][0]


def test_a_missing_folder_or_a_broken_rule_file_is_a_clear_error(tmp_path: Path) -> None:
    result = _cli(tmp_path, ["rules", "test", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "is not a folder" in result.output, result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli(tmp_path, ["rules", "test", str(empty)])
    assert result.exit_code == 2 and f"no rule files in {empty}" in result.output, result.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad_rule.yaml").write_text("id: [unclosed\n")
    result = _cli(tmp_path, ["rules", "test", str(broken)])
    assert result.exit_code == 2 and "bad_rule.yaml: not valid YAML" in result.output, result.output
    assert "Traceback" not in result.output
