"""Evaluating the detections end to end: labels, a detection run over their window, scores, and an MLflow run.

MLflow keeps every evaluation (experiment `insight-evaluation`): the window, labels and severity floor as params,
precision, recall and F1 overall and per category as metrics, and the full scores as an artifact. If the tracking
store cannot be reached the evaluation still answers, and says that tracking was skipped and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from insight_mcp.agents.core.mlflow_store import experiment_id, failure, open_client
from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.evaluation.detections import (
    DetectionScores,
    IncidentLabel,
    LabelsError,
    labels_from_backend,
    read_labels_file,
    score_detections,
)
from insight_mcp.agents.ingestion.backend import SystemTables
from insight_mcp.agents.security.service import SecurityAgent
from insight_mcp.agents.settings import Settings
from insight_mcp.agents.version import VERSION

EXPERIMENT = "insight-evaluation"
GENERATED = "generated"


class DetectionEvaluation(BaseModel):
    """One evaluation of the detections: what was measured, the scores, and where MLflow keeps it."""

    labels_source: str
    since: UtcDateTime
    until: UtcDateTime
    min_severity: str
    rules_run: int
    scores: DetectionScores
    mlflow_run_id: str | None = None
    tracking: str = Field(description="`logged`, or why the MLflow run was skipped.")


async def load_labels(settings: Settings, backend: SystemTables, source: str) -> list[IncidentLabel]:
    """`generated` (the workspace's own labels) or the path of a labels file."""
    import anyio

    if source.strip() == GENERATED:
        labels = await labels_from_backend(backend, settings.query)
    else:
        labels = await anyio.to_thread.run_sync(read_labels_file, Path(source).expanduser())
    if not labels:
        raise LabelsError(f"{source} holds no labelled incidents: there is nothing to measure recall against")
    return labels


async def evaluate_detections(
    settings: Settings, agent: SecurityAgent, *, labels_source: str = GENERATED, since: str | None = None,
    until: str | None = None, min_severity: str = "medium", progress: Callable[[float, str], None] | None = None,
) -> DetectionEvaluation:
    """Run the detections over the labels' window, score them, and log the evaluation to MLflow."""
    import anyio

    say = progress or (lambda fraction, message: None)
    say(0.05, "reading labels")
    labels = await load_labels(settings, agent.backend, labels_source)
    first = min(label.first_seen for label in labels) - dt.timedelta(hours=1)
    say(0.15, "running the detections")
    run = await agent.run(since=since or first.isoformat(), until=until, min_severity="info")
    say(0.8, "scoring")
    scores = score_detections(run.findings, labels, min_severity=min_severity)
    evaluation = DetectionEvaluation(labels_source=labels_source, since=run.since, until=run.until,
                                     min_severity=min_severity, rules_run=run.rules_run, scores=scores,
                                     tracking="pending")
    say(0.9, "logging to MLflow")
    run_id, tracking = await anyio.to_thread.run_sync(log_evaluation, settings, evaluation)
    return evaluation.model_copy(update={"mlflow_run_id": run_id, "tracking": tracking})


def log_evaluation(settings: Settings, evaluation: DetectionEvaluation) -> tuple[str | None, str]:
    """One MLflow run for one evaluation; (run id, 'logged') or (None, why it was skipped)."""
    try:
        client = open_client(settings.tracking_uri)
        experiment = experiment_id(client, EXPERIMENT, settings.mlflow_artifacts / EXPERIMENT)
        run = client.create_run(experiment, run_name=f"detections {evaluation.labels_source}",
                                tags={"insight.kind": "detection_evaluation", "insight.version": VERSION})
        run_id = run.info.run_id
        for key, value in {"labels": evaluation.labels_source, "since": evaluation.since.isoformat(),
                           "until": evaluation.until.isoformat(), "min_severity": evaluation.min_severity,
                           "rules_run": evaluation.rules_run, "labelled_incidents": evaluation.scores.labels}.items():
            client.log_param(run_id, key, value)
        for name, score in [("overall", evaluation.scores.overall), *evaluation.scores.by_category.items()]:
            for metric in ("precision", "recall", "f1"):
                value = getattr(score, metric)
                if value is not None:
                    client.log_metric(run_id, f"{metric}.{name}" if name != "overall" else metric, value)
        client.log_dict(run_id, evaluation.model_dump(mode="json"), "detection_evaluation.json")
        client.set_terminated(run_id)
        return run_id, "logged"
    except Exception as exc:
        return None, "skipped: " + failure(exc)
