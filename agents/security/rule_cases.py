"""A rule's test cases, beside it as `<id>.cases.yaml`: events that must fire it and near-misses that must not.

    window: {since: "2026-11-10T00:00:00", until: "2026-11-11T00:00:00"}
    fires:                      # each scenario must produce a finding of this rule for `expect.principal`
      - name: twenty failures in ten minutes
        expect: {principal: mallory@corp.example}
        audit:
          - {t: "2026-11-10T10:00:00", email: mallory@corp.example, ip: 203.0.113.9, status: 401, repeat: 20}
    near_misses:                # each scenario must produce no finding of this rule
      - name: five failures
        audit: [...]

A scenario may set its own `window`. Its table sections (`audit`, `clusters`, ...) are described in case_workspace.
Each scenario gets its own workspace file and runs through the real detection engine with the rule's defaults.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self

import anyio
import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, field_validator, model_validator

from insight_mcp.agents.core.timestamps import as_utc
from insight_mcp.agents.core.yaml_errors import yaml_problem
from insight_mcp.agents.ingestion.backend import BackendError
from insight_mcp.agents.ingestion.catalog import TABLES, get_table
from insight_mcp.agents.security.case_workspace import (
    SHORT_TABLES,
    allowed_keys,
    build_workspace,
    table_name,
)
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.model import Finding
from insight_mcp.agents.security.rules import CASES_SUFFIXES, builtin_rule_dirs, load_rules, read_yaml
from insight_mcp.agents.settings import DetectionSettings

Kind = Literal["fires", "near_miss"]
Status = Literal["passed", "failed", "no cases file", "bad cases file", "no cases", "no firing case",
                 "no near-miss case", "unknown rule"]
SCENARIO_FIELDS = frozenset({"name", "window", "expect"})


class CaseFileError(ValueError):
    """A case file that cannot be used; the message names the file and the problem."""


class CaseWindow(BaseModel):
    """The window a scenario's rule runs over, in UTC."""

    model_config = ConfigDict(extra="forbid")
    since: dt.datetime
    until: dt.datetime

    @field_validator("since", "until")
    @classmethod
    def _naive_utc(cls, value: dt.datetime) -> dt.datetime:
        return as_utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.since >= self.until:
            raise ValueError("since must be earlier than until")
        return self


class Expectation(BaseModel):
    """What a firing scenario's finding must name."""

    model_config = ConfigDict(extra="forbid")
    principal: str = Field(min_length=1, description="Compared case-insensitively with each finding's principal.")
    severity: Literal["info", "low", "medium", "high", "critical"] | None = Field(
        None, description="When set, the finding for the principal must have this severity.")


