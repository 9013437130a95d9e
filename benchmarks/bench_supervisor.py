"""The supervisor: what one check costs as the tracking store grows, and how fast a real slip reaches the server.

1. Check cost. Two real SQLite MLflow stores hold 10,000 and 200,000 traces of the monitored agent, in its
   experiment and with its tags, all older than the window (a reader that did not bound its query by time would scan
   them). After a warm-up check, each round writes 100 new traces through MLflow's tracing API to each store and
   times a check of each, in turns (each store first in half the rounds), then four more checks, which read the
   same 100 traces again (they are within the overlap) as the daemon's next checks would. The medians of all
   checks are compared; the first checks alone and the check's own read_since (timed apart: it is the part that
   could grow with the store) are printed too. Each round's traces start later than the previous round's by more
   than the read overlap, as if that much time had passed, so every round's first check reads exactly 100 new
   traces. Goal: large store <= 1.3x small store. The stores are seeded in bulk SQL from traces MLflow itself wrote
   (see bench_supervisor_seed.py) and cached under --cache.
2. Reaction time. A real supervisor loop (`run_forever` in a thread, a short check_interval) against a real
   `insight-mcp serve --server optimization`, through the real McpLauncher. The window holds 100 traces whose error
   rate sits just under the significance bar; then, at a random point of the check cycle, the one error trace that
   makes it significant is written. Measured from the moment that trace is in the store (polled; MLflow's
   asynchronous export, whose OpenTelemetry batch processor holds a lone span up to 5 s, is printed apart and not
   counted) to the optimization job's record on the server (`created_at`), which is when the optimize_prompt call
   reached it. Goal: at most check_interval + 1 s. No LM is configured, so the job itself fails at once, which does
   not matter here.

Prints the ratio and the reaction times with PASS or MISSED; exits non-zero only on an error.

    python benchmarks/bench_supervisor.py [--small 10000] [--large 200000] [--rounds 15] [--interval 2] [--trips 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

from bench_supervisor_seed import SPAN_NAME, TAGS, empty_store, indexes, seeded_store, write_traces

from insight_mcp.agents.logs import configure_logging
from insight_mcp.agents.settings import Settings, load_settings
from insight_mcp.agents.supervision.config import (
    McpServer,
    MonitoredAgent,
    OnDemandOptimization,
    SupervisoryAgent,
    default_agents,
)
from insight_mcp.clients.demo import free_port
from insight_mcp.supervisor import daemon
from insight_mcp.supervisor.daemon import AgentCheck, JobView, Supervisor, run_forever
from insight_mcp.supervisor.launcher import McpLauncher
from insight_mcp.supervisor.window import Verdict, wilson_lower

CHECK_GOAL = 1.3
RECHECKS = 4
REACTION_SLACK = 1.0  # seconds over one check_interval
AGENT = default_agents()[0]  # security_summary: traces tagged insight.prompt=insight.security_summary


def settings_for(home: Path) -> Settings:
    """Settings of one supervisor home: its own state store and tracking store, whatever the environment says."""
    return load_settings(home=home, mlflow_tracking_uri=None, agent_config=None)


class NoLauncher:
    """The check-cost runs must not trip: a trip there is a bug in the benchmark."""

    def start(self, agent: MonitoredAgent, verdict: Verdict, claim: str) -> str:
        raise RuntimeError(f"the check-cost run tripped: {verdict.reasons}")

    def get(self, job_id: str) -> JobView:
        raise RuntimeError("no job was started")

    def find_since(self, prompt: str, since: float) -> JobView | None:
        return None


# --- 1. check cost --------------------------------------------------------------------------------------------


class TimedReads:
    """The supervisor's own reader, timed: the part of a check that could grow with the store."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.read = daemon.read_since

    def __call__(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.read(*args)
        finally:
            self.seconds.append(time.perf_counter() - started)


@dataclass
class Samples:
    """Seconds, per store size: the first check after each burst (100 new traces), every check (the first and the
    re-checks, which read the same 100 again within the overlap), and every check's read_since."""

    first: list[float] = field(default_factory=list)
    checks: list[float] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)


