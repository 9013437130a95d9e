"""Writing a report's narrative: LM-written where an LM is configured and its output validates, templated otherwise.

Three parts go to the LM: the executive summary, an explanation per high or critical finding (the ones
`templated.explained()` picks), and the network narrative. Each sees the report's facts only as fenced, untrusted
data; each output is validated (`validate.py`); a part that fails, errors or times out is replaced by its templated
text and the reason is recorded in `Narrative.errors`. Nothing here raises because an LM or MLflow misbehaved.

Every LM part is its own MLflow trace in the `insight-narrative` experiment, tagged with the agent, the prompt and
its version; a rejected part's trace is marked ERROR. When a trace is already active (the analysis that asked for
the narrative), its id is kept in the tag `insight.parent_trace_id`. Tracing is skipped when MLflow is unreachable.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client
from insight_mcp.agents.core.prompts import (
    FINDING_EXPLANATION,
    NETWORK_NARRATIVE,
    SECURITY_SUMMARY,
    LoadedPrompt,
    builtin_prompt,
    load_prompt,
)
from insight_mcp.agents.llm import build_dspy_lm, lm_configured, redact
from insight_mcp.agents.narrative import facts, validate
from insight_mcp.agents.narrative.templated import (
    executive_summary,
    explain,
    explained,
    network_summary,
    templated_narrative,
)
from insight_mcp.agents.reporting.model import Narrative, Report
from insight_mcp.agents.settings import Settings

log = structlog.get_logger("insight_mcp.narrative")

NARRATIVE_EXPERIMENT = "insight-narrative"
MAX_CONCURRENT_CALLS = 4
REGISTRY_TIMEOUT_SECONDS = 30.0
MAX_ERROR_CHARS = 200
AGENT_TAG = "narrative"
SUMMARY_LABEL = "security_summary"
NETWORK_LABEL = "network_narrative"


@dataclass
class _Part:
    """One LM call to make, with everything needed to check it and to replace it."""

    label: str  # how errors name it: "security_summary", "finding_explanation f-…", "network_narrative"
    prompt: LoadedPrompt
    data: str  # the fenced input
    fallback: str
    check: Callable[[Any], tuple[str, str | None]]  # prediction -> (text, problem or None)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Outcome:
    text: str
    from_lm: bool
    error: str | None = None
    skipped: bool = False


class _Breaker:
    """After one failed LM call, the parts not yet started keep their templated text instead of waiting too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None

    def trip(self, reason: str) -> None:
        with self._lock:
            self.reason = self.reason or reason


class _Tracer:
    """One MLflow trace per LM part, or nothing at all when the tracking store cannot be reached."""

    def __init__(self, settings: Settings, report_id: str, parent_trace_id: str | None) -> None:
        self.settings = settings
        self.report_id = report_id
        self.parent_trace_id = parent_trace_id
        self.mlflow: Any = None
        self.experiment_id: str | None = None

    def connect(self) -> None:
        try:
            import mlflow

            client = open_client(self.settings.tracking_uri)
            self.experiment_id = experiment_id(client, NARRATIVE_EXPERIMENT,
                                               self.settings.mlflow_artifacts / NARRATIVE_EXPERIMENT)
            if mlflow.get_tracking_uri() != self.settings.tracking_uri:
                mlflow.set_tracking_uri(self.settings.tracking_uri)
            self.mlflow = mlflow
        except Exception as exc:
            log.warning("narrative tracing is off: MLflow is unreachable", error=failure(exc))

    @contextlib.contextmanager
    def span(self, part: _Part) -> Iterator[Callable[[dict[str, Any], str | None], None]]:
        """Yields finish(outputs, error); the span ends ERROR when error is set. Tracing failures are swallowed."""
        span = None
        if self.mlflow is not None:
            tags = {"insight.agent": AGENT_TAG, "insight.prompt": part.prompt.name,
                    "insight.prompt_version": part.prompt.version, "insight.report_id": self.report_id, **part.tags}
            if self.parent_trace_id:
                tags["insight.parent_trace_id"] = self.parent_trace_id
            try:
                # A trace of its own even inside the orchestrator's span: an empty context has no parent span.
                span = contextvars.Context().run(
                    self.mlflow.start_span_no_context,
                    f"narrative.{part.prompt.name.removeprefix('insight.')}", span_type="CHAIN",
                    inputs={"data": part.data}, tags=tags, experiment_id=self.experiment_id,
                )
            except Exception as exc:
                log.warning("could not start a narrative trace", error=failure(exc))
        done = False

        def finish(outputs: dict[str, Any], error: str | None) -> None:
            nonlocal done
            if span is None or done:
                return
            done = True
            try:
                span.set_outputs(outputs)
                if error is not None:
                    span.set_attribute("error", error)
                span.end(status="ERROR" if error is not None else "OK")
            except Exception as exc:
                log.warning("could not finish a narrative trace", error=failure(exc))

        try:
            yield finish
        except BaseException:
            finish({}, "the narrative part was interrupted")
            raise
        finish({}, None)


