"""Optimization cost: LM calls and wall time per optimizer on the same task and budget, with each one's held-out score.

The task: the security summary's `production` prompt is a vague one-liner (the champion), and every optimizer gets
the same cases (a JSONL dataset, half with a good expected answer), the same split, scorers (validity and
completeness), significance test and budget of LM calls. Each runs on its own copy of the same MLflow store, so all
start from the same champion. The LM is the test suite's (tests/lm_server.py): its answers depend on the prompt, so
a better prompt really scores higher, and it answers the optimizers' own reflection and rewrite requests. By default
it is a DSPy engine double that waits `--delay` seconds per call; `--http` serves it from a process of its own, so
every call goes DSPy -> LiteLLM -> HTTP. Libraries are imported before the clock starts (TextGrad and MLflow's GenAI
modules take seconds to import): the times are the optimizations' own.

    python benchmarks/bench_optimizers.py [--cases 40] [--budget 150] [--delay 0.02] [--http]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_lm_setup import http_lm_settings, lm_description, lm_server_process, sleepy_lm, write_cases
from lm_server import _summary
from test_evaluate_agent import WORSE, summary_facts

from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.settings import Settings, load_settings

OPTIMIZERS = (("dspy", "bootstrap_few_shot"), ("dspy", "gepa"), ("dspy", "miprov2"), ("textgrad", "tgd"),
              ("mlflow", "metaprompt"), ("mlflow", "gepa"))
GOOD = "counts exactly cite finding ids riskiest principal"


def summary_case(rng: random.Random, i: int) -> dict[str, Any]:
    """A security-summary case; every other one with a good expected answer."""
    facts = summary_facts(rng)
    expectations = {"expected_response": _summary(facts, GOOD)[0]} if i % 2 == 0 else {}
    return {"inputs": {"facts": facts}, "expectations": expectations}


def champion_store(folder: Path) -> Path:
    """A migrated store whose production summary prompt is the vague version 2."""
    from insight_mcp.agents.core.prompts import PRODUCTION_ALIAS, SECURITY_SUMMARY, load_prompt

    settings = load_settings(home=folder)
    load_prompt(settings, SECURITY_SUMMARY)
    client = open_client(settings.tracking_uri)
    version = client.register_prompt(SECURITY_SUMMARY, WORSE, commit_message="the vague champion").version
    client.set_prompt_alias(SECURITY_SUMMARY, PRODUCTION_ALIAS, version)
    return folder / "mlflow.db"


def warm_imports(home: Path) -> None:
    """Import what the optimizers import, so the clock measures optimizing."""
    os.environ.setdefault("TEXTGRAD_LOG_DIR", str(home / "textgrad-logs"))
    import dspy  # noqa: F401
    import litellm  # noqa: F401
    import mlflow.genai.optimize  # noqa: F401
    import textgrad  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--budget", type=int, default=150, help="max_lm_calls for every optimizer.")
    parser.add_argument("--delay", type=float, default=0.02, help="Seconds the LM takes per call.")
    parser.add_argument("--http", action="store_true", help="The OpenAI-compatible test server through LiteLLM.")
    opts = parser.parse_args()

    from insight_mcp.agents.core.errors import CallerError
    from insight_mcp.agents.optimization.model import OptimizationRequest
    from insight_mcp.agents.optimization.service import run_optimization

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-opt-"))
    dataset = tmp / "cases.jsonl"
    write_cases(dataset, opts.cases, seed=3, case=summary_case)
    template = champion_store(tmp / "template")
    warm_imports(tmp)
    server = lm_server_process(opts.delay) if opts.http else None
    url = server.stdout.readline().strip() if server is not None and server.stdout is not None else None
    how = lm_description(url)
    print(f"{opts.cases} cases, a budget of {opts.budget} LM calls, LM {opts.delay * 1000:g} ms a call through the "
          f"{how}\n")
    rows = []
    try:
        for framework, optimizer in OPTIMIZERS:
            home = tmp / f"{framework}-{optimizer}"
            home.mkdir()
            shutil.copy(template, home / "mlflow.db")
            # Named explicitly: MLflow's fluent API exports MLFLOW_TRACKING_URI, which load_settings would read.
            settings: Settings = load_settings(home=home, prompt_cache_seconds=0,
                                               mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
                                               **(http_lm_settings(url, "openai/test-model") if url else {}))
            lm = None if url else sleepy_lm(opts.delay)
            request = OptimizationRequest(prompt="insight.security_summary", framework=framework,
                                          optimizer=optimizer, dataset=str(dataset), max_lm_calls=opts.budget,
                                          min_traces=10)
            started = time.perf_counter()
            try:
                result: Any = run_optimization(settings, request, lm=lm)
            except CallerError as exc:  # an optimizer that could not run says why: show it, go on
                result = str(exc)
            rows.append((f"{framework} {optimizer}", result, time.perf_counter() - started))
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    header = f"{'optimizer':<24}{'LM calls':>9}{'search':>8}{'wall s':>8}{'champion':>10}{'candidate':>10}" \
             f"{'p-value':>9}  outcome"
    print(header)
    print("-" * len(header))
    for name, result, seconds in rows:
        if isinstance(result, str):
            print(f"{name:<24}{'-':>9}{'-':>8}{seconds:>8.2f}{'-':>10}{'-':>10}{'-':>9}  failed: {result[:200]}")
            continue
        search = result.lm_calls - 2 * result.held_out_cases if result.candidate_version else result.lm_calls
        p = f"{result.significance.p_value:.2g}" if result.significance else "-"
        baseline = f"{result.baseline_score:.3f}" if result.baseline_score is not None else "-"
        candidate = f"{result.candidate_score:.3f}" if result.candidate_score is not None else "-"
        print(f"{name:<24}{result.lm_calls:>9}{search:>8}{seconds:>8.2f}{baseline:>10}{candidate:>10}{p:>9}  "
              f"{result.outcome}")
    done = [result for _, result, _ in rows if not isinstance(result, str)]
    if done:
        print(f"\nEvery run kept {done[0].held_out_cases} held-out cases and spent 2 LM calls on each (champion and "
              "candidate): `search` is what the optimizer itself used.")
    for name, result, _ in rows:
        if not isinstance(result, str):
            print(f"- {name}: {result.optimizer_note}")


if __name__ == "__main__":
    main()
