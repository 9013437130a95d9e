"""evaluate_agent throughput: 8 workers against 1, with an LM that takes a fixed 50 ms a call.

By default the LM is a DSPy engine double that sleeps, then answers as the test LM does (tests/lm_server.py): this
measures evaluate_agent's own pool (prompt formatting, answer parsing, scoring) around a fixed LM latency. `--http`
runs the test suite's OpenAI-compatible server in its `slow` mode in a process of its own, so every case goes the
production way, DSPy -> LiteLLM -> HTTP. There a case costs about 14 ms of CPU under the GIL (LiteLLM about 10 of
them), which caps any number of threads near (50 + 14) / 14 = 4.5x at a 50 ms latency; at real LM latencies (try
`--delay 0.25`: about 7.5x) that cost disappears in the wait. The same JSONL dataset of security-summary cases is
evaluated with 1 worker, then with 8, in this one run; the ratio of their cases per second is printed against the
goal (>= 6x).

    python benchmarks/bench_evaluate_agent.py [--cases 200] [--workers 8] [--delay 0.05]
    python benchmarks/bench_evaluate_agent.py --http
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test LM server and its engine double

import anyio
from lm_server import AdapterEngine

from insight_mcp.agents.evaluation.agent_eval import evaluate_agent
from insight_mcp.agents.settings import load_settings

GOAL = 6.0
TESTS = str(Path(__file__).resolve().parents[1] / "tests")
SEVERITIES = ("critical", "high", "medium", "low")


def write_cases(path: Path, n: int) -> None:
    """Security-summary cases shaped like the narrative's facts."""
    rng = random.Random(7)
    with path.open("w") as handle:
        for _ in range(n):
            findings = [{"id": "f-" + hashlib.sha256(str(rng.random()).encode()).hexdigest()[:20],
                         "severity": rng.choice(SEVERITIES), "category": "brute_force", "title": "Sign-in failures",
                         "principal": f"user{rng.randint(1, 5)}@corp.example", "workspace_id": "1",
                         "event_count": rng.randint(1, 40), "first_seen": "2026-11-14T01:00:00",
                         "last_seen": "2026-11-14T02:00:00", "rule_id": "brute_force_user"}
                        for _ in range(rng.randint(1, 9))]
            counts = {"total": len(findings), "by_category": {"brute_force": len(findings)},
                      "by_severity": {s: sum(f["severity"] == s for f in findings) for s in (*SEVERITIES, "info")}}
            facts = {"window": {"since": "2026-11-14T00:00:00", "until": "2026-11-21T00:00:00"}, "counts": counts,
                     "failed_analyses": [], "riskiest_principals": [], "findings": findings, "findings_not_listed": 0}
            handle.write(json.dumps({"inputs": {"facts": facts}}) + "\n")


class SleepyEngine(AdapterEngine):
    """The test LM's answers, each after a fixed wait."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def complete(self, request: Any) -> Any:
        time.sleep(self.delay)
        return super().complete(request)


def lm_server_process(delay: float) -> subprocess.Popen[str]:
    """The test LM server in a process of its own, as a real endpoint is: its work does not share our GIL."""
    code = ("import sys, threading; from lm_server import LMServer; "
            f"server = LMServer('slow', slow_seconds={delay!r}).start(); print(server.url, flush=True); "
            "sys.stdin.read()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.05, help="Seconds the LM takes per call.")
    parser.add_argument("--http", action="store_true", help="The OpenAI-compatible test server through LiteLLM.")
    opts = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-eval-"))
    dataset = tmp / "cases.jsonl"
    write_cases(dataset, opts.cases)
    server = lm_server_process(opts.delay) if opts.http else None
    try:
        if server is not None:
            url = server.stdout.readline().strip()
            settings = load_settings(home=tmp / "home", lm_model="openai/gpt-4o-mini", lm_api_base=url,
                                     lm_api_key="sk-bench-000000")
            lm = None
            how = f"HTTP LM server in its own process ({url}), DSPy -> LiteLLM"
        else:
            import dspy

            settings = load_settings(home=tmp / "home")
            lm = dspy.LM("local/sleepy", engine=SleepyEngine(opts.delay), cache=False, num_retries=0)
            how = "DSPy engine double"

        def run(workers: int, limit: int | None = None) -> Any:
            return anyio.run(lambda: evaluate_agent(settings, prompt="insight.security_summary@production",
                                                    dataset=str(dataset), workers=workers, lm=lm, limit=limit,
                                                    scorers=["validity", "completeness"]))

        print(f"{opts.cases} cases, LM {opts.delay * 1000:g} ms a call through the {how}")
        run(opts.workers, limit=2 * opts.workers)  # warm: imports, prompt registration, connections
        results = {}
        for workers in (1, opts.workers):
            result = run(workers)
            if result.prediction_failures:
                raise SystemExit(f"{result.prediction_failures} cases failed: {result.failure_examples}")
            results[workers] = result
            print(f"{workers} worker{'s' if workers > 1 else ' '}: {result.seconds:6.2f} s, "
                  f"{result.cases_per_second:7.1f} cases/s (score {result.score})")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    ratio = results[opts.workers].cases_per_second / results[1].cases_per_second
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"throughput {opts.workers} workers / 1 worker: {ratio:.2f}x (goal >= {GOAL:g}x) {verdict}")


if __name__ == "__main__":
    main()
