"""Batch evaluation of one registered prompt: every case of a dataset through the LM, scored, on parallel workers.

A prompt is named as in the registry, with a version or an alias: `insight.security_summary@production`,
`insight.security_summary@3`, or the name with `version="3"`. A dataset is an MLflow evaluation dataset (by name,
or by id `d-…`) or a JSONL file of `{"inputs": {...}, "expectations": {...}}` lines. A case's inputs hold the data
the prompt's DSPy module reads (`facts`, `finding` or `network`, or a single field of any name, such as a curated
trace's `data`): a JSON object is fenced as untrusted data exactly as the narrative does, a string already fenced
is passed as it is.

Each case is one LM call with the prompt's text as the module's instructions, then the scorers. The scorers are
MLflow `@scorer` objects (`prompt_scorers`), so an optimizer can use the same ones:

- `validity`: the output passes the checks the narrative applies before publishing anything (counts that
  contradict the data, unknown finding ids, markup, links): 1 or 0.
- `completeness`: the share of the facts the prompt asks for that the output states (the total and each severity
  count, the riskiest principal and a cited finding for a summary; the severity and event count for an
  explanation; every network number for a network narrative).
- `expected_facts`, `expected_response`: against the case's expectations, when it has them.
- `judges` (optional, one more LM call per case): clarity and usefulness, 1-5 mapped onto 0-1.

The workers are a bounded thread pool: each holds one LM call at a time. Cases are fed as workers free up, so a
cancelled job stops taking new ones at once. A run where the first cases all fail stops early and says why.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client, unreachable
from insight_mcp.agents.core.prompts import (
    FINDING_EXPLANATION,
    NETWORK_NARRATIVE,
    PRODUCTION_ALIAS,
    SECURITY_SUMMARY,
    load_prompt,
)
from insight_mcp.agents.evaluation.curation import fluent_mlflow
from insight_mcp.agents.evaluation.runs import EvaluationError
from insight_mcp.agents.evaluation.service import EXPERIMENT
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.version import VERSION

DEFAULT_WORKERS = 8
MAX_WORKERS = 32
MAX_CASES = 20_000
ABORT_AFTER = 20  # this many failed cases and not one answer: the LM or the dataset is broken, stop
MAX_FAILURE_EXAMPLES = 5
CODE_SCORERS = ("validity", "completeness", "expected_facts", "expected_response")
ScorerName = Literal["validity", "completeness", "expected_facts", "expected_response", "judges"]
SCORER_NAMES: tuple[str, ...] = ScorerName.__args__  # type: ignore[attr-defined]
_FENCED = re.compile(r"<(untrusted_audit_data-[0-9a-f]+)>\n(.*)\n</\1>", re.S)
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_WORD = re.compile(r"[a-z0-9]+")
_FINDING_ID = re.compile(r"\bf-[0-9a-f]{20}\b")


@dataclass(frozen=True)
class PromptKind:
    """What a prompt's DSPy module reads and writes: ours one input field, a user's prompt one per variable."""

    prompt: str
    input_field: str
    output_field: str
    user_fields: tuple[str, ...] = ()  # a user's prompt: its template's variables (user_prompts.input_fields)

    @property
    def generic(self) -> bool:
        """A user's own prompt, with no hand-written signature or output checks of ours."""
        return bool(self.user_fields)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.user_fields or (self.input_field,)


KINDS: dict[str, PromptKind] = {
    SECURITY_SUMMARY: PromptKind(SECURITY_SUMMARY, "facts", "summary"),
    FINDING_EXPLANATION: PromptKind(FINDING_EXPLANATION, "finding", "explanation"),
    NETWORK_NARRATIVE: PromptKind(NETWORK_NARRATIVE, "network", "narrative"),
}


def kind_of(prompt: str, template: str) -> PromptKind:
    """Our narrative prompt's kind, or a user's prompt's, made from its template's variables."""
    if prompt in KINDS:
        return KINDS[prompt]
    from insight_mcp.agents.evaluation.user_prompts import OUTPUT_FIELD, input_fields

    fields = input_fields(template)
    return PromptKind(prompt, fields[0], OUTPUT_FIELD, fields)


def check_prompt_name(name: str) -> str:
    """The name of a prompt that can be evaluated or optimized: ours, or any name the MLflow registry allows."""
    from insight_mcp.agents.evaluation.user_prompts import NAME

    name = name.strip()
    if name in KINDS:
        return name
    if name.startswith("insight."):
        raise EvaluationError(f"unknown prompt {name[:100]!r}: the suite's own prompts are {', '.join(KINDS)}")
    if NAME.match(name):
        return name
    raise EvaluationError(f"{name[:100]!r} is not a prompt name: ours are {', '.join(KINDS)}; a prompt of your own "
                          "is named with letters, digits and _ . - as the MLflow prompt registry allows")


