"""What the LM benchmarks share: quiet libraries, the test LM (an engine double or its HTTP server), and case files.

Import it before anything of the suite's: it sets the environment MLflow and LiteLLM read when they are imported,
and puts tests/ on the path for the test LM server and its engine double.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
TESTS = str(Path(__file__).resolve().parents[1] / "tests")
sys.path.insert(0, TESTS)  # the test LM, its engine double, and the cases it knows how to answer

from lm_server import AdapterEngine  # noqa: E402

BENCH_API_KEY = "sk-bench-000000"


class SleepyEngine(AdapterEngine):
    """The test LM's answers, each after a fixed wait."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def complete(self, request: Any) -> Any:
        time.sleep(self.delay)
        return super().complete(request)


def sleepy_lm(delay: float) -> Any:
    """A DSPy LM over the engine double: the test LM's answers after `delay` seconds, no cache, no retries."""
    import dspy

    return dspy.LM("local/sleepy", engine=SleepyEngine(delay), cache=False, num_retries=0)


def http_lm_settings(url: str, model: str) -> dict[str, Any]:
    """Settings overrides that send every LM call to the test server at `url`, DSPy -> LiteLLM -> HTTP."""
    return {"lm_model": model, "lm_api_base": url, "lm_api_key": BENCH_API_KEY}


def lm_description(url: str | None) -> str:
    """How the LM is reached, for a benchmark's header line."""
    return f"HTTP LM server in its own process ({url}), DSPy -> LiteLLM" if url else "DSPy engine double"


def lm_server_process(delay: float) -> subprocess.Popen[str]:
    """The test LM server in a process of its own, as a real endpoint is: its work does not share our GIL."""
    code = ("import sys; from lm_server import LMServer; "
            f"server = LMServer('slow', slow_seconds={delay!r}).start(); print(server.url, flush=True); "
            "sys.stdin.read()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


def write_cases(path: Path, n: int, *, seed: int, case: Callable[[random.Random, int], dict[str, Any]]) -> None:
    """A JSONL dataset of `n` cases, `case(rng, i)` each, from a fixed seed: every run evaluates the same cases."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(n):
            handle.write(json.dumps(case(rng, i)) + "\n")