def check_cost(cache: Path, scratch: Path, sizes: list[int], rounds: int) -> dict[int, Samples]:
    """Timed checks of a supervisor on each store size, in turns."""
    config = OnDemandOptimization(agents=[AGENT])
    spacing_s = config.supervisory_agent.overlap_seconds + 30
    if (rounds + 2) * spacing_s >= config.supervisory_agent.window_seconds:
        raise SystemExit(f"--rounds {rounds} does not fit in one window; use fewer")
    now_ms = int(time.time() * 1000)
    older_than = now_ms - int((config.supervisory_agent.window_seconds + 600) * 1000)
    supervisors: dict[int, Supervisor] = {}
    for n in sizes:
        source = seeded_store(cache, n, older_than_ms=older_than)
        home = scratch / f"check-{n}"
        home.mkdir()
        shutil.copy(source, home / "mlflow.db")
        missing = indexes(empty_store(cache)) - indexes(home / "mlflow.db")
        assert not missing, f"the seeded store lacks MLflow's indexes {sorted(missing)}"
        supervisors[n] = Supervisor(config, settings_for(home), NoLauncher())
    # Every round's traces start `spacing_s` after the last's: more than the overlap, all inside the window.
    first_ns = (now_ms - int((rounds + 1) * spacing_s * 1000) - 60_000) * 1_000_000

    def burst(n: int, turn: int) -> None:
        settings = supervisors[n].settings
        write_traces(settings.tracking_uri, settings.mlflow_artifacts, 100, 1,
                     start_ns=first_ns + turn * int(spacing_s * 1e9))

    for n in sizes:
        burst(n, 0)
        warm = single(supervisors[n].check_once())
        assert warm.new_traces == 100 and not warm.verdict.trips, warm
    samples = {n: Samples() for n in sizes}
    timed = TimedReads()
    daemon.read_since = timed  # type: ignore[assignment]  # the benchmark's own instrument
    try:
        for turn in range(1, rounds + 1):
            for n in sizes if turn % 2 else sizes[::-1]:  # each store goes first in half the rounds
                burst(n, turn)
                timed.seconds.clear()
                for again in range(1 + RECHECKS):
                    started = time.perf_counter()
                    checked = single(supervisors[n].check_once())
                    samples[n].checks.append(time.perf_counter() - started)
                    assert checked.new_traces == (0 if again else 100), checked
                    assert checked.verdict.metrics.volume == 100 * (turn + 1) and not checked.verdict.trips, checked
                samples[n].first.append(samples[n].checks[-1 - RECHECKS])
                samples[n].reads += timed.seconds
    finally:
        daemon.read_since = timed.read
    return samples


def single(checks: list[AgentCheck]) -> AgentCheck:
    (only,) = checks
    return only


# --- 2. reaction time -----------------------------------------------------------------------------------------


class TimedLauncher(McpLauncher):
    """The real launcher, noting when the supervisor called it and when the server answered."""

    def __init__(self, config: OnDemandOptimization, settings: Settings) -> None:
        super().__init__(config, settings)
        self.called: float | None = None
        self.answered: float | None = None
        self.job_id: str | None = None
        self.started = threading.Event()

    def start(self, agent: MonitoredAgent, verdict: Verdict, claim: str) -> str:
        self.called = time.time()
        self.job_id = super().start(agent, verdict, claim)
        self.answered = time.time()
        self.started.set()
        return self.job_id


class Checks:
    """The loop's observer: each check's window volume, for knowing when the steady traffic has been read."""

    def __init__(self) -> None:
        self.volumes: list[int] = []
        self.errors: list[str] = []

    def checked(self, checks: list[AgentCheck]) -> None:
        self.volumes.append(single(checks).verdict.metrics.volume)

    def failed(self, exc: BaseException) -> None:
        self.errors.append(repr(exc)[:300])


