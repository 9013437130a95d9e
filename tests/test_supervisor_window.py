"""The supervisor's inputs: the seed's agent_config.yaml as printed, the rolling window, the trip decision, and
incremental reads of traces from a real MLflow store that miss no late trace and count none twice."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import pytest

from insight_mcp.agents.core.mlflow_store import experiment_id, open_client
from insight_mcp.agents.supervision.config import ConfigError, MonitoredAgent, load_agent_config
from insight_mcp.supervisor.reader import read_since
from insight_mcp.supervisor.window import Outcome, RollingWindow, judge, wilson_lower

SEED_YAML = textwrap.dedent("""\
    # config/agent_config.yaml
    ondemand_optimization:
      enabled: true
      supervisory_agent:
        check_interval: 300  # seconds
        min_traces_for_trigger: 50
      triggers:
        error_rate_threshold: 0.05
        rating_threshold: 3.0
        response_time_threshold: 5.0
      mcp_server:
        endpoint: "http://localhost:9000"
    """)


def test_the_seed_file_works_as_printed(tmp_path: Path) -> None:
    path = tmp_path / "agent_config.yaml"
    path.write_text(SEED_YAML)
    config = load_agent_config(path).ondemand_optimization
    assert config.enabled and config.supervisory_agent.check_interval == 300
    assert config.supervisory_agent.min_traces_for_trigger == 50
    assert config.triggers.error_rate_threshold == 0.05 and config.triggers.response_time_threshold == 5.0
    assert config.mcp_server.optimization_url == "http://localhost:9000/optimization/mcp"
    assert [a.prompt for a in config.agents] == ["insight.security_summary", "insight.finding_explanation",
                                                 "insight.network_narrative"]
    path.write_text(SEED_YAML.replace('"http://localhost:9000"', '"http://localhost:9000/optimization/mcp"'))
    assert load_agent_config(path).ondemand_optimization.mcp_server.optimization_url.endswith(
        ":9000/optimization/mcp")


@pytest.mark.parametrize(("text", "message"), [
    ("ondemand_optimization:\n  triggers:\n    error_rate_threshold: 2\n", "error_rate_threshold"),
    ("ondemand_optimization:\n  mcp_server:\n    endpoint: localhost:9000\n", "http:// or https://"),
    ("- a\n", "mapping"),
    ("ondemand_optimization: [\n", "not valid YAML at line 2, column 1"),
    # a misspelt key would otherwise leave the seed's default in place without a word
    ("ondemand_optimization:\n  supervisory_agent:\n    check_intervall: 30\n",
     r"ondemand_optimization\.supervisory_agent\.check_intervall: Extra inputs are not permitted"),
])
def test_a_bad_file_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent_config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_agent_config(path)


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 100) == 0.0
    assert wilson_lower(3, 40) < 0.05 < 3 / 40  # three errors in forty calls are not a significant 5% breach
    assert wilson_lower(30, 200) > 0.1
    assert abs(wilson_lower(50, 100) - 0.4038) < 1e-3


def _outcomes(n: int, errors: int, *, start_ms: int = 1_000_000, duration_ms: float = 100.0,
              rating: float | None = None, prefix: str = "t") -> list[Outcome]:
    return [Outcome(trace_id=f"{prefix}{i}", timestamp_ms=start_ms + i * 1000, error=i < errors,
                    duration_ms=duration_ms, rating=rating) for i in range(n)]


def test_a_window_trips_only_with_volume_and_significance() -> None:
    config = load_agent_config(None).ondemand_optimization
    window = RollingWindow(3600)
    window.add(_outcomes(40, 20))
    verdict = judge(window.metrics(), config.triggers, config.supervisory_agent)
    assert not verdict.trips and "fewer than min_traces_for_trigger (50)" in verdict.reasons[0]

    window = RollingWindow(3600)
    window.add(_outcomes(60, 5))  # 8.3% observed, but the Wilson bound is about 3.6%
    verdict = judge(window.metrics(), config.triggers, config.supervisory_agent)
    assert not verdict.trips and verdict.metrics.error_rate == pytest.approx(5 / 60)
    window.add(_outcomes(60, 20, prefix="u", start_ms=2_000_000))
    verdict = judge(window.metrics(), config.triggers, config.supervisory_agent)
    assert verdict.trips and "error rate" in verdict.reasons[0] and "wilson" in verdict.test

    slow = RollingWindow(3600)
    slow.add(_outcomes(60, 0, duration_ms=7000, rating=2.0))
    reasons = judge(slow.metrics(), config.triggers, config.supervisory_agent).reasons
    assert any("average rating 2.00" in r for r in reasons) and any("response time 7.00 s" in r for r in reasons)


def test_reading_the_same_trace_twice_counts_it_once_and_old_ones_leave() -> None:
    window = RollingWindow(10)
    assert window.add(_outcomes(5, 1)) == 5
    assert window.add(_outcomes(5, 1)) == 0
    assert window.metrics().volume == 5
    window.trim(now_ms=1_000_000 + 12_000)
    assert window.metrics().volume == 3


@pytest.fixture
def store(tmp_path: Path, migrated_store: Path) -> str:
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _trace(mlflow, experiment: str, prompt: str, *, error: bool, start_ns: int) -> str:
    span = mlflow.start_span_no_context("narrative.part", experiment_id=experiment, start_time_ns=start_ns,
                                        tags={"insight.agent": "narrative", "insight.prompt": prompt})
    span.end(status="ERROR" if error else "OK", end_time_ns=start_ns + 50_000_000)
    return span.trace_id


def test_incremental_reads_miss_no_late_trace_and_read_only_what_is_new(store: str, tmp_path: Path) -> None:
    import mlflow

    client = open_client(store)
    mlflow.set_tracking_uri(store)
    experiment = experiment_id(client, "insight-narrative", tmp_path / "artifacts")
    agent = MonitoredAgent(name="summary", tags={"insight.prompt": "insight.security_summary"},
                           prompt="insight.security_summary")
    now_ns = time.time_ns()
    for i in range(30):
        _trace(mlflow, experiment, "insight.security_summary", error=i % 3 == 0, start_ns=now_ns + i * 1_000_000)
    _trace(mlflow, experiment, "insight.network_narrative", error=True, start_ns=now_ns)  # another agent's
    mlflow.flush_trace_async_logging()
    window = RollingWindow(3600)
    first = read_since(client, experiment, agent, now_ns // 1_000_000 - 1000)
    assert window.add(first) == 30
    watermark = max(o.timestamp_ms for o in first)

    # A trace that started before the watermark but arrived after the first read (late export).
    late = _trace(mlflow, experiment, "insight.security_summary", error=True, start_ns=now_ns + 500_000)
    fresh = _trace(mlflow, experiment, "insight.security_summary", error=False, start_ns=now_ns + 40_000_000)
    mlflow.flush_trace_async_logging()
    second = read_since(client, experiment, agent, watermark - 120_000)  # the overlap reaches back
    assert window.add(second) == 2 and {late, fresh} <= set(window.outcomes)
    metrics = window.metrics()
    assert metrics.volume == 32 and metrics.errors == 11
    assert metrics.median_latency_seconds == pytest.approx(0.05, abs=0.01)
    # Without the overlap, the late trace is never seen: the reason the overlap exists.
    assert late not in {o.trace_id for o in read_since(client, experiment, agent, watermark + 1)}
