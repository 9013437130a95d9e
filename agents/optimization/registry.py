"""The prompt store's operations: list a prompt's versions, register a candidate, promote it, roll back.

Every write tags the version first and moves the alias last. An alias move is one write, so a process stopped at
any point leaves either the old alias or the new one, never half a promotion: a candidate registered by an
optimization that was then interrupted is just a version nobody points at (or one under `candidate`). Versions an
optimization registers carry the MLflow run that made it (`insight.optimization_run_id`); a promotion records the
version it replaced (`insight.promoted_from`), which is what a rollback goes back to.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from insight_mcp.agents.core.mlflow_store import open_client, store_lock, unreachable
from insight_mcp.agents.core.prompts import PRODUCTION_ALIAS, PROMPTS, SOURCE_TAG, load_prompt
from insight_mcp.agents.optimization.model import (
    CANDIDATE_ALIAS,
    AliasMove,
    OptimizationError,
    PromptVersionInfo,
    PromptVersions,
)
from insight_mcp.agents.settings import Settings

SOURCE_OPTIMIZATION = "optimization"
RUN_TAG = "insight.optimization_run_id"
PARENT_TAG = "insight.parent_version"
PROMOTED_FROM_TAG = "insight.promoted_from"
PROMOTED_AT_TAG = "insight.promoted_at"
PROMOTED_BY_TAG = "insight.promoted_by"
ROLLED_BACK_AT_TAG = "insight.rolled_back_at"
REPLACED_BY_TAG = "insight.replaced_by"  # an optimizer's own registration we had to fix: the version that did
MAX_VERSIONS = 200
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,9}$")
_LOCK = "prompt-aliases"  # not "prompts": that one is held while prompts.py registers a default


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _client(settings: Settings) -> Any:
    try:
        return open_client(settings.tracking_uri)
    except Exception as exc:
        raise OptimizationError(unreachable(exc)) from None


def checked_name(settings: Settings, name: str) -> str:
    """A prompt name that the registry holds; our own prompts are registered from their defaults on first use."""
    name = name.strip()
    if not _NAME.match(name):
        raise OptimizationError(f"{name[:80]!r} is not a prompt name: letters, digits and _ . - only")
    if name in PROMPTS:
        loaded = load_prompt(settings, name)  # registers the default and points production at it, once
        if loaded.builtin:
            raise OptimizationError(f"{name} could not be read from the prompt registry: {loaded.error}")
        return name
    try:
        found = _client(settings).get_prompt(name)
    except OptimizationError:
        raise
    except Exception as exc:
        raise OptimizationError(unreachable(exc)) from None
    if found is None:
        raise OptimizationError(f"no prompt named {name!r} in the registry; the suite's own prompts are "
                                f"{', '.join(PROMPTS)}")
    return name


def alias_version(settings: Settings, name: str, alias: str) -> str | None:
    """The version an alias points at, read past every cache; None when the alias is not set."""
    try:
        found = _client(settings).load_prompt(f"prompts:/{name}@{alias}", allow_missing=True, cache_ttl_seconds=0)
    except OptimizationError:
        raise
    except Exception as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            return None
        raise OptimizationError(unreachable(exc)) from None
    return None if found is None else str(found.version)


def _version(client: Any, name: str, version: str) -> Any:
    if not _VERSION.match(str(version).strip()):
        raise OptimizationError(f"{str(version)[:40]!r} is not a version number such as 3")
    try:
        return client.get_prompt_version(name, str(version).strip())
    except Exception as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in \
                str(exc):
            versions = ", ".join(_all_versions(client, name)[:30]) or "none"
            raise OptimizationError(f"{name} has no version {version}; its versions are {versions}") from None
        raise OptimizationError(unreachable(exc)) from None


def _all_versions(client: Any, name: str) -> list[str]:
    """Every version number of a prompt, newest first."""
    numbers: list[int] = []
    token = None
    while True:
        page = client.search_prompt_versions(name, max_results=100, page_token=token)
        numbers += [int(v.version) for v in page]
        token = getattr(page, "token", None)
        if not token or len(numbers) >= 10_000:
            break
    return [str(n) for n in sorted(numbers, reverse=True)]


def _info(found: Any) -> PromptVersionInfo:
    tags = {k: str(v) for k, v in (found.tags or {}).items() if k.startswith("insight.")}
    created = getattr(found, "creation_timestamp", None)
    return PromptVersionInfo(
        version=str(found.version), aliases=sorted(getattr(found, "aliases", None) or []),
        created_at=dt.datetime.fromtimestamp(created / 1000, dt.UTC) if created else None,
        commit_message=getattr(found, "commit_message", None), source=tags.get(SOURCE_TAG),
        optimization_run_id=tags.get(RUN_TAG), tags=tags,
    )


def list_versions(settings: Settings, name: str, limit: int = 20) -> PromptVersions:
    """A prompt's newest versions with their aliases and insight.* tags, and where production and candidate point."""
    name = checked_name(settings, name)
    client = _client(settings)
    try:
        numbers = _all_versions(client, name)
        versions = [_info(client.get_prompt_version(name, n)) for n in numbers[:max(1, min(limit, MAX_VERSIONS))]]
    except Exception as exc:
        raise OptimizationError(unreachable(exc)) from None
    return PromptVersions(prompt=name, production=alias_version(settings, name, PRODUCTION_ALIAS),
                          candidate=alias_version(settings, name, CANDIDATE_ALIAS), total=len(numbers),
                          versions=versions)


