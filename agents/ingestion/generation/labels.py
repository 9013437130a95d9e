"""Scenario labels: attack categories, the labels table and the label model the scenarios and API share."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

CATEGORIES: tuple[str, ...] = (
    "brute_force", "token_abuse", "ip_access_denied", "privilege_escalation", "defense_evasion",
    "data_exfiltration", "secrets_access", "supply_chain", "suspicious_network", "resource_abuse",
    "destructive_activity", "unauthorized_data_access", "session_hijacking", "posture",
)
LABELS_TABLE = "labels.scenarios"
LABELS_DDL = (
    "CREATE TABLE IF NOT EXISTS labels.scenarios (scenario_id VARCHAR, category VARCHAR, principal VARCHAR, "
    "workspace_id VARCHAR, first_seen TIMESTAMP, last_seen TIMESTAMP, description VARCHAR)"
)


class ScenarioLabel(BaseModel):
    """One labelled attack (or posture problem) woven into the generated estate."""

    scenario_id: str
    category: str
    principal: str
    workspace_id: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    description: str