async def write_narrative(report: Report, settings: Settings, *, lm: Any = None,
                          summary_only: bool = False) -> Narrative:
    """The report's words: LM-written parts that validate, templated text for the rest; never raises for an LM.

    `summary_only` writes the executive summary alone (one LM call), for a quick answer about a window's findings.
    """
    if lm is None and not lm_configured(settings):
        return templated_narrative(report)
    try:
        return await _write(report, settings, lm, summary_only)
    except Exception as exc:  # a bug here must cost the report its LM text, never the report itself
        message = redact(f"narrative: unexpected failure ({_describe(exc)}); templated text used", settings)
        log.error("narrative failed", error=message)
        return templated_narrative(report).model_copy(update={"errors": [message]})


async def _write(report: Report, settings: Settings, lm: Any, summary_only: bool = False) -> Narrative:
    errors: list[str] = []
    if lm is None:
        try:
            lm = await anyio.to_thread.run_sync(build_dspy_lm, settings)
        except Exception as exc:
            message = redact(f"narrative: the LM could not be set up ({failure(exc)})", settings)
            log.warning("narrative falls back to the template", error=message)
            return templated_narrative(report).model_copy(update={"errors": [message]})

    parent_trace_id = _active_trace_id()
    tracer = _Tracer(settings, report.report_id, parent_trace_id)
    names = (SECURITY_SUMMARY,) if summary_only else (SECURITY_SUMMARY, FINDING_EXPLANATION, NETWORK_NARRATIVE)
    prompts = await _load_prompts(settings, tracer, names)
    failed_prompts: dict[str, list[str]] = {}
    for prompt in prompts.values():
        if prompt.error:
            failed_prompts.setdefault(prompt.error, []).append(prompt.name)
    for reason, names in failed_prompts.items():  # one line per cause, not one per prompt
        errors.append(redact(f"{', '.join(names)}: {reason}; used the built-in "
                             f"{'prompt' if len(names) == 1 else 'prompts'}", settings))

    parts = _parts(report, prompts, summary_only=summary_only)
    breaker = _Breaker()
    limiter = anyio.CapacityLimiter(MAX_CONCURRENT_CALLS)
    outcomes: list[_Outcome] = [_Outcome(p.fallback, False) for p in parts]
    guard = settings.lm_timeout_seconds * 3 + 5

    async def run(index: int) -> None:
        part = parts[index]
        with anyio.move_on_after(guard) as scope:
            outcomes[index] = await anyio.to_thread.run_sync(
                _run_part, part, lm, tracer, breaker, settings, limiter=limiter, abandon_on_cancel=True)
        if scope.cancelled_caught:
            message = f"{part.label}: the LM did not answer within {guard:g} s"
            breaker.trip(message)
            outcomes[index] = _Outcome(part.fallback, False, message)

    await run(0)  # the summary goes first, alone: an LM that is down costs one wait, not one per part
    async with anyio.create_task_group() as group:
        for index in range(1, len(parts)):
            group.start_soon(run, index)

    errors += [o.error for o in outcomes if o.error]
    skipped = sum(o.skipped for o in outcomes)
    if skipped:
        errors.append(f"{skipped} more LM {'part was' if skipped == 1 else 'parts were'} not tried after the LM "
                      f"failed; templated text used")
    for message in errors:
        log.warning("narrative part used the template", error=message)
    by_label = {p.label: o for p, o in zip(parts, outcomes, strict=True)}
    from_lm = sum(o.from_lm for o in outcomes)
    template = templated_narrative(report)
    summary = by_label[SUMMARY_LABEL]
    network = by_label.get(NETWORK_LABEL)
    return Narrative(
        executive_summary=summary.text,
        network=network.text if network else template.network,
        explanations={f.id: (by_label[label].text if label in by_label else template.explanations.get(f.id, ""))
                      for f in explained(report.findings) for label in [_explanation_label(f.id)]},
        source="lm" if from_lm == len(parts) else "template" if from_lm == 0 else "mixed",
        errors=errors,
        prompts={p.prompt.name: p.prompt.version for p in parts},
    )


