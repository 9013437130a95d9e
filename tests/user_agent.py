"""A user's own agent, as a customer would run one: a support bot with its prompt in the registry and its traces in its
own experiment, tagged `app=support-bot`, rated by the people it answered.

Its production prompt is vague, so most answers are vague and rated poorly. A few answers (written by a person, or
by an earlier prompt) quote the customer's order number; those are rated 5. The test LM (`lm_server.py`) answers
the bot's `response` field the good way only when the instructions ask it to quote the order number, or an example
answer teaches it: an optimization that learns from the well-rated answers really does better.

Traces are written by a fresh process, as the agent's own process would, so no test's tracer state leaks in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROMPT = "acme.support_reply"
EXPERIMENT = "acme-support"
TAGS = {"app": "support-bot"}
VAGUE_TEMPLATE = "Reply to the customer's support message.\n\nMessage: {{message}}"
VAGUE = "Thanks for reaching out, we are looking into it."


def good_answer(order: int) -> str:
    """The answer people rate 5."""
    return f"Order {order}: we have logged your request and will reply within one business day."


def message(order: int, i: int) -> str:
    problems = ("arrived damaged", "has not arrived", "was charged twice", "is missing an item")
    return f"Hello, my order {order} {problems[i % len(problems)]}. Can you help?"


SCRIPT = """
import json, sys, time
import mlflow
from mlflow.entities import AssessmentSource, Feedback
from mlflow.tracing.client import TracingClient
from insight_mcp.agents.core.mlflow_store import experiment_id, open_client
uri, artifacts, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = open_client(uri)
mlflow.set_tracking_uri(uri)
experiment = experiment_id(client, spec["experiment"], __import__("pathlib").Path(artifacts) / spec["experiment"])
if spec.get("register"):
    version = client.register_prompt(spec["prompt"], spec["register"], commit_message="the bot's first prompt")
    client.set_prompt_alias(spec["prompt"], "production", str(version.version))
now = time.time_ns()
ids = []
for i, call in enumerate(spec["calls"]):
    span = mlflow.start_span_no_context("support_bot.reply", span_type="CHAIN", inputs={"message": call["message"]},
                                        experiment_id=experiment, tags=spec["tags"],
                                        start_time_ns=now + i * 1_000_000)
    span.set_outputs(call["answer"])
    span.end(status="ERROR" if call.get("error") else "OK", end_time_ns=now + i * 1_000_000 + 300_000_000)
    ids.append((str(span.trace_id), call.get("rating")))
mlflow.flush_trace_async_logging(terminate=True)
deadline = time.monotonic() + 120
n = len(spec["calls"])
while len(client.search_traces(locations=[experiment], max_results=n + 1)) < n and time.monotonic() < deadline:
    time.sleep(0.2)
tracing = TracingClient(tracking_uri=uri)
for trace_id, rating in ids:
    if rating is not None:
        tracing.log_assessment(trace_id, Feedback(name="rating", value=rating, rationale="from the customer",
                                                  source=AssessmentSource(source_type="HUMAN", source_id="cx")))
"""


def support_calls(n: int, *, good_every: int = 3, start: int = 4400) -> list[dict[str, object]]:
    """n calls of the bot: every `good_every`-th answered well and rated 5, the rest vague and rated 1 or 2."""
    calls: list[dict[str, object]] = []
    for i in range(n):
        order = start + i * 7
        good = i % good_every == 0
        calls.append({"message": message(order, i), "answer": good_answer(order) if good else VAGUE,
                      "rating": 5 if good else 1 + i % 2})
    return calls


def write_support_traces(tracking_uri: str, artifacts: Path, calls: list[dict[str, object]], *,
                         register: str | None = None, experiment: str = EXPERIMENT,
                         tags: dict[str, str] | None = None) -> None:
    """The bot's traced calls (and, with `register`, its prompt's first version as @production), rated."""
    spec = {"experiment": experiment, "tags": tags or TAGS, "calls": calls, "prompt": PROMPT, "register": register}
    done = subprocess.run([sys.executable, "-c", SCRIPT, tracking_uri, str(artifacts), json.dumps(spec)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
