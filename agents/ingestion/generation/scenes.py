"""What every labelled scenario works with: the actor picker and the scene that records events and labels."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from insight_mcp.agents.ingestion.generation.emitter import _Emitter
from insight_mcp.agents.ingestion.generation.labels import ScenarioLabel
from insight_mcp.agents.ingestion.generation.model import _Estate, _Principal
from insight_mcp.agents.ingestion.generation.noise import _near_miss_sp
from insight_mcp.agents.ingestion.generation.values import _ms


class _Picker:
    """Chooses scenario actors among ordinary principals, preferring ones not used by another scenario."""

    def __init__(self, e: _Estate, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[int] = set()
        near_miss = _near_miss_sp(e)
        if near_miss is not None:
            self.used.add(near_miss.pid)

    def pick(self, *pools: list[_Principal]) -> _Principal:
        for pool in pools:
            fresh = [p for p in pool if p.pid not in self.used]
            if fresh:
                chosen = self.rng.choice(fresh)
                self.used.add(chosen.pid)
                return chosen
        pool = next(p for p in pools if p)
        return self.rng.choice(pool)


@dataclass
class _Scene:
    """What a scenario function needs: the emitter, its own RNG, the shared picker, its event times."""

    em: _Emitter
    rng: random.Random
    picker: _Picker
    times: list[dt.datetime] = field(default_factory=list)

    @property
    def e(self) -> _Estate:
        return self.em.e

    def audit(self, ts: dt.datetime, who: _Principal | str | None, service: str, action: str,
              params: dict[str, str], **kw: Any) -> None:
        self.times.append(ts)
        self.em.audit(ts, who, service, action, params, **kw)

    def label(self, category: str, principal: str, ws: int | str, description: str) -> ScenarioLabel:
        workspace = ws if isinstance(ws, str) else self.e.workspaces[ws]
        return ScenarioLabel(scenario_id="", category=category, principal=principal, workspace_id=workspace,
                             first_seen=_ms(min(self.times)), last_seen=_ms(max(self.times)),
                             description=description)


def _non_admins(e: _Estate) -> list[_Principal]:
    return e.humans(admin=False)