class CaseError(ValueError):
    """One case that cannot be run; the message says why."""


class Case(BaseModel):
    """One evaluation case: what the module reads, and what a good answer holds."""

    inputs: dict[str, Any]
    expectations: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedPrompt:
    """A registry prompt version ready to evaluate."""

    name: str
    version: str
    alias: str | None
    template: str


class ScorerSummary(BaseModel):
    """One scorer over the dataset: the mean of its values (0 to 1), how many, and how many could not be scored."""

    mean: float | None
    count: int
    failures: int = Field(description="Cases with no answer to score, or where the scorer failed.")
    skipped: int = Field(description="Cases it does not apply to (no expectations of its kind).")


class AgentEvaluation(BaseModel):
    """One prompt version over one dataset: per-scorer aggregates, throughput, and where MLflow keeps it."""

    prompt: str
    version: str
    alias: str | None
    dataset: str = Field(description="The dataset's name or the file it came from.")
    dataset_id: str | None
    cases: int
    predicted: int = Field(description="Cases the LM answered in the expected format.")
    prediction_failures: int
    failure_examples: list[str]
    workers: int
    seconds: float = Field(description="Time spent calling the LM and scoring.")
    cases_per_second: float
    scorers: dict[str, ScorerSummary]
    score: float | None = Field(description="The mean of the scorers' means: one number to compare versions by.")
    mlflow_run_id: str | None = None
    tracking: str = Field(description="`logged`, or why the MLflow run was skipped.")


# --- prompts ---------------------------------------------------------------------------------------------------


def parse_prompt_ref(prompt: str, version: str | None = None) -> tuple[str, str]:
    """(name, version number or alias) from `name@alias`, `name@3`, `name/3`, `prompts:/…` or name plus version."""
    text = prompt.strip().removeprefix("prompts:/")
    selector: str | None = None
    if "@" in text:
        text, selector = text.split("@", 1)
    elif "/" in text:
        text, selector = text.rsplit("/", 1)
    if version is not None and str(version).strip():
        wanted = str(version).strip()
        if selector is not None and selector != wanted:
            raise EvaluationError(f"prompt {prompt!r} names version {selector!r} but version is {wanted!r}: "
                                  "give it once")
        selector = wanted
    selector = (selector or PRODUCTION_ALIAS).strip()
    name = check_prompt_name(text)
    if not selector.isdigit() and not _ALIAS.match(selector):
        raise EvaluationError(f"{selector[:40]!r} is neither a version number nor an alias such as production")
    return name, selector


def resolve_prompt(settings: Settings, prompt: str, version: str | None = None) -> ResolvedPrompt:
    """The template of one registered version; errors name the versions that exist."""
    name, selector = parse_prompt_ref(prompt, version)
    uri = f"prompts:/{name}/{selector}" if selector.isdigit() else f"prompts:/{name}@{selector}"
    try:
        client = open_client(settings.tracking_uri)
        found = client.load_prompt(uri, allow_missing=True, cache_ttl_seconds=0)
    except Exception as exc:
        raise EvaluationError(unreachable(exc)) from None
    if found is None and selector == PRODUCTION_ALIAS and name in KINDS:
        loaded = load_prompt(settings, name)  # registers the default on first use, as the narrative does
        if loaded.builtin:
            raise EvaluationError(f"{name}@{PRODUCTION_ALIAS} could not be read from the prompt registry: "
                                  f"{loaded.error}")
        return ResolvedPrompt(name, loaded.version, PRODUCTION_ALIAS, loaded.template)
    if found is None:
        versions = _versions(client, name)
        if not versions and name in KINDS:
            raise EvaluationError(f"{name} is not registered yet: evaluate {name}@{PRODUCTION_ALIAS} once (it "
                                  "registers the default), or register a version with mlflow.genai.register_prompt")
        if not versions:
            raise EvaluationError(f"no prompt named {name!r} is registered: "
                                  "register your agent's prompt with mlflow.genai.register_prompt and set "
                                  f"@{PRODUCTION_ALIAS} on the version it uses")
        what = f"version {selector}" if selector.isdigit() else f"alias {selector!r}"
        fix = (f"set @{PRODUCTION_ALIAS} on the version your agent uses (the promote_prompt tool, or "
               "mlflow.genai.set_prompt_alias)" if selector == PRODUCTION_ALIAS
               else f"aliases point at versions (e.g. @{PRODUCTION_ALIAS})")
        raise EvaluationError(f"{name} has no {what}: its versions are {', '.join(map(str, versions))}; {fix}")
    template = found.template
    if not isinstance(template, str) or not template.strip():
        raise EvaluationError(f"{name} version {found.version} is not a text prompt: chat prompts (a list of "
                              "messages) cannot be optimized yet")
    return ResolvedPrompt(name, str(found.version), None if selector.isdigit() else selector, template)


