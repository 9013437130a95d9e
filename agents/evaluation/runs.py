"""Past detection evaluations, read back from their MLflow runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from insight_mcp.agents.core.errors import CallerError
from insight_mcp.agents.core.mlflow_store import open_client, unreachable
from insight_mcp.agents.core.timestamps import UtcDateTime
from insight_mcp.agents.evaluation.service import EXPERIMENT, DetectionEvaluation
from insight_mcp.agents.settings import Settings


class EvaluationError(CallerError, ValueError):
    """An evaluation that cannot be read; the message says what to do."""


class EvaluationSummary(BaseModel):
    run_id: str
    started_at: UtcDateTime
    labels: str | None
    since: str | None
    until: str | None
    precision: float | None
    recall: float | None
    f1: float | None


class EvaluationList(BaseModel):
    evaluations: list[EvaluationSummary]


class StoredEvaluation(BaseModel):
    run_id: str
    evaluation: DetectionEvaluation


def _client(settings: Settings) -> tuple[Any, str | None]:
    try:
        client = open_client(settings.tracking_uri)
        found = client.get_experiment_by_name(EXPERIMENT)
    except Exception as exc:
        raise EvaluationError(unreachable(exc)) from None
    return client, (found.experiment_id if found is not None else None)


def list_evaluations(settings: Settings, limit: int) -> EvaluationList:
    """The newest detection evaluations; empty when none was logged yet."""
    client, experiment_id = _client(settings)
    if experiment_id is None:
        return EvaluationList(evaluations=[])
    # The experiment also holds insight scores and agent evaluations: these tools are about detection evaluations.
    found = client.search_runs([experiment_id], filter_string="tags.`insight.kind` = 'detection_evaluation'",
                               order_by=["attributes.start_time DESC"], max_results=limit)
    return EvaluationList(evaluations=[
        EvaluationSummary(
            run_id=run.info.run_id, started_at=dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC),
            labels=run.data.params.get("labels"), since=run.data.params.get("since"),
            until=run.data.params.get("until"), precision=run.data.metrics.get("precision"),
            recall=run.data.metrics.get("recall"), f1=run.data.metrics.get("f1"),
        )
        for run in found
    ])


def get_evaluation(settings: Settings, run_id: str) -> StoredEvaluation:
    """One evaluation whole, from its run's artifact; `latest` for the newest."""
    if run_id == "latest":
        newest = list_evaluations(settings, 1).evaluations
        if not newest:
            raise EvaluationError("no evaluation yet: start one with evaluate_detections")
        run_id = newest[0].run_id
    if not run_id.isalnum() or len(run_id) > 64:
        raise EvaluationError("run_id must be a run id from list_evaluations, or `latest`")
    client, experiment_id = _client(settings)
    try:
        run = client.get_run(run_id)
        if run.info.experiment_id != experiment_id:
            raise LookupError(run_id)
        import mlflow

        data = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/detection_evaluation.json")
    except Exception:
        raise EvaluationError(f"no evaluation {run_id!r}: list them with list_evaluations") from None
    return StoredEvaluation(run_id=run_id, evaluation=DetectionEvaluation.model_validate(data))
