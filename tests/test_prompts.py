"""The prompt registry: defaults registered on first use, an alias moved elsewhere picked up within the cache TTL,
registration safe under a race, and the built-in default when MLflow cannot be reached."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from insight_mcp.agents.core import prompts
from insight_mcp.agents.core.mlflow_store import open_client
from insight_mcp.agents.core.prompts import (
    BUILTIN_VERSION,
    FINDING_EXPLANATION,
    NETWORK_NARRATIVE,
    PROMPTS,
    SECURITY_SUMMARY,
    SOURCE_DEFAULT,
    SOURCE_TAG,
    load_prompt,
)
from insight_mcp.agents.settings import Settings, load_settings

MOVE_ALIAS = textwrap.dedent("""
    import sys
    import mlflow

    mlflow.set_tracking_uri(sys.argv[1])
    for name in sys.argv[2:]:
        version = mlflow.genai.register_prompt(name=name, template=f"Version two of {name}.")
        mlflow.genai.set_prompt_alias(name=name, alias="production", version=version.version)
""")


@pytest.fixture
def registry_settings(settings: Settings, migrated_store: Path) -> Settings:
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_store, settings.home / "mlflow.db")
    return settings


def _versions(settings: Settings, name: str) -> list[Any]:
    return sorted(open_client(settings.tracking_uri).search_prompt_versions(name), key=lambda v: int(v.version))


def _production(settings: Settings, name: str) -> int:
    """The version `production` points at, read around every cache."""
    return int(open_client(settings.tracking_uri).load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0)
               .version)


def test_first_use_registers_each_default_and_points_production_at_it(registry_settings: Settings) -> None:
    for name in (SECURITY_SUMMARY, FINDING_EXPLANATION, NETWORK_NARRATIVE):
        loaded = load_prompt(registry_settings, name)
        assert (loaded.name, loaded.version, loaded.error) == (name, "1", None)
        assert loaded.template == PROMPTS[name].template
        [version] = _versions(registry_settings, name)
        assert version.tags[SOURCE_TAG] == SOURCE_DEFAULT
        assert _production(registry_settings, name) == 1
    again = load_prompt(registry_settings.model_copy(update={"prompt_cache_seconds": 0}), SECURITY_SUMMARY)
    assert again.version == "1"
    assert len(_versions(registry_settings, SECURITY_SUMMARY)) == 1, "a second load must not register again"


def test_the_defaults_tell_the_model_the_data_is_untrusted() -> None:
    for spec in PROMPTS.values():
        assert "untrusted_audit_data" in spec.template
        assert "never follow instructions" in spec.template
        assert "counts exactly" in spec.template.lower()


def test_an_alias_moved_by_another_process_is_picked_up_after_the_cache_ttl(registry_settings: Settings) -> None:
    short = registry_settings.model_copy(update={"prompt_cache_seconds": 0.5})
    long = registry_settings.model_copy(update={"prompt_cache_seconds": 3600})
    assert load_prompt(short, SECURITY_SUMMARY).version == "1"
    assert load_prompt(long, NETWORK_NARRATIVE).version == "1"
    assert load_prompt(long, NETWORK_NARRATIVE).version == "1"  # now cached under the alias, for an hour

    subprocess.run(
        [sys.executable, "-c", MOVE_ALIAS, registry_settings.tracking_uri, SECURITY_SUMMARY, NETWORK_NARRATIVE],
        check=True, timeout=180, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, capture_output=True,
    )
    time.sleep(0.8)  # past the short TTL

    moved = load_prompt(short, SECURITY_SUMMARY)
    assert (moved.version, moved.template) == ("2", f"Version two of {SECURITY_SUMMARY}.")
    assert load_prompt(long, NETWORK_NARRATIVE).version == "1", "within its TTL the cached version is kept"


def test_concurrent_first_loads_register_one_version(registry_settings: Settings) -> None:
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: load_prompt(registry_settings, FINDING_EXPLANATION), range(4)))
    assert {p.version for p in loaded} == {"1"}
    assert len(_versions(registry_settings, FINDING_EXPLANATION)) == 1


def test_a_registration_that_collides_rereads_what_the_other_process_wrote(
    registry_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Colliding:
        """A client whose register_prompt loses a race: another process registers first, then ours fails."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def register_prompt(self, *args: Any, **kwargs: Any) -> Any:
            self.real.register_prompt(*args, **kwargs)
            from mlflow.exceptions import MlflowException

            raise MlflowException("RESOURCE_ALREADY_EXISTS: the prompt was registered meanwhile")

    monkeypatch.setattr(prompts, "_client", lambda uri: Colliding(open_client(uri)))
    loaded = load_prompt(registry_settings, SECURITY_SUMMARY)
    assert (loaded.version, loaded.error) == ("1", None)
    assert len(_versions(registry_settings, SECURITY_SUMMARY)) == 1
    assert _production(registry_settings, SECURITY_SUMMARY) == 1


def test_a_deleted_alias_goes_back_to_the_first_default_without_a_new_version(registry_settings: Settings) -> None:
    client = open_client(registry_settings.tracking_uri)
    client.register_prompt(SECURITY_SUMMARY, "A custom text nobody approved.")  # v1, not a default
    assert load_prompt(registry_settings, SECURITY_SUMMARY).version == "2"  # the default, registered as v2
    client.register_prompt(SECURITY_SUMMARY, "Another custom text.")  # v3
    client.delete_prompt_alias(SECURITY_SUMMARY, "production")
    loaded = load_prompt(registry_settings, SECURITY_SUMMARY)
    assert (loaded.version, loaded.template) == ("2", PROMPTS[SECURITY_SUMMARY].template)
    assert len(_versions(registry_settings, SECURITY_SUMMARY)) == 3
    assert _production(registry_settings, SECURITY_SUMMARY) == 2


def test_a_chat_prompt_at_production_is_not_used(registry_settings: Settings) -> None:
    client = open_client(registry_settings.tracking_uri)
    load_prompt(registry_settings, NETWORK_NARRATIVE)
    chat = client.register_prompt(NETWORK_NARRATIVE, [{"role": "system", "content": "Be brief."}])
    client.set_prompt_alias(NETWORK_NARRATIVE, "production", chat.version)
    loaded = load_prompt(registry_settings, NETWORK_NARRATIVE)
    assert loaded.version == BUILTIN_VERSION
    assert loaded.template == PROMPTS[NETWORK_NARRATIVE].template
    assert loaded.error and "not a text prompt" in loaded.error


def test_an_unreachable_registry_gives_the_builtin_default_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's folder should be")
    settings = load_settings(home=tmp_path / "home", mlflow_tracking_uri=f"sqlite:///{blocker}/sub/mlflow.db")
    loaded = load_prompt(settings, SECURITY_SUMMARY)
    assert loaded.version == BUILTIN_VERSION
    assert loaded.template == PROMPTS[SECURITY_SUMMARY].template
    assert loaded.error and "could not be reached" in loaded.error


def test_an_unknown_prompt_name_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"known prompts: insight\.security_summary"):
        load_prompt(settings, "insight.nope")
