"""Shared fixtures: a temporary INSIGHT_HOME for every test and a small workspace with known rows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from workspace_fixture import build_fixture_workspace

from insight_mcp.agents.settings import Settings, load_settings

# The longest files start first, longest first, so the two workers finish together instead of one waiting on a
# long file that started late (measured with --durations=0 on 2 cores; re-order when a file grows).
LONG_FIRST = ("test_spark_backend.py", "test_analyze.py", "test_inspector.py", "test_rules.py", "test_tracing.py",
              "test_rules_cli.py", "test_self_improvement.py", "test_rollups.py", "test_client_library.py",
              "test_conformance.py", "test_supervisor.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: other files keep their order


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test ever writes to the real ~/.insight-mcp or reads a developer's token."""
    home = tmp_path / "home"
    # Popped outright, not through monkeypatch: monkeypatch would restore a store an earlier test leaked.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    monkeypatch.setenv("INSIGHT_HOME", str(home))
    monkeypatch.setenv("TEXTGRAD_LOG_DIR", str(home / "logs"))
    for var in ("INSIGHT_API_TOKEN", "INSIGHT_CONFIG", "INSIGHT_BACKEND", "INSIGHT_WORKSPACE_FILE",
                "INSIGHT_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "INSIGHT_ALLOWED_HOSTS", "INSIGHT_LM",
                "INSIGHT_LM_MODEL", "INSIGHT_LM_API_BASE", "INSIGHT_LM_API_KEY", "INSIGHT_SPARK_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    for var in [v for v in os.environ if v.startswith(("DATABRICKS_", "INSIGHT_DATABRICKS__"))]:
        monkeypatch.delenv(var)  # nor a developer's Databricks workspace, token or profile
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(home / "no-databrickscfg"))
    # In-process servers trace only in the tests about tracing: a tracking store per test would cost seconds.
    monkeypatch.setenv("INSIGHT_TRACING__ENABLED", "false")
    yield home
    # mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI, which later subprocesses and settings would
    # inherit: no test may hand its tracking store to the next one.
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def fixture_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made workspace, built once per session and only ever read."""
    return build_fixture_workspace(tmp_path_factory.mktemp("ws") / "workspace.duckdb")


@pytest.fixture
def settings(tmp_path: Path, fixture_workspace: Path) -> Settings:
    """Settings pointing at the fixture workspace, with a temporary home."""
    return load_settings(home=tmp_path / "home", workspace_file=fixture_workspace)


DEMO_END = "2026-11-21"
DEMO_ARGS = {"days": 21, "users": 40, "events_per_day": 1500}


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated estate ending on a fixed day, so the tools' docs examples (dated November 2026) hit data."""
    import datetime as dt

    from insight_mcp.agents.ingestion.generator import generate_workspace

    path = tmp_path_factory.mktemp("demo") / "workspace.duckdb"
    generate_workspace(path, end=dt.date.fromisoformat(DEMO_END), **DEMO_ARGS)
    return path


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow database, made once: tests copy it instead of migrating their own (about 5 s)."""
    from insight_mcp.agents.core.mlflow_store import open_client

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    open_client(f"sqlite:///{path}")
    return path


@pytest.fixture
def store_home(tmp_path: Path, migrated_store: Path) -> Path:
    """This test's INSIGHT_HOME, holding a copy of the migrated MLflow store (for servers and daemons it starts)."""
    import shutil

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(migrated_store, home / "mlflow.db")
    return home