def start_server(cache: Path, scratch: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`insight-mcp serve --server optimization` on a free port, on a copy of the migrated store (no migration)."""
    home = scratch / "serve"
    home.mkdir()
    shutil.copy(empty_store(cache), home / "mlflow.db")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHT_") and k != "MLFLOW_TRACKING_URI"}
    env |= {"INSIGHT_HOME": str(home), "INSIGHT_TRACING__ENABLED": "false", "INSIGHT_LOG_LEVEL": "warning"}
    exe = Path(sys.executable).with_name("insight-mcp")
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen([str(exe), "serve", "--server", "optimization", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: {(home / 'serve.log').read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base, home
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("serve did not answer /health within 60 s")


def job_created(server_home: Path, job_id: str) -> float:
    """When the server recorded the job: the optimize_prompt call had reached it."""
    conn = sqlite3.connect(server_home / "state.db")
    try:
        (created,) = conn.execute("SELECT created_at FROM jobs WHERE id = ? AND kind = 'prompt_optimization'",
                                  (job_id,)).fetchone()
    finally:
        conn.close()
    return dt.datetime.fromisoformat(created).replace(tzinfo=dt.UTC).timestamp()


def landed(database: Path, trace_id: str) -> float:
    """When MLflow's asynchronous export put the trace in the store (polled; flushing would add its own second)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        try:
            if conn.execute("SELECT 1 FROM trace_info WHERE request_id = ?", (trace_id,)).fetchone():
                return time.time()
        finally:
            conn.close()
        time.sleep(0.01)
    raise SystemExit(f"trace {trace_id} did not reach the store within 30 s")


def steady_errors(volume: int, threshold: float, z: float) -> int:
    """The most errors in `volume` traces that stay under the bar, such that one more error trace crosses it."""
    errors = max(k for k in range(volume) if wilson_lower(k, volume, z) <= threshold)
    assert wilson_lower(errors + 1, volume + 1, z) > threshold
    return errors


def one_reaction(cache: Path, scratch: Path, base: str, server_home: Path, interval: float, turn: int
                 ) -> dict[str, float]:
    """One slip, from the trace that makes it significant to the server's job record, in seconds."""
    import mlflow

    home = scratch / f"react-{turn}"
    home.mkdir()
    shutil.copy(empty_store(cache), home / "mlflow.db")
    settings = settings_for(home)
    config = OnDemandOptimization(agents=[AGENT], mcp_server=McpServer(endpoint=base),
                                  supervisory_agent=SupervisoryAgent(check_interval=interval))
    sup = config.supervisory_agent
    errors = steady_errors(100, config.triggers.error_rate_threshold, sup.confidence_z)
    experiment = write_traces(settings.tracking_uri, settings.mlflow_artifacts, 100, errors)
    launcher = TimedLauncher(config, settings)
    supervisor = Supervisor(config, settings, launcher)
    observed = Checks()
    stop = threading.Event()
    loop = threading.Thread(target=run_forever, args=(supervisor,), daemon=True,
                            kwargs={"stop": stop.is_set, "observer": observed})
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while 100 not in observed.volumes:  # the steady traffic is in the window and did not trip
            if time.monotonic() > deadline or launcher.started.is_set():
                raise SystemExit(f"the steady traffic was not read, or tripped: {observed.volumes} {observed.errors}")
            time.sleep(0.05)
        time.sleep(random.uniform(0, interval))  # a random point of the check cycle
        end_ns = time.time_ns()
        span = mlflow.start_span_no_context(SPAN_NAME, experiment_id=experiment, start_time_ns=end_ns - 20_000_000,
                                            tags=TAGS)
        span.end(status="ERROR", end_time_ns=end_ns)
        ended = time.time()
        written = landed(home / "mlflow.db", span.trace_id)
        if not launcher.started.wait(interval * 3 + 30):
            raise SystemExit(f"no trip within {interval * 3 + 30:.0f} s: {observed.volumes} {observed.errors}")
    finally:
        stop.set()
        loop.join(timeout=60)
    assert launcher.called is not None and launcher.answered is not None and launcher.job_id is not None
    reached = job_created(server_home, launcher.job_id)
    return {"export": written - ended, "called": launcher.called - written, "reached": reached - written,
            "answered": launcher.answered - written}


def reaction(cache: Path, scratch: Path, interval: float, trips: int) -> list[dict[str, float]]:
    proc, base, server_home = start_server(cache, scratch)
    try:
        return [one_reaction(cache, scratch, base, server_home, interval, turn) for turn in range(trips)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10_000, help="Traces already in the smaller store.")
    parser.add_argument("--large", type=int, default=200_000, help="Traces already in the larger store.")
    parser.add_argument("--rounds", type=int, default=15,
                        help="Bursts of 100 new traces per store, each checked 1 + 4 times.")
    parser.add_argument("--interval", type=float, default=2.0, help="check_interval of the reaction runs.")
    parser.add_argument("--trips", type=int, default=5, help="Reaction runs.")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "insight-bench-supervisor",
                        help="Where seeded stores are kept between runs (about 1 GB for 200,000 traces).")
    opts = parser.parse_args()
    configure_logging("warning")

    with tempfile.TemporaryDirectory(prefix="insight-bench-supervisor-") as tmp:
        scratch = Path(tmp)
        samples = check_cost(opts.cache, scratch, [opts.small, opts.large], opts.rounds)
        for n in (opts.small, opts.large):
            got = samples[n]
            print(f"check, {n:,} traces in the store: first after 100 new traces: best {ms(min(got.first))}, median "
                  f"{ms(statistics.median(got.first))}; all {len(got.checks)} checks: best {ms(min(got.checks))}, "
                  f"median {ms(statistics.median(got.checks))}; their read_since: median "
                  f"{ms(statistics.median(got.reads))}")
        small, large = samples[opts.small], samples[opts.large]
        ratio = statistics.median(large.checks) / statistics.median(small.checks)
        print(f"check cost ratio {opts.large:,} / {opts.small:,} (medians of all checks): {ratio:.2f}x "
              f"(goal <= {CHECK_GOAL}x) {verdict(ratio <= CHECK_GOAL)}")
        print(f"  also: first checks, medians {statistics.median(large.first) / statistics.median(small.first):.2f}x"
              f", best {min(large.first) / min(small.first):.2f}x; read_since alone, medians "
              f"{statistics.median(large.reads) / statistics.median(small.reads):.2f}x")

        runs = reaction(opts.cache, scratch, opts.interval, opts.trips)
        goal = opts.interval + REACTION_SLACK
        for key, what in (("export", "span ended -> trace in the store (MLflow's async export, not counted)"),
                          ("called", "trace in the store -> launcher.start called"),
                          ("reached", "trace in the store -> job recorded by the server"),
                          ("answered", "trace in the store -> optimize_prompt answered")):
            values = [r[key] for r in runs]
            print(f"  {what:70s} median {statistics.median(values):5.2f} s, max {max(values):5.2f} s")
        reached = [r["reached"] for r in runs]
        print(f"reaction, error trace in the store -> optimize_prompt reaching the server, check_interval "
              f"{opts.interval:g} s, {len(runs)} trips: median {statistics.median(reached):.2f} s, max "
              f"{max(reached):.2f} s (goal <= {goal:g} s) {verdict(max(reached) <= goal)}")
    print(f"measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
