"""Weaving the labelled attack scenarios into the estate, in the fixed order that gives their ids."""

from __future__ import annotations

from collections.abc import Callable

from insight_mcp.agents.ingestion.generation.emitter import _Emitter
from insight_mcp.agents.ingestion.generation.identity_scenarios import (
    _sc_brute_force_user,
    _sc_defense_evasion,
    _sc_ip_access_denied,
    _sc_password_spray,
    _sc_privilege_escalation,
    _sc_secrets_access,
    _sc_session_hijacking,
    _sc_token_abuse,
    _sc_unauthorized_access,
)
from insight_mcp.agents.ingestion.generation.labels import ScenarioLabel
from insight_mcp.agents.ingestion.generation.scenes import _Picker, _Scene
from insight_mcp.agents.ingestion.generation.workload_scenarios import (
    _sc_data_exfiltration,
    _sc_destructive,
    _sc_posture,
    _sc_resource_abuse,
    _sc_supply_chain,
    _sc_suspicious_network,
)


def _add_scenarios(em: _Emitter) -> list[ScenarioLabel]:
    """Weave the labelled attacks into the estate; every actor is an ordinary generated principal."""
    e = em.e
    picker = _Picker(e, e.rng("scenario-actors"))
    labels: list[ScenarioLabel] = []
    for func in SCENARIOS:
        scene = _Scene(em=em, rng=e.rng(f"scenario:{func.__name__}"), picker=picker)
        for label in func(scene):
            scenario_id = f"S{len(labels) + 1:02d}-{label.category}"
            labels.append(label.model_copy(update={"scenario_id": scenario_id}))
    return labels


SCENARIOS: tuple[Callable[[_Scene], list[ScenarioLabel]], ...] = (
    _sc_brute_force_user, _sc_password_spray, _sc_token_abuse, _sc_session_hijacking, _sc_secrets_access,
    _sc_data_exfiltration, _sc_privilege_escalation, _sc_defense_evasion, _sc_supply_chain,
    _sc_ip_access_denied, _sc_suspicious_network, _sc_resource_abuse, _sc_destructive,
    _sc_unauthorized_access, _sc_posture,
)
