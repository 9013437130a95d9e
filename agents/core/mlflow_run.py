"""One MLflow run with its traces, that turns itself off instead of failing the work it records.

Tracking is a record of the work, never a reason for it to fail: if the store cannot be reached at the start, or
fails half-way, the tracker says why and every later call is a no-op. mlflow is imported only when it is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from insight_mcp.agents.core.mlflow_store import UNREACHABLE_HINT, experiment_id, failure, open_client, unreachable
from insight_mcp.agents.core.mlflow_store import without_credentials as _clean

PROBE_SECONDS = 3.0


class TrackingOutcome(BaseModel):
    """Whether the work was recorded in MLflow, where, and how to look at it."""

    status: Literal["recorded", "skipped"]
    experiment: str
    tracking_uri: str
    run_id: str | None = None
    experiment_id: str | None = None
    trace_id: str | None = None
    reason: str | None = None
    ui_command: str | None = None


def probe(tracking_uri: str) -> str | None:
    """Why a tracking server cannot be used, in a few seconds rather than MLflow's minutes of retries."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        answer = httpx.get(tracking_uri.rstrip("/") + "/health", timeout=PROBE_SECONDS)
    except httpx.HTTPError as exc:
        return f"the MLflow tracking server {_clean(tracking_uri)} could not be reached ({type(exc).__name__}); " \
               f"{UNREACHABLE_HINT}"
    if answer.status_code >= 400:
        return f"the MLflow tracking server {_clean(tracking_uri)} answered {answer.status_code} to /health; " \
               f"{UNREACHABLE_HINT}"
    return None


def ui_command(tracking_uri: str, experiment: str | None) -> str:
    """The one command that shows what was recorded."""
    if tracking_uri.startswith("sqlite:///"):
        command = f"mlflow ui --backend-store-uri {tracking_uri}"
        return command if experiment is None else f"{command}  # then open experiment {experiment}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {_clean(tracking_uri).rstrip('/')}/#/experiments/{experiment or ''}"
    return f"open the MLflow experiments page of {_clean(tracking_uri)}"


class RunTracker:
    """An MLflow run in one experiment, with a root trace; a no-op with a reason when tracking is unavailable."""

    def __init__(self, tracking_uri: str, artifacts: Path, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.artifacts = artifacts
        self.experiment = experiment
        self.reason: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.trace_id: str | None = None
        self._client: Any = None
        self._mlflow: Any = None
        self._run: Any = None

    @property
    def active(self) -> bool:
        return self._client is not None and self.reason is None

    def _off(self, exc: BaseException | str) -> None:
        if self.reason is None:
            self.reason = exc if isinstance(exc, str) else unreachable(exc)

    def start(self, run_name: str, tags: dict[str, str]) -> None:
        """Open the store and the run; on any failure, stay off and remember why."""
        reason = probe(self.tracking_uri)
        if reason:
            self._off(reason)
            return
        try:
            import mlflow

            self._client = open_client(self.tracking_uri)
            self.experiment_id = experiment_id(self._client, self.experiment, self.artifacts / self.experiment)
            mlflow.set_tracking_uri(self.tracking_uri)  # where spans are exported; the run itself is explicit
            self._run = self._client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self._mlflow = mlflow
            self.run_id = self._run.info.run_id
        except Exception as exc:
            self._client = None
            self._off(exc)

    @contextlib.contextmanager
    def span(self, name: str, *, span_type: str = "CHAIN", attributes: dict[str, Any] | None = None,
             tags: dict[str, str] | None = None) -> Iterator[Any]:
        """A traced step; the first span opened is the run's root trace. Yields the span, or None when off."""
        if not self.active:
            yield None
            return
        mlflow = self._mlflow
        try:
            root: dict[str, Any] = {}
            if self.trace_id is None:  # the first span is the run's trace, in the run's experiment
                from mlflow.entities.trace_location import MlflowExperimentLocation

                root = {"run_id": self.run_id, "trace_destination": MlflowExperimentLocation(self.experiment_id)}
            manager = mlflow.start_span(name=name, span_type=span_type, attributes=attributes or {}, **root)
            span = manager.__enter__()
        except Exception as exc:
            self._off(exc)
            yield None
            return
        try:
            if self.trace_id is None:
                self.trace_id = span.trace_id
            if tags:
                with contextlib.suppress(Exception):
                    mlflow.update_current_trace(tags=tags)
            yield span
        except BaseException as exc:
            with contextlib.suppress(Exception):
                manager.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)

    def log(self, *, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None) -> None:
        """Params and metrics in one batch."""
        if not self.active:
            return
        from mlflow.entities import Metric, Param

        try:
            import time

            now = int(time.time() * 1000)
            self._client.log_batch(
                self.run_id,
                params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            )
        except Exception as exc:
            self._off(exc)

    def artifacts_from(self, paths: list[Path], folder: str) -> None:
        """Copy files into the run's artifacts."""
        if not self.active:
            return
        try:
            for path in paths:
                self._client.log_artifact(self.run_id, str(path), folder)
        except Exception as exc:
            self._off(exc)

    def finish(self, status: Literal["FINISHED", "FAILED"] = "FINISHED") -> TrackingOutcome:
        """End the run, flush its traces, and say what was recorded."""
        if self._mlflow is not None:
            try:
                self._client.set_terminated(self.run_id, status=status)
                self._mlflow.flush_trace_async_logging()
            except Exception as exc:
                self._off(exc)
        if self.reason is not None:
            return TrackingOutcome(status="skipped", experiment=self.experiment,
                                   tracking_uri=_clean(self.tracking_uri), reason=self.reason,
                                   run_id=self.run_id)
        return TrackingOutcome(status="recorded", experiment=self.experiment, tracking_uri=_clean(self.tracking_uri),
                               run_id=self.run_id, experiment_id=self.experiment_id, trace_id=self.trace_id,
                               ui_command=ui_command(self.tracking_uri, self.experiment))


__all__ = ["RunTracker", "TrackingOutcome", "failure", "probe", "ui_command"]