def _explanation_label(finding_id: str) -> str:
    return f"finding_explanation {finding_id}"


def _active_trace_id() -> str | None:
    import sys

    mlflow = sys.modules.get("mlflow")  # only if someone already traces: never import MLflow just to ask
    if mlflow is None:
        return None
    try:
        return mlflow.get_active_trace_id()
    except Exception:
        return None


async def _load_prompts(settings: Settings, tracer: _Tracer, names: tuple[str, ...]) -> dict[str, LoadedPrompt]:
    """The prompts from the registry (and the tracer's connection), bounded in time; defaults otherwise."""

    def load() -> dict[str, LoadedPrompt]:
        loaded = {name: load_prompt(settings, name) for name in names}
        if not all(p.builtin for p in loaded.values()):  # the store answered: trace there too
            tracer.connect()
        return loaded

    with anyio.move_on_after(REGISTRY_TIMEOUT_SECONDS):
        return await anyio.to_thread.run_sync(load, abandon_on_cancel=True)
    reason = f"the prompt registry did not answer within {REGISTRY_TIMEOUT_SECONDS:g} s"
    return {name: builtin_prompt(name, reason) for name in names}


def _parts(report: Report, prompts: dict[str, LoadedPrompt], *, summary_only: bool = False) -> list[_Part]:
    summary_data = facts.untrusted(facts.summary_facts(report))

    def check_summary(prediction: Any) -> tuple[str, str | None]:
        text = str(prediction.summary or "").strip()
        cited = [str(i) for i in (prediction.cited_finding_ids or [])]
        return text, validate.check_summary(text, cited, report, summary_data)

    parts = [_Part(SUMMARY_LABEL, prompts[SECURITY_SUMMARY], summary_data, executive_summary(report), check_summary)]
    if summary_only:
        return parts
    for finding in explained(report.findings):
        data = facts.untrusted(facts.finding_facts(finding))

        def check_explanation(prediction: Any, finding: Any = finding, data: str = data) -> tuple[str, str | None]:
            text = str(prediction.explanation or "").strip()
            return text, validate.check_explanation(text, finding, data)

        parts.append(_Part(_explanation_label(finding.id), prompts[FINDING_EXPLANATION], data, explain(finding),
                           check_explanation, {"insight.finding_id": finding.id}))
    network = facts.network_facts(report)
    if network is not None:
        network_data = facts.untrusted(network)

        def check_network(prediction: Any) -> tuple[str, str | None]:
            text = str(prediction.narrative or "").strip()
            return text, validate.check_network(text, report, network_data)

        parts.append(_Part(NETWORK_LABEL, prompts[NETWORK_NARRATIVE], network_data, network_summary(report),
                           check_network))
    return parts


def _run_part(part: _Part, lm: Any, tracer: _Tracer, breaker: _Breaker, settings: Settings) -> _Outcome:
    """One LM call, checked; the templated text and the reason when anything goes wrong. Runs in a worker thread."""
    if breaker.reason is not None:
        return _Outcome(part.fallback, False, skipped=True)
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    from insight_mcp.agents.narrative.modules import MODULES, chat_adapter

    with tracer.span(part) as finish:
        module = MODULES[part.prompt.name](part.prompt.template)
        input_name = next(iter(module.write.signature.input_fields))
        try:
            with dspy.context(lm=lm, adapter=chat_adapter()):
                prediction = module(**{input_name: part.data})
        except AdapterParseError:
            message = f"{part.label}: the LM's answer was not in the expected format"
            finish({"accepted": False}, message)
            return _Outcome(part.fallback, False, message)
        except Exception as exc:
            message = redact(f"{part.label}: the LM call failed ({_describe(exc)})", settings)
            breaker.trip(message)
            finish({"accepted": False}, message)
            return _Outcome(part.fallback, False, message)
        try:
            text, problem = part.check(prediction)
        except Exception as exc:  # an answer the checks cannot read (a field of the wrong type) is rejected
            text, problem = "", f"could not be checked ({_describe(exc)})"
        if problem is not None:
            message = redact(f"{part.label}: rejected LM output: {problem}", settings)
            finish({"text": redact(text, settings), "accepted": False}, message)
            return _Outcome(part.fallback, False, message)
        finish({"text": redact(text, settings), "accepted": True}, None)
        return _Outcome(text, True)


def _describe(exc: BaseException) -> str:
    """The exception in one short line: DSPy's "To fix" hints and long provider bodies are cut."""
    text = " ".join(str(exc).split()).split(" To fix:")[0]
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
