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
import random
import tempfile
from pathlib import Path
from typing import Any

import anyio
from bench_lm_setup import http_lm_settings, lm_description, lm_server_process, sleepy_lm, write_cases

from insight_mcp.agents.evaluation.agent_eval import evaluate_agent
from insight_mcp.agents.settings import load_settings

GOAL = 6.0
SEVERITIES = ("critical", "high", "medium", "low")


def summary_case(rng: random.Random, _: int) -> dict[str, Any]:
    """A security-summary case shaped like the narrative's facts."""
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
    return {"inputs": {"facts": facts}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.05, help="Seconds the LM takes per call.")
    parser.add_argument("--http", action="store_true", help="The OpenAI-compatible test server through LiteLLM.")
    opts = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-eval-"))
    dataset = tmp / "cases.jsonl"
    write_cases(dataset, opts.cases, seed=7, case=summary_case)
    server = lm_server_process(opts.delay) if opts.http else None
    try:
        if server is not None:
            url = server.stdout.readline().strip()
            settings = load_settings(home=tmp / "home", **http_lm_settings(url, "openai/gpt-4o-mini"))
            lm = None
        else:
            url = None
            settings = load_settings(home=tmp / "home")
            lm = sleepy_lm(opts.delay)
        how = lm_description(url)

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