def _versions(client: Any, name: str) -> list[int]:
    try:
        if client.get_prompt(name) is None:
            return []
        return sorted(int(v.version) for v in client.search_prompt_versions(name, max_results=1000))
    except Exception:
        return []


# --- datasets --------------------------------------------------------------------------------------------------


def read_jsonl(path: Path, limit: int | None = None) -> list[Case]:
    """Cases from a JSONL file, one `{"inputs": {...}, "expectations": {...}}` a line; errors name the line."""
    cases: list[Case] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                if limit is not None and len(cases) >= limit:
                    break
                if len(cases) >= MAX_CASES:
                    raise EvaluationError(f"{path} holds more than {MAX_CASES} cases: pass a limit")
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvaluationError(f"{path}: line {number} is not valid JSON (column {exc.colno}: "
                                          f"{exc.msg})") from None
                if not isinstance(raw, dict) or not isinstance(raw.get("inputs"), dict) or not raw["inputs"]:
                    raise EvaluationError(f'{path}: line {number} must be an object with a non-empty "inputs" '
                                          'object (and optionally an "expectations" object)')
                try:
                    cases.append(Case(inputs=raw["inputs"], expectations=raw.get("expectations") or {}))
                except ValidationError:
                    raise EvaluationError(f'{path}: line {number}: "expectations" must be an object') from None
    except FileNotFoundError:
        raise EvaluationError(f"dataset file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"dataset file {path} cannot be read: {exc}") from None
    return cases


def is_file_reference(dataset: str) -> bool:
    """A path (ends in .jsonl or .json, or has a folder in it) rather than an MLflow dataset's name or id."""
    text = dataset.strip()
    return text.endswith((".jsonl", ".json")) or "/" in text or "\\" in text or text.startswith(("~", "."))


def read_cases(settings: Settings, dataset: str, limit: int | None = None) -> tuple[str, str | None, list[Case]]:
    """(what it is called, MLflow dataset id or None, cases) for a JSONL path, a dataset id `d-…` or a name."""
    text = dataset.strip()
    if not text:
        raise EvaluationError("dataset is empty: give an MLflow dataset name or id, or the path of a JSONL file")
    if is_file_reference(text):
        path = Path(text).expanduser()
        cases = read_jsonl(path, limit)
        if not cases:
            raise EvaluationError(f"{path} holds no cases")
        return str(path), None, cases
    if not text.startswith("d-") and not _DATASET_NAME.match(text):
        raise EvaluationError(f"{text[:80]!r} is not a dataset name (letters, digits, _ . -), id (d-…) or .jsonl path")
    try:
        client = open_client(settings.tracking_uri)
        if text.startswith("d-"):
            try:
                found = client.get_dataset(text)
            except Exception as exc:
                if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                    raise EvaluationError(f"no dataset with id {text[:80]!r}: curate one with curate_dataset, or "
                                          "give a name or a .jsonl file") from None
                raise
        else:
            matches = client.search_datasets(filter_string=f'name = "{text}"', max_results=2)
            if not matches:
                raise EvaluationError(f"no dataset named {text!r}: curate one with curate_dataset, or give its id "
                                      "(d-…) or a .jsonl file")
            if len(matches) > 1:
                raise EvaluationError(f"several datasets are named {text!r}: give the id of the one you mean "
                                      f"({', '.join(m.dataset_id for m in matches)})")
            found = matches[0]
        with fluent_mlflow(settings.tracking_uri):
            records = list(found.records)
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(unreachable(exc)) from None
    cases = [Case(inputs=r.inputs or {}, expectations=r.expectations or {}) for r in records]
    cases = [c for c in cases if c.inputs][:limit] if limit else [c for c in cases if c.inputs]
    if not cases:
        raise EvaluationError(f"dataset {found.name!r} ({found.dataset_id}) holds no cases with inputs")
    if len(cases) > MAX_CASES:
        raise EvaluationError(f"dataset {found.name!r} holds {len(cases)} cases, more than {MAX_CASES}: pass a limit")
    return str(found.name), str(found.dataset_id), cases


# --- what the module reads -------------------------------------------------------------------------------------


def module_inputs(inputs: dict[str, Any], kind: PromptKind) -> dict[str, str]:
    """Every input field's value as the LM is shown it: fenced as untrusted data."""
    if not kind.generic:
        return {kind.input_field: model_input(input_value(inputs, kind))}
    from insight_mcp.agents.evaluation.user_prompts import field_values, shown

    try:
        values = field_values(inputs, kind.fields)
    except ValueError as exc:
        raise CaseError(str(exc)) from None
    return {name: shown(value) for name, value in values.items()}


def shown_inputs(inputs: dict[str, Any], kind: PromptKind) -> str:
    """A case's inputs as one text, for an optimizer that sees the query as a whole (TextGrad)."""
    values = module_inputs(inputs, kind)
    if len(values) == 1:
        return next(iter(values.values()))
    return "\n\n".join(f"{name}:\n{value}" for name, value in values.items())


def make_module(kind: PromptKind, template: str) -> Any:
    """The DSPy program a prompt runs as: our narrative module, or one built from a user's template."""
    if kind.generic:
        from insight_mcp.agents.evaluation.user_prompts import program

        return program(kind.fields, template)
    from insight_mcp.agents.narrative.modules import MODULES

    return MODULES[kind.prompt](template)


def input_value(inputs: dict[str, Any], kind: PromptKind) -> Any:
    """The value the module's one input field gets: the field by name, or the only field there is."""
    if kind.input_field in inputs:
        return inputs[kind.input_field]
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    raise CaseError(f"inputs must hold `{kind.input_field}` (or a single field); they hold "
                    f"{', '.join(sorted(inputs))[:200]}")


def case_data(value: Any) -> Any:
    """The JSON data a case is about: the object itself, or what a fenced or JSON string holds; None otherwise."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        fenced = _FENCED.search(value)
        try:
            return json.loads(fenced.group(2) if fenced else value)
        except json.JSONDecodeError:
            return None
    return None


def model_input(value: Any) -> str:
    """What the LM is shown: data fenced as untrusted, as the narrative shows it; fenced text is kept as it is."""
    from insight_mcp.agents.narrative import facts

    if isinstance(value, str) and "<untrusted_audit_data-" in value:
        return value
    data = case_data(value)
    return facts.untrusted(data if data is not None else value)


def predict(module: Any, kind: PromptKind, lm: Any, adapter: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """One LM call through the prompt's DSPy module: {"text": …} (and `cited_finding_ids` for a summary)."""
    import dspy

    values = module_inputs(inputs, kind)
    with dspy.context(lm=lm, adapter=adapter):
        prediction = module(**values)
    outputs: dict[str, Any] = {"text": str(getattr(prediction, kind.output_field, "") or "").strip()}
    if kind.prompt == SECURITY_SUMMARY:
        outputs["cited_finding_ids"] = [str(i) for i in (getattr(prediction, "cited_finding_ids", None) or [])]
    return outputs


# --- scorers ---------------------------------------------------------------------------------------------------


def _text_of(outputs: Any) -> str:
    if isinstance(outputs, dict):
        return str(outputs.get("text") or "")
    return str(outputs or "")


def _summary_report(data: dict[str, Any]) -> Any:
    """A Report holding what a summary's facts say, for the narrative's own checks; None if they are not facts."""
    from insight_mcp.agents.reporting.model import (
        AgentOutcome,
        Narrative,
        PrincipalScore,
        Report,
        SeverityCounts,
    )
    from insight_mcp.agents.security.model import Evidence, Finding

    try:
        counts = data["counts"]
        window = data.get("window") or {}
        findings = [Finding(id=f["id"], rule_id=f.get("rule_id") or "unknown", category=f["category"],
                            severity=f["severity"], title=f.get("title") or "", principal=f.get("principal") or "",
                            workspace_id=f.get("workspace_id"), first_seen=f["first_seen"], last_seen=f["last_seen"],
                            event_count=int(f.get("event_count") or 0), evidence=Evidence(), mitre=[],
                            recommendation="", threat_model="")
                    for f in data.get("findings") or []]
        principals = [PrincipalScore(principal=p["principal"], risk_score=float(p.get("risk_score") or 0),
                                     max_severity=p.get("max_severity") or "info", findings=int(p.get("findings") or 0),
                                     categories=list(p.get("categories") or []), workspaces=[])
                      for p in data.get("riskiest_principals") or []]
        since = window.get("since") or "1970-01-01T00:00:00"
        return Report(
            report_id="evaluation", generated_at=since, since=since, until=window.get("until") or since,
            backend="evaluation", rule_set_version="", coverage=[],
            agents=[AgentOutcome(agent=str(a), status="failed", seconds=0) for a in data.get("failed_analyses") or []],
            counts=SeverityCounts(by_severity=dict(counts.get("by_severity") or {}),
                                  by_category=dict(counts.get("by_category") or {}), total=int(counts["total"])),
            findings=findings, principals=principals, workspaces=[], timeline=[], network=None,
            narrative=Narrative(executive_summary="", network=""),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _finding(data: dict[str, Any]) -> Any:
    from insight_mcp.agents.security.model import Evidence, Finding

    try:
        return Finding(id=data["id"], rule_id=data.get("rule_id") or "unknown", category=data["category"],
                       severity=data["severity"], title=data.get("title") or "", principal=data.get("principal") or "",
                       workspace_id=data.get("workspace_id"), first_seen=data["first_seen"],
                       last_seen=data["last_seen"], event_count=int(data.get("event_count") or 0),
                       evidence=Evidence(fields=dict(data.get("evidence") or {})), mitre=list(data.get("mitre") or []),
                       recommendation=data.get("recommendation") or "", threat_model=data.get("threat_model") or "")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _network_report(data: dict[str, Any]) -> Any:
    from insight_mcp.agents.reporting.model import NetworkOverview

    try:
        overview = NetworkOverview(
            external_ips=int(data["external_ips"]), anonymizer_ips=list(data.get("anonymizer_ips") or []),
            ip_access_denials=int(data["ip_access_denials"]), denied_ips=list(data.get("denied_ips") or []),
            egress_denials=int(data["egress_denials"]), risky_destinations=list(data.get("risky_destinations") or []))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None

    @dataclass
    class _Holder:  # check_network reads only `.network`
        network: Any

    return _Holder(overview)


def validity_problem(kind: PromptKind, inputs: dict[str, Any], outputs: Any) -> str | None:
    """What the narrative's own output checks object to in this output, or None when it passes."""
    from insight_mcp.agents.narrative import validate

    text = _text_of(outputs)
    if kind.generic:
        from insight_mcp.agents.evaluation.user_prompts import answer_problem

        return answer_problem(text)
    raw = input_value(inputs, kind)
    data = case_data(raw)
    shown = raw if isinstance(raw, str) else json.dumps(data, default=str)
    if kind.prompt == SECURITY_SUMMARY:
        report = _summary_report(data) if isinstance(data, dict) else None
        if report is not None:
            cited = outputs.get("cited_finding_ids", []) if isinstance(outputs, dict) else []
            return validate.check_summary(text, cited, report, shown)
        return validate.check_text(text, max_chars=validate.MAX_SUMMARY_CHARS, data=shown)
    if kind.prompt == FINDING_EXPLANATION:
        finding = _finding(data) if isinstance(data, dict) else None
        if finding is not None:
            return validate.check_explanation(text, finding, shown)
        return validate.check_text(text, max_chars=validate.MAX_EXPLANATION_CHARS, data=shown)
    holder = _network_report(data) if isinstance(data, dict) else None
    if holder is not None:
        return validate.check_network(text, holder, shown)
    return validate.check_text(text, max_chars=validate.MAX_NETWORK_CHARS, data=shown)


def _states(text: str, number: int, nouns: str) -> bool:
    return re.search(rf"(?<![\d.,]){number}\s+(?:[\w-]+\s+)?{nouns}\b", text, re.IGNORECASE) is not None


def completeness_checks(kind: PromptKind, data: dict[str, Any], outputs: Any) -> list[tuple[str, bool]]:
    """(what the prompt asks the output to state, whether it does) for one case's data."""
    text = _text_of(outputs)
    lowered = text.lower()
    checks: list[tuple[str, bool]] = []
    if kind.generic:  # a user's prompt asks for nothing we can count: expected_facts says what must be stated
        return checks
    if kind.prompt == SECURITY_SUMMARY:
        counts = data.get("counts") or {}
        total = int(counts.get("total") or 0)
        if total:
            checks.append((f"the total ({total} findings)", _states(text, total, r"(?:findings?|alerts?)")))
        else:
            checks.append(("that there are no findings", "no findings" in lowered or _states(text, 0, "findings?")))
        for severity, n in (counts.get("by_severity") or {}).items():
            if n:
                checks.append((f"{n} {severity}", re.search(rf"(?<![\d.,]){n}\s+{severity}\b", text, re.I) is not None))
        principals = data.get("riskiest_principals") or []
        if principals and principals[0].get("principal"):
            checks.append(("the riskiest principal", str(principals[0]["principal"]).lower() in lowered))
        serious = {f.get("id") for f in data.get("findings") or [] if f.get("severity") in ("critical", "high")}
        if serious:
            cited = set(outputs.get("cited_finding_ids", []) if isinstance(outputs, dict) else [])
            cited |= set(_FINDING_ID.findall(text))
            checks.append(("a critical or high finding's id", bool(cited & serious)))
    elif kind.prompt == FINDING_EXPLANATION:
        if data.get("severity"):
            checks.append((f"the severity ({data['severity']})", str(data["severity"]).lower() in lowered))
        if data.get("event_count") is not None:
            n = int(data["event_count"])
            checks.append((f"the event count ({n})", _states(text, n, r"events?")))
    else:
        for key, label in (("external_ips", "external IPs"), ("anonymizer_ip_count", "anonymisers"),
                           ("ip_access_denials", "IP access denials"), ("denied_ip_count", "denied addresses"),
                           ("egress_denials", "egress denials")):
            value = data.get(key)
            if value is None and key.endswith("_ip_count"):
                listed = data.get(key.replace("_ip_count", "_ips"))
                value = len(listed) if isinstance(listed, list) else None
            if value is not None:
                checks.append((f"{label} ({value})", re.search(rf"(?<![\d.,]){int(value)}(?![\d.,]\d)", text)
                               is not None))
    return checks


def _token_f1(text: str, expected: str) -> float:
    got, want = _WORD.findall(text.lower()), _WORD.findall(expected.lower())
    if not got or not want:
        return float(got == want)
    common: dict[str, int] = {}
    for token in want:
        common[token] = common.get(token, 0) + 1
    overlap = 0
    for token in got:
        if common.get(token, 0) > 0:
            overlap += 1
            common[token] -= 1
    if not overlap:
        return 0.0
    precision, recall = overlap / len(got), overlap / len(want)
    return round(2 * precision * recall / (precision + recall), 4)


def prompt_scorers(kind: PromptKind, names: Iterable[str] = CODE_SCORERS, *, judge_lm: Any = None) -> list[Any]:
    """The MLflow scorers for one prompt's outputs ({"text", "cited_finding_ids"}), usable by genai.evaluate too."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    wanted = list(dict.fromkeys(names))
    made: list[Any] = []

    @scorer(name="validity", timeout=0)
    def validity(inputs: Any, outputs: Any, expectations: Any) -> Feedback:
        problem = validity_problem(kind, inputs, outputs)
        return Feedback(value=0.0 if problem else 1.0, rationale=problem or "passes the narrative's output checks")

    @scorer(name="completeness", timeout=0)
    def completeness(inputs: Any, outputs: Any, expectations: Any) -> Feedback | None:
        if kind.generic:
            return None
        data = case_data(input_value(inputs, kind))
        if not isinstance(data, dict):
            return None
        checks = completeness_checks(kind, data, outputs)
        if not checks:
            return None
        missing = [what for what, ok in checks if not ok]
        return Feedback(value=round(1 - len(missing) / len(checks), 4),
                        rationale="states everything asked" if not missing else "does not state " + "; ".join(missing))

    @scorer(name="expected_facts", timeout=0)
    def expected_facts(inputs: Any, outputs: Any, expectations: Any) -> Feedback | None:
        wanted_facts = (expectations or {}).get("expected_facts")
        if not isinstance(wanted_facts, list) or not wanted_facts:
            return None
        text = _text_of(outputs).lower()
        missing = [str(f) for f in wanted_facts if str(f).lower() not in text]
        why = "all expected facts stated" if not missing else "missing: " + "; ".join(missing)[:500]
        return Feedback(value=round(1 - len(missing) / len(wanted_facts), 4), rationale=why)

    @scorer(name="expected_response", timeout=0)
    def expected_response(inputs: Any, outputs: Any, expectations: Any) -> Feedback | None:
        expected = (expectations or {}).get("expected_response")
        if not isinstance(expected, str) or not expected.strip():
            return None
        text = _text_of(outputs)
        value = _token_f1(text, expected)
        lacking = list(dict.fromkeys(w for w in _WORD.findall(expected.lower()) if w not in
                                     set(_WORD.findall(text.lower()))))
        why = f"word overlap (F1) {value:g} with the expected response"
        if lacking:  # what a reflective optimizer can act on, not just a number
            why += "; missing: " + ", ".join(lacking[:12])
        return Feedback(value=value, rationale=why)

    by_name = {"validity": validity, "completeness": completeness, "expected_facts": expected_facts,
               "expected_response": expected_response}
    for name in wanted:
        if name == "judges":
            if judge_lm is None:
                raise EvaluationError("the judges scorer needs an LM: set INSIGHT_LM")
            from insight_mcp.agents.evaluation.insights import judge_scorer

            made.append(judge_scorer(judge_lm, lambda inputs: shown_inputs(inputs, kind)))
        elif name in by_name:
            made.append(by_name[name])
        else:
            raise EvaluationError(f"unknown scorer {name!r}; choose from {', '.join(SCORER_NAMES)}")
    return made


# --- running ---------------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case's answer, scores and failures."""

    index: int
    outputs: dict[str, Any] | None = None
    error: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    rationales: dict[str, str] = field(default_factory=dict)
    scorer_errors: dict[str, str] = field(default_factory=dict)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).split(" To fix:")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def score(result: CaseResult, case: Case, scorers: list[Any]) -> None:
    """Run every scorer on one answered case into `result`; public so optimizers judge a case as evaluations do."""
    from mlflow.entities import Feedback

    for made in scorers:
        try:
            value = made(inputs=case.inputs, outputs=result.outputs, expectations=case.expectations)
        except Exception as exc:
            result.scorer_errors[made.name] = _describe(exc)
            continue
        feedbacks = value if isinstance(value, list) else [value]
        for item in feedbacks:
            if item is None:
                result.scores.setdefault(made.name, None)
            elif isinstance(item, Feedback):
                name = made.name if item.name in ("feedback", made.name) else item.name
                if item.error is not None:
                    result.scorer_errors[name] = str(getattr(item.error, "error_message", item.error))[:200]
                else:
                    result.scores[name] = None if item.value is None else float(item.value)
                    if item.rationale:
                        result.rationales[name] = str(item.rationale)[:300]
            else:
                result.scores[made.name] = float(item)


def run_cases(
    cases: list[Case], kind: PromptKind, template: str, lm: Any, scorers: list[Any], *, workers: int,
    stop: threading.Event | None = None, progress: Callable[[int, int], None] | None = None,
    redact: Callable[[str], str] = lambda text: text,
) -> list[CaseResult]:
    """Every case through the LM and the scorers on a pool of `workers` threads; stops early when told to."""
    from dspy.utils.exceptions import AdapterParseError

    from insight_mcp.agents.narrative.modules import chat_adapter

    stop = stop or threading.Event()
    local = threading.local()
    results: list[CaseResult | None] = [None] * len(cases)
    lock = threading.Lock()
    tally = {"done": 0, "answered": 0, "failed": 0}
    abort: list[str] = []

    def one(index: int) -> None:
        if stop.is_set():
            return
        if getattr(local, "module", None) is None:
            local.module = make_module(kind, template)
            local.adapter = chat_adapter()
        case = cases[index]
        result = CaseResult(index)
        try:
            result.outputs = predict(local.module, kind, lm, local.adapter, case.inputs)
        except CaseError as exc:
            result.error = str(exc)
        except AdapterParseError:
            result.error = "the LM's answer was not in the expected format"
        except Exception as exc:
            result.error = redact(f"the LM call failed ({_describe(exc)})")
        if result.outputs is not None:
            score(result, case, scorers)
        results[index] = result
        with lock:
            tally["done"] += 1
            tally["answered" if result.error is None else "failed"] += 1
            if not tally["answered"] and tally["failed"] >= ABORT_AFTER and not abort:
                abort.append(result.error or "unknown")
                stop.set()
            done = tally["done"]
        if progress is not None:
            progress(done, len(cases))

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="insight-eval") as pool:
        pending: set[concurrent.futures.Future[None]] = set()
        for index in range(len(cases)):
            if stop.is_set():
                break
            if len(pending) >= workers * 2:  # feed as workers free up: cancelling stops new cases at once
                finished, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    future.result()
            pending.add(pool.submit(one, index))
        for future in concurrent.futures.as_completed(pending):
            future.result()
    if abort:
        raise EvaluationError(f"stopped: the first {ABORT_AFTER} cases all failed, the last with: {abort[0]}")
    return [r for r in results if r is not None]


