"""A benign-only estate: the generator's routine for 30 days with no attack woven in, through every rule and the
incident correlation. Goal (issue 11, section 5): no incident, and at most a few medium-or-above findings a day.

The measured days come after a warm-up of the same routine, so baseline rules have history, as in a deployment that
has been running for a while. By default one detection run covers the measured days (`insight-mcp detect --since
... --until ...`); `--daily` runs each day on its own, as a daily schedule would, and correlates the findings of all
runs (deduplicated by their stable ids). Prints the incidents, then medium+ findings per day and per rule.

The estate is `generate_workspace(..., attacks=False)` (`insight-mcp workspace generate --no-attacks`).

    python benchmarks/benign_estate.py [--days 30] [--warmup-days 14] [--users 200] [--events-per-day 20000]
                                       [--seed 7] [--daily] [--workspace PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from insight_mcp.agents.ingestion import generator
from insight_mcp.agents.security.engine import DetectionEngine
from insight_mcp.agents.security.incidents import Incident, correlate
from insight_mcp.agents.security.model import SEVERITY_RANK, Finding
from insight_mcp.agents.settings import DetectionSettings

END = dt.date(2026, 11, 1)


def generate_benign(path: Path, *, days: int, warmup_days: int, users: int, events_per_day: int, seed: int,
                    end: dt.date = END) -> generator.GenerationReport:
    """The routine estate only: `warmup_days` of history, then the `days` to measure, ending before `end`."""
    report = generator.generate_workspace(path, days=days + warmup_days, users=users, seed=seed,
                                          events_per_day=events_per_day, end=end, attacks=False)
    if report.scenarios:
        raise RuntimeError(f"attack scenarios were generated: {report.scenarios}")
    return report


@dataclass
class BenignMeasure:
    """What the rules and the correlation made of a benign estate."""

    days: list[dt.date]
    findings: list[Finding]
    incidents: list[Incident]
    seconds: float
    medium_per_day: dict[dt.date, int] = field(init=False)

    def __post_init__(self) -> None:
        medium = SEVERITY_RANK["medium"]
        counts = Counter(f.first_seen.date() for f in self.findings if SEVERITY_RANK[f.severity] >= medium)
        self.medium_per_day = {day: counts.get(day, 0) for day in self.days}

    @property
    def max_medium_per_day(self) -> int:
        return max(self.medium_per_day.values(), default=0)


def measure(path: Path, *, days: int, end: dt.date = END, daily: bool = False,
            settings: DetectionSettings | None = None) -> BenignMeasure:
    """Every rule over the last `days` days before `end` (one run, or one per day), then the correlation."""
    settings = settings or DetectionSettings()
    until = dt.datetime.combine(end, dt.time())
    since = until - dt.timedelta(days=days)
    started = time.perf_counter()
    engine = DetectionEngine(path, settings)
    try:
        windows = [(since + dt.timedelta(days=d), since + dt.timedelta(days=d + 1)) for d in range(days)] \
            if daily else [(since, until)]
        found: dict[str, Finding] = {}
        for start, stop in windows:
            run = anyio.run(lambda a=start, b=stop: engine.run(a, b))
            broken = [s.rule_id for s in run.stats if s.error]
            if broken:
                raise RuntimeError(f"rules failed: {broken}")
            found.update({f.id: f for f in run.findings})
        rules = {rule_id: compiled.rule for rule_id, compiled in engine.rules.items()}
    finally:
        engine.close()
    findings = sorted(found.values(), key=lambda f: (f.first_seen, f.rule_id))
    incidents = correlate(findings, rules, settings.incidents)
    return BenignMeasure(days=[(since + dt.timedelta(days=d)).date() for d in range(days)], findings=findings,
                         incidents=incidents, seconds=time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30, help="Days measured.")
    parser.add_argument("--warmup-days", type=int, default=14, help="Days of routine before them, for baselines.")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--events-per-day", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--daily", action="store_true", help="One detection run per day instead of one in all.")
    parser.add_argument("--workspace", type=Path, help="Reuse a benign workspace made by an earlier run.")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = opts.workspace or Path(scratch) / "benign.duckdb"
        if opts.workspace is None or not path.exists():
            report = generate_benign(path, days=opts.days, warmup_days=opts.warmup_days, users=opts.users,
                                     events_per_day=opts.events_per_day, seed=opts.seed)
            print(f"generated {report.rows['system.access.audit']:,} audit events ({opts.warmup_days} warm-up + "
                  f"{opts.days} measured days, {opts.users} users) in {report.seconds:.1f} s; no attack scenario")
        result = measure(path, days=opts.days, daily=opts.daily)

    mode = "one run per day" if opts.daily else "one run"
    print(f"{len(result.findings)} findings in {result.seconds:.1f} s ({mode})")
    print(f"incidents: {len(result.incidents)}")
    for incident in result.incidents:
        print(f"  {incident.entity}: score {incident.score}, {len(incident.findings)} findings, "
              f"rules {incident.rules}")
    per_day = result.medium_per_day
    total = sum(per_day.values())
    print(f"medium+ findings: {total} in {len(per_day)} days, at most {result.max_medium_per_day} a day, "
          f"{total / max(len(per_day), 1):.2f} a day on average")
    print("  per day: " + ", ".join(f"{day:%m-%d} {n}" for day, n in per_day.items()))
    by_rule = Counter((f.rule_id, f.severity) for f in result.findings
                      if SEVERITY_RANK[f.severity] >= SEVERITY_RANK["medium"])
    for (rule, severity), n in by_rule.most_common():
        print(f"  {rule} ({severity}): {n}")


if __name__ == "__main__":
    main()