def _candidate_tags(run_id: str | None, parent_version: str | None, tags: dict[str, str] | None) -> dict[str, str]:
    """The tags that mark a version as an optimization's candidate: source, the run that made it, its parent."""
    version_tags = {SOURCE_TAG: SOURCE_OPTIMIZATION, **(tags or {})}
    if run_id:
        version_tags[RUN_TAG] = run_id
    if parent_version:
        version_tags[PARENT_TAG] = parent_version
    return version_tags


def register_candidate(
    settings: Settings, name: str, template: str, *, run_id: str | None, parent_version: str | None,
    tags: dict[str, str] | None = None, commit_message: str = "Candidate from an insight-mcp optimization.",
) -> str:
    """Register a new version, tagged with the optimization run that made it, then point `candidate` at it."""
    client = _client(settings)
    version_tags = _candidate_tags(run_id, parent_version, tags)
    try:
        made = client.register_prompt(name, template, commit_message=commit_message[:500], tags=version_tags)
        version = str(made.version)
        client.set_prompt_alias(name, CANDIDATE_ALIAS, version)  # last: the version is whole before anyone sees it
    except Exception as exc:
        raise OptimizationError(unreachable(exc)) from None
    return version


def tag_existing_candidate(settings: Settings, name: str, version: str, *, run_id: str | None,
                           parent_version: str | None, tags: dict[str, str] | None = None, alias: bool = True) -> None:
    """Tag a version something else registered (mlflow.genai.optimize_prompts does) as ours, then alias it."""
    client = _client(settings)
    version_tags = _candidate_tags(run_id, parent_version, tags)
    try:
        for key, value in version_tags.items():
            client.set_prompt_version_tag(name, version, key, value)
        if alias:
            client.set_prompt_alias(name, CANDIDATE_ALIAS, version)
    except Exception as exc:
        raise OptimizationError(unreachable(exc)) from None


def _move_production(client: Any, name: str, version: str, *, by: str, first: list[tuple[str, str, str]]) -> None:
    """Tag `first` (version, key, value), then who promoted `version` and when, and move `production` to it last."""
    try:
        for tagged, key, value in first:
            client.set_prompt_version_tag(name, tagged, key, value)
        client.set_prompt_version_tag(name, version, PROMOTED_AT_TAG, _now())
        client.set_prompt_version_tag(name, version, PROMOTED_BY_TAG, by[:250])
        client.set_prompt_alias(name, PRODUCTION_ALIAS, version)  # last: the one write that makes it live
    except Exception as exc:
        raise OptimizationError(unreachable(exc)) from None


def promote(
    settings: Settings, name: str, version: str, *, by: str, expect_production: str | None = None,
) -> AliasMove:
    """Point `production` at a version: tag it (who, when, what it replaces) first, move the alias last.

    With `expect_production`, the move happens only while production still points there, so an optimization never
    replaces a champion it was not compared with.
    """
    name = checked_name(settings, name)
    client = _client(settings)
    target = _version(client, name, version)
    version = str(target.version)
    with store_lock(settings.tracking_uri, _LOCK):
        previous = alias_version(settings, name, PRODUCTION_ALIAS)
        if previous == version:
            return AliasMove(prompt=name, alias=PRODUCTION_ALIAS, version=version, previous=previous, changed=False,
                             message=f"{name}@{PRODUCTION_ALIAS} already is version {version}")
        if expect_production is not None and previous != expect_production:
            raise OptimizationError(f"{name}@{PRODUCTION_ALIAS} moved to version {previous} while the optimization "
                                    f"compared against version {expect_production}; run it again")
        _move_production(client, name, version, by=by,
                         first=[(version, PROMOTED_FROM_TAG, previous)] if previous is not None else [])
    return AliasMove(prompt=name, alias=PRODUCTION_ALIAS, version=version, previous=previous, changed=True,
                     message=f"{name}@{PRODUCTION_ALIAS} now points at version {version} (was {previous}); running "
                             f"servers pick it up within {settings.prompt_cache_seconds:g} s")


def rollback(settings: Settings, name: str, to_version: str | None = None, *, by: str) -> AliasMove:
    """Point `production` back at the version the current one replaced (or at `to_version`); the alias moves last."""
    name = checked_name(settings, name)
    client = _client(settings)
    with store_lock(settings.tracking_uri, _LOCK):
        current = alias_version(settings, name, PRODUCTION_ALIAS)
        if to_version is None or not str(to_version).strip():
            if current is None:
                raise OptimizationError(f"{name} has no @{PRODUCTION_ALIAS} alias to roll back")
            recorded = (_version(client, name, current).tags or {}).get(PROMOTED_FROM_TAG)
            if not recorded:
                versions = ", ".join(_all_versions(client, name)[:30])
                raise OptimizationError(f"{name}@{PRODUCTION_ALIAS} is version {current}, and no earlier production "
                                        f"version is recorded on it: name one with to_version (versions: {versions})")
            to_version = recorded
        target = str(_version(client, name, str(to_version)).version)
        if target == current:
            return AliasMove(prompt=name, alias=PRODUCTION_ALIAS, version=target, previous=current, changed=False,
                             message=f"{name}@{PRODUCTION_ALIAS} already is version {target}")
        _move_production(client, name, target, by=f"rollback by {by}",
                         first=[(current, ROLLED_BACK_AT_TAG, _now())] if current is not None else [])
    return AliasMove(prompt=name, alias=PRODUCTION_ALIAS, version=target, previous=current, changed=True,
                     message=f"{name}@{PRODUCTION_ALIAS} rolled back to version {target} (was {current}); running "
                             f"servers pick it up within {settings.prompt_cache_seconds:g} s")