def aggregate(results: list[CaseResult], names: Iterable[str]) -> dict[str, ScorerSummary]:
    """Mean, count, failures and skipped per scorer (a judge contributes clarity and usefulness)."""
    names = [n for n in names if n != "judges"] + (["clarity", "usefulness"] if "judges" in names else [])
    summary = {}
    for name in names:
        values = [r.scores[name] for r in results if r.scores.get(name) is not None]
        failures = sum(1 for r in results if r.outputs is None or (name in r.scorer_errors)
                       or (name in ("clarity", "usefulness") and "judges" in r.scorer_errors))
        skipped = sum(1 for r in results if r.outputs is not None and name in r.scores and r.scores[name] is None)
        mean = round(sum(v for v in values if v is not None) / len(values), 4) if values else None
        summary[name] = ScorerSummary(mean=mean, count=len(values), failures=failures, skipped=skipped)
    return summary


async def evaluate_agent(
    settings: Settings, *, prompt: str, dataset: str, version: str | None = None, workers: int = DEFAULT_WORKERS,
    scorers: list[str] | None = None, limit: int | None = None, lm: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> AgentEvaluation:
    """Run one prompt version over a dataset on parallel workers, score every case, and log an MLflow run."""
    import anyio

    from insight_mcp.agents.llm import LMNotConfigured, build_dspy_lm, redact

    say = progress or (lambda fraction, message: None)
    if not 1 <= workers <= MAX_WORKERS:
        raise EvaluationError(f"workers must be from 1 to {MAX_WORKERS}")
    if limit is not None and not 1 <= limit <= MAX_CASES:
        raise EvaluationError(f"limit must be from 1 to {MAX_CASES}")
    names = list(dict.fromkeys(scorers or CODE_SCORERS))
    unknown = [n for n in names if n not in SCORER_NAMES]
    if unknown:
        raise EvaluationError(f"unknown scorer {unknown[0]!r}; choose from {', '.join(SCORER_NAMES)}")
    parse_prompt_ref(prompt, version)  # a bad name fails before the slow imports
    say(0.01, "setting up the LM")
    if lm is None:
        try:
            lm = await anyio.to_thread.run_sync(build_dspy_lm, settings)
        except LMNotConfigured as exc:
            raise EvaluationError(str(exc)) from None
    say(0.03, "loading the prompt")
    resolved = await anyio.to_thread.run_sync(resolve_prompt, settings, prompt, version)
    say(0.05, "reading the dataset")
    source, dataset_id, cases = await anyio.to_thread.run_sync(read_cases, settings, dataset, limit)
    kind = kind_of(resolved.name, resolved.template)
    made = await anyio.to_thread.run_sync(lambda: prompt_scorers(kind, names, judge_lm=lm))

    def tell(done: int, total: int) -> None:
        say(0.08 + 0.87 * done / total, f"{done} of {total} cases")

    stop = threading.Event()
    started = time.perf_counter()
    say(0.08, f"0 of {len(cases)} cases")
    try:
        results = await anyio.to_thread.run_sync(
            lambda: run_cases(cases, kind, resolved.template, lm, made, workers=workers, stop=stop, progress=tell,
                              redact=lambda text: redact(text, settings)),
            abandon_on_cancel=True)
    finally:
        stop.set()  # a cancelled job takes no new case
    seconds = time.perf_counter() - started
    failed = [r for r in results if r.outputs is None]
    summary = aggregate(results, names)
    means = [s.mean for s in summary.values() if s.mean is not None]
    evaluation = AgentEvaluation(
        prompt=resolved.name, version=resolved.version, alias=resolved.alias, dataset=source, dataset_id=dataset_id,
        cases=len(cases), predicted=len(results) - len(failed), prediction_failures=len(failed),
        failure_examples=list(dict.fromkeys(r.error or "" for r in failed))[:MAX_FAILURE_EXAMPLES],
        workers=workers, seconds=round(seconds, 3), cases_per_second=round(len(results) / seconds, 2) if seconds else 0,
        scorers=summary, score=round(sum(means) / len(means), 4) if means else None, tracking="pending",
    )
    say(0.96, "logging to MLflow")
    run_id, tracking = await anyio.to_thread.run_sync(log_agent_evaluation, settings, evaluation, results)
    return evaluation.model_copy(update={"mlflow_run_id": run_id, "tracking": tracking})


def log_agent_evaluation(
    settings: Settings, evaluation: AgentEvaluation, results: list[CaseResult]
) -> tuple[str | None, str]:
    """One MLflow run: the prompt version and dataset as params, scorer aggregates as metrics, every case kept."""
    try:
        client = open_client(settings.tracking_uri)
        experiment = experiment_id(client, EXPERIMENT, settings.mlflow_artifacts / EXPERIMENT)
        run = client.create_run(experiment, run_name=f"agent {evaluation.prompt} v{evaluation.version}", tags={
            "insight.kind": "agent_evaluation", "insight.version": VERSION, "insight.prompt": evaluation.prompt,
            "insight.prompt_version": evaluation.version, "insight.dataset": evaluation.dataset[:250],
            **({"insight.dataset_id": evaluation.dataset_id} if evaluation.dataset_id else {}),
        })
        run_id = run.info.run_id
        params = {"prompt": evaluation.prompt, "prompt_version": evaluation.version,
                  "prompt_alias": evaluation.alias or "", "dataset": evaluation.dataset[:250],
                  "dataset_id": evaluation.dataset_id or "", "cases": evaluation.cases, "workers": evaluation.workers,
                  "scorers": ",".join(evaluation.scorers)}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        metrics: dict[str, float] = {"cases_per_second": evaluation.cases_per_second, "seconds": evaluation.seconds,
                                     "prediction_failures": evaluation.prediction_failures}
        if evaluation.score is not None:
            metrics["score"] = evaluation.score
        for name, summary in evaluation.scorers.items():
            if summary.mean is not None:
                metrics[f"{name}.mean"] = summary.mean
            metrics[f"{name}.count"] = summary.count
            metrics[f"{name}.failures"] = summary.failures
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_dict(run_id, evaluation.model_dump(mode="json"), "agent_evaluation.json")
        client.log_dict(run_id, {"cases": [
            {"index": r.index, "outputs": r.outputs, "error": r.error, "scores": r.scores,
             "rationales": r.rationales, "scorer_errors": r.scorer_errors} for r in results]}, "cases.json")
        client.set_terminated(run_id)
        return run_id, "logged"
    except Exception as exc:
        return None, "skipped: " + failure(exc)