class Scenario(BaseModel):
    """One scenario: its rows by table, and for a firing case whom the finding must name."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    window: CaseWindow | None = None
    expect: Expectation | None = None
    tables: dict[str, list[dict[str, Any]]] = Field(default_factory=dict, description="Rows by table section.")

    @model_validator(mode="before")
    @classmethod
    def _gather_tables(cls, data: Any) -> Any:
        """Table sections sit beside name and expect in the file; gather them under `tables`."""
        if not isinstance(data, dict):
            return data
        fields = {k: v for k, v in data.items() if k in SCENARIO_FIELDS}
        return {**fields, "tables": {str(k): v for k, v in data.items() if k not in SCENARIO_FIELDS}}

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        for key, rows in tables.items():
            table = table_name(key).lower()
            if table not in TABLES:
                raise ValueError(f"unknown key {key!r}: a scenario holds name, window, expect and table sections "
                                 f"({', '.join(SHORT_TABLES)} or a full name such as system.access.audit)")
            allowed, time_column = allowed_keys(table), get_table(table).time_column
            for i, row in enumerate(rows):
                unknown = sorted(set(row) - allowed)
                if unknown:
                    takes = ", ".join(sorted(allowed)) if table == "system.access.audit" else f"columns of {table}"
                    raise ValueError(f"{key}[{i}] has unknown keys {unknown}; {key} rows take {takes}")
                if "t" not in row and time_column not in row:
                    raise ValueError(f"{key}[{i}] has no time: give t or {time_column}")
        return tables


class CaseFile(BaseModel):
    """A rule's cases: scenarios that must fire it and near-misses that must not."""

    model_config = ConfigDict(extra="forbid")
    window: CaseWindow | None = None
    fires: list[Scenario] = Field(default_factory=list)
    near_misses: list[Scenario] = Field(default_factory=list)

    @field_validator("fires", "near_misses", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _complete(self) -> Self:
        for kind, scenarios in (("fires", self.fires), ("near_misses", self.near_misses)):
            for i, scenario in enumerate(scenarios):
                where = f"{kind}[{i}] {scenario.name!r}"
                if scenario.window is None and self.window is None:
                    raise ValueError(f"{where} has no window, and the file sets none")
                if kind == "fires" and scenario.expect is None:
                    raise ValueError(f"{where} needs expect: {{principal: ...}}, whom the finding must name")
                if kind == "near_misses" and scenario.expect is not None:
                    raise ValueError(f"{where} has expect, but a near-miss must raise no finding: remove it")
        return self

    def window_of(self, scenario: Scenario) -> CaseWindow:
        """The scenario's own window, else the file's."""
        window = scenario.window or self.window
        if window is None:  # refused at validation
            raise CaseFileError(f"scenario {scenario.name!r} has no window")
        return window


class ScenarioResult(BaseModel):
    """One scenario's verdict."""

    kind: Kind
    name: str
    passed: bool
    reason: str = Field(description="One line: what the rule did, or why the scenario could not run.")


class RuleCasesResult(BaseModel):
    """One rule's cases: each scenario's verdict, and what a person must add or fix."""

    rule_id: str
    rule_file: str | None = Field(description="None when a case file names no rule beside it.")
    cases_file: str | None
    status: Status
    scenarios: list[ScenarioResult] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="What to fix besides failed scenarios.")

    def _count(self, kind: Kind, passed: bool | None = None) -> int:
        return sum(1 for s in self.scenarios if s.kind == kind and (passed is None or s.passed == passed))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fires_passed(self) -> int:
        return self._count("fires", True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fires_total(self) -> int:
        return self._count("fires")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def near_misses_passed(self) -> int:
        return self._count("near_miss", True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def near_misses_total(self) -> int:
        return self._count("near_miss")


class RuleTestReport(BaseModel):
    """Every tested rule's cases; passes only when each rule has both kinds of case and all of them pass."""

    folders: list[str]
    rules: list[RuleCasesResult]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return all(r.status == "passed" for r in self.rules)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def scenarios_run(self) -> int:
        return sum(len(r.scenarios) for r in self.rules)


class _RuleDidNotRun(Exception):
    """The engine ran the scenario but not the rule: skipped, or its query failed."""


def _line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "tables":  # gathered by the model, not written in the file
            out += f".{part}" if out else str(part)
    return out


def load_case_file(path: Path) -> CaseFile:
    """Read and validate one case file; every problem names the file."""
    try:
        data = read_yaml(path)
    except yaml.YAMLError as exc:
        raise CaseFileError(f"{path}: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise CaseFileError(f"{path}: a case file holds a mapping with fires: and near_misses:")
    try:
        return CaseFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _where(tuple(err["loc"]))
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = ("unknown key: a case file holds window, fires and near_misses; a scenario name, window, "
                       "expect and table sections")
        raise CaseFileError(f"{path}: {f'{where}: ' if where else ''}{message}") from None


def cases_file_of(rule_path: Path) -> Path | None:
    """The case file beside a rule file, if there is one."""
    for suffix in CASES_SUFFIXES:
        candidate = rule_path.with_name(rule_path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def case_files(folder: Path) -> list[Path]:
    """Every case file in a folder, by name."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(CASES_SUFFIXES) and p.is_file())


def case_rule_id(path: Path) -> str:
    """The rule id a case file is named after."""
    return path.name.split(".cases.", 1)[0]


def _findings(workspace: Path, rule_id: str, scenario: Scenario, window: CaseWindow,
              detections: DetectionSettings) -> list[Finding]:
    build_workspace(workspace, scenario.tables)
    engine = DetectionEngine(workspace, detections, only=[rule_id])
    try:
        run = anyio.run(lambda: engine.run(window.since, window.until, rule_ids=[rule_id]))
    finally:
        engine.close()
    if rule_id in run.skipped:
        raise _RuleDidNotRun(f"the rule did not run: {run.skipped[rule_id]}")
    failed = next((s.error for s in run.stats if s.rule_id == rule_id and s.error), None)
    if failed:
        raise _RuleDidNotRun(f"the rule's query failed: {failed}")
    return [f for f in run.findings if f.rule_id == rule_id]


def _judge(kind: Kind, scenario: Scenario, findings: list[Finding]) -> ScenarioResult:
    named = sorted({f.principal.lower() for f in findings})
    if kind == "near_miss":
        reason = "no finding" if not findings else f"fired on a near-miss, naming {', '.join(named)}"
        return ScenarioResult(kind=kind, name=scenario.name, passed=not findings, reason=reason)
    expected = scenario.expect.principal.lower() if scenario.expect else ""
    if expected not in named:
        got = f"it named {', '.join(named)}" if named else "no finding"
        return ScenarioResult(kind=kind, name=scenario.name, passed=False,
                              reason=f"did not fire for {expected}: {got}")
    wanted = scenario.expect.severity if scenario.expect else None
    severities = sorted({f.severity for f in findings if f.principal.lower() == expected})
    if wanted is not None and wanted not in severities:
        return ScenarioResult(kind=kind, name=scenario.name, passed=False,
                              reason=f"fired for {expected} at {', '.join(severities)}, not {wanted}")
    hollow = next((f for f in findings if f.event_count <= 0 or not f.evidence.event_ids), None)
    if hollow is not None:
        return ScenarioResult(kind=kind, name=scenario.name, passed=False,
                              reason=f"the finding for {hollow.principal} carries no events or evidence ids")
    return ScenarioResult(kind=kind, name=scenario.name, passed=True,
                          reason=f"fired for {expected} ({len(findings)} finding(s))")


def check_scenario(rule_id: str, kind: Kind, scenario: Scenario, window: CaseWindow,
                   detections: DetectionSettings) -> ScenarioResult:
    """Run one rule over one scenario's own workspace file (a copy of `template`, if given) and judge its findings."""
    with tempfile.TemporaryDirectory(prefix="insight-rule-case-") as folder:
        try:
            findings = _findings(Path(folder) / "workspace.duckdb", rule_id, scenario, window, detections)
        except (_RuleDidNotRun, BackendError, duckdb.Error, ValueError, KeyError, TypeError) as exc:
            return ScenarioResult(kind=kind, name=scenario.name, passed=False, reason=_line(str(exc)))
    return _judge(kind, scenario, findings)


def _status(case: CaseFile, scenarios: list[ScenarioResult]) -> Status:
    if not case.fires and not case.near_misses:
        return "no cases"
    if any(not s.passed for s in scenarios):
        return "failed"
    if not case.fires:
        return "no firing case"
    if not case.near_misses:
        return "no near-miss case"
    return "passed"


def check_rule(rule_id: str, rule_path: Path, detections: DetectionSettings) -> RuleCasesResult:
    """Every case of one rule, with what a person must add when a kind of case is missing."""
    cases_path = cases_file_of(rule_path)
    if cases_path is None:
        wanted = rule_path.with_name(f"{rule_id}.cases.yaml")
        return RuleCasesResult(rule_id=rule_id, rule_file=str(rule_path), cases_file=None, status="no cases file",
                               problems=[f"no cases file: add {wanted} with fires: (events that must raise a "
                                         "finding) and near_misses: (close events that must not)"])
    try:
        case = load_case_file(cases_path)
    except CaseFileError as exc:
        return RuleCasesResult(rule_id=rule_id, rule_file=str(rule_path), cases_file=str(cases_path),
                               status="bad cases file", problems=[str(exc)])
    kinds: list[tuple[Kind, Scenario]] = [("fires", s) for s in case.fires]
    kinds += [("near_miss", s) for s in case.near_misses]
    scenarios = [check_scenario(rule_id, kind, s, case.window_of(s), detections) for kind, s in kinds]
    problems = []
    if not case.fires:
        problems.append(f"no firing case: add a scenario under fires: in {cases_path}, with events that must raise "
                        "a finding and expect: {principal: ...}")
    if not case.near_misses:
        problems.append(f"no near-miss case: add a scenario under near_misses: in {cases_path}, with events close "
                        "to the rule's condition that must raise no finding")
    return RuleCasesResult(rule_id=rule_id, rule_file=str(rule_path), cases_file=str(cases_path),
                           status=_status(case, scenarios), scenarios=scenarios, problems=problems)


def _unclaimed(folder: Path, here: set[str], elsewhere: dict[str, Path]) -> list[RuleCasesResult]:
    """Case files in a folder that no rule beside them claims."""
    out = []
    for path in case_files(folder):
        rule_id = case_rule_id(path)
        if rule_id in here:
            continue
        if rule_id in elsewhere:
            problem = (f"{path}: rule {rule_id!r} is defined in {elsewhere[rule_id]}; its cases must sit beside it, "
                       f"in {elsewhere[rule_id].parent}")
        else:
            problem = (f"{path}: there is no rule {rule_id!r} beside it ({folder / rule_id}.yaml): name a case "
                       "file after its rule's id")
        out.append(RuleCasesResult(rule_id=rule_id, rule_file=None, cases_file=str(path), status="unknown rule",
                                   problems=[problem]))
    return out


def folders_to_test(rules_dir: Path | None, folder: Path | None) -> tuple[list[Path], DetectionSettings]:
    """The folders to test and the settings their rules load with: one folder, else every rule folder.

    Rules run with their own defaults, not the configured parameters or suppressions: the cases test the rule.
    """
    builtin = builtin_rule_dirs()
    if folder is None:
        return builtin + ([rules_dir] if rules_dir else []), DetectionSettings(rules_dir=rules_dir)
    if folder.resolve() in {b.resolve() for b in builtin}:
        return [folder], DetectionSettings()
    return [folder], DetectionSettings(rules_dir=folder)


def check_folders(folders: list[Path], detections: DetectionSettings,
                  progress: Callable[[float, str], None] | None = None,
                  only: list[str] | None = None) -> RuleTestReport:
    """Every rule in the folders against its cases, and the case files no rule claims.

    The engine loads the built-in rules and `detections.rules_dir` beside them, so a user rule may read the shared
    rollups; a folder outside those is refused. Raises RuleFileError for a rule file that cannot be read.
    """
    loaded = builtin_rule_dirs() + ([detections.rules_dir] if detections.rules_dir else [])
    known = {p.resolve() for p in loaded}
    for folder in folders:
        if folder.resolve() not in known:
            raise ValueError(f"{folder} is not a rule folder the engine loads: set it as detections.rules_dir")
    every = [(rule.id, path) for rule, path in load_rules(loaded)]
    tested = [(folder, rule_id, path) for folder in folders for rule_id, path in every
              if path.parent.resolve() == folder.resolve()]
    if only:
        unknown = sorted(set(only) - {rule_id for _, rule_id, _ in tested})
        if unknown:
            raise ValueError(f"no rule {', '.join(unknown)} in {', '.join(str(f) for f in folders)}")
        tested = [item for item in tested if item[1] in only]
    results: list[RuleCasesResult] = []
    for i, (folder, rule_id, path) in enumerate(tested):
        if progress:
            progress(i / len(tested), f"{folder.name}/{rule_id}")
        results.append(check_rule(rule_id, path, detections))
    for folder in [] if only else folders:  # case files no rule claims: only when every rule was tested
        here = {rule_id for f, rule_id, _ in tested if f == folder}
        results += _unclaimed(folder, here, {rule_id: path for rule_id, path in every if rule_id not in here})
    return RuleTestReport(folders=[str(f) for f in folders], rules=results)


def cases_by_rule(folders: list[Path]) -> dict[str, CaseFile]:
    """Every case file in the folders, loaded, by the rule id it is named after."""
    return {case_rule_id(path): load_case_file(path) for folder in folders for path in case_files(folder)}
