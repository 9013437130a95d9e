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
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
TESTS = str(Path(__file__).resolve().parents[1] / "tests")
sys.path.insert(0, TESTS)  # the test LM, its engine double, and the cases it knows how to answer

from lm_server import AdapterEngine, _summary  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from test_evaluate_agent import WORSE, summary_facts  # noqa: E402

from insight_mcp.agents.core.mlflow_store import open_client  # noqa: E402
from insight_mcp.agents.settings import Settings, load_settings  # noqa: E402

OPTIMIZERS = (("dspy", "bootstrap_few_shot"), ("dspy", "gepa"), ("textgrad", "tgd"), ("mlflow", "metaprompt"),
              ("mlflow", "gepa"))
GOOD = "counts exactly cite finding ids riskiest principal"


class SleepyEngine(AdapterEngine):
    """The test LM's answers, each after a fixed wait."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def complete(self, request: Any) -> Any:
        time.sleep(self.delay)
        return super().complete(request)


def write_cases(path: Path, n: int) -> None:
    rng = random.Random(3)
    with path.open("w") as handle:
        for i in range(n):
            facts = summary_facts(rng)
            expectations = {"expected_response": _summary(facts, GOOD)[0]} if i % 2 == 0 else {}
            handle.write(json.dumps({"inputs": {"facts": facts}, "expectations": expectations}) + "\n")


def champion_store(folder: Path) -> Path:
    """A migrated store whose production summary prompt is the vague version 2."""
    from insight_mcp.agents.core.prompts import PRODUCTION_ALIAS, SECURITY_SUMMARY, load_prompt

    settings = load_settings(home=folder)
    load_prompt(settings, SECURITY_SUMMARY)
    client = open_client(settings.tracking_uri)
    version = client.register_prompt(SECURITY_SUMMARY, WORSE, commit_message="the vague champion").version
    client.set_prompt_alias(SECURITY_SUMMARY, PRODUCTION_ALIAS, version)
    return folder / "mlflow.db"


def lm_server_process(delay: float) -> subprocess.Popen[str]:
    code = ("import sys; from lm_server import LMServer; "
            f"server = LMServer('slow', slow_seconds={delay!r}).start(); print(server.url, flush=True); "
            "sys.stdin.read()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


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

    import dspy

    from insight_mcp.agents.evaluation.runs import EvaluationError
    from insight_mcp.agents.optimization.model import OptimizationRequest
    from insight_mcp.agents.optimization.service import run_optimization

    tmp = Path(tempfile.mkdtemp(prefix="insight-bench-opt-"))
    dataset = tmp / "cases.jsonl"
    write_cases(dataset, opts.cases)
    template = champion_store(tmp / "template")
    warm_imports(tmp)
    server = lm_server_process(opts.delay) if opts.http else None
    url = server.stdout.readline().strip() if server is not None and server.stdout is not None else None
    how = f"HTTP LM server in its own process ({url}), DSPy -> LiteLLM" if url else "DSPy engine double"
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
                                               mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
            lm = None
            if url:
                settings = settings.model_copy(update={"lm_model": "openai/test-model", "lm_api_base": url,
                                                       "lm_api_key": SecretStr("sk-bench-000000")})
            else:
                lm = dspy.LM("local/sleepy", engine=SleepyEngine(opts.delay), cache=False, num_retries=0)
            request = OptimizationRequest(prompt="insight.security_summary", framework=framework,
                                          optimizer=optimizer, dataset=str(dataset), max_lm_calls=opts.budget,
                                          min_traces=10)
            started = time.perf_counter()
            try:
                result: Any = run_optimization(settings, request, lm=lm)
            except EvaluationError as exc:  # an optimizer that could not run says why: show it, go on
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
