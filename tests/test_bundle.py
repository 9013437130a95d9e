"""The Databricks Asset Bundle: every path it names exists, every entry point is ours, every job's command and the
App's commands resolve to real `insight-mcp` subcommands, and the optimization schedule is the config's."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from insight_mcp.agents.optimization.scheduled import load_optimization_config
from insight_mcp.clients.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _bundle() -> tuple[dict[str, Any], dict[str, Path]]:
    root = yaml.safe_load((ROOT / "databricks.yml").read_text())
    resources: dict[str, Any] = {"jobs": {}, "apps": {}}
    origin: dict[str, Path] = {}
    for pattern in root["include"]:
        files = sorted(ROOT.glob(pattern))
        assert files, f"include {pattern} matches nothing"
        for file in files:
            for kind, items in yaml.safe_load(file.read_text())["resources"].items():
                for key, value in items.items():
                    resources[kind][key] = value
                    origin[key] = file
    return root | {"resources": resources}, origin


BUNDLE, ORIGIN = _bundle()


def _resolve(text: str) -> str:
    """Variables at their defaults; the config folder is the one the bundle ships for copying there."""
    text = text.replace("${var.config_dir}", str(ROOT / "deploy" / "config"))
    for name, spec in BUNDLE["variables"].items():
        text = text.replace(f"${{var.{name}}}", str(spec.get("default", f"<{name}>")))
    return text


def _cli_resolves(args: list[str]) -> None:
    """The arguments name a real subcommand with options it takes: `--help` on them exits 0."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"insight-mcp {' '.join(args)}: {result.output[-400:]}"
    assert "Usage: insight-mcp" in result.output


def test_the_bundle_declares_the_app_and_three_jobs() -> None:
    assert BUNDLE["bundle"]["name"] == "insight-mcp"
    assert set(BUNDLE["resources"]["jobs"]) == {"daily_analysis", "scheduled_optimization", "batch_evaluation"}
    assert set(BUNDLE["resources"]["apps"]) == {"insight_mcp"}
    assert {"dev", "prod"} <= set(BUNDLE["targets"])
    artifact = BUNDLE["artifacts"]["insight_mcp"]
    assert artifact["type"] == "whl" and (ROOT / artifact["path"] / "pyproject.toml").is_file()


@pytest.mark.parametrize("job", ["daily_analysis", "scheduled_optimization", "batch_evaluation"])
def test_every_job_runs_a_real_subcommand_of_our_wheel(job: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = BUNDLE["resources"]["jobs"][job]
    for task in spec["tasks"]:
        wheel = task["python_wheel_task"]
        assert wheel["package_name"].replace("_", "-") == project["name"]
        assert wheel["entry_point"] in project["scripts"]
        _cli_resolves([_resolve(str(p)) for p in wheel["parameters"]])
        env = {e["environment_key"]: e for e in spec["environments"]}[task["environment_key"]]
        for dependency in env["spec"]["dependencies"]:
            assert (ORIGIN[job].parent / Path(dependency).parent).resolve() == (ROOT / "dist").resolve()


def test_the_optimization_job_runs_on_the_configs_schedule() -> None:
    cron = _resolve(BUNDLE["resources"]["jobs"]["scheduled_optimization"]["schedule"]["quartz_cron_expression"])
    assert cron == load_optimization_config(None).cron.quartz()


def test_the_app_serves_and_supervises_with_real_commands() -> None:
    spec = BUNDLE["resources"]["apps"]["insight_mcp"]
    folder = (ORIGIN["insight_mcp"].parent / spec["source_code_path"]).resolve()
    manifest = yaml.safe_load((folder / "app.yaml").read_text())
    assert manifest["command"][0] == "sh" and (folder / manifest["command"][1]).is_file()
    commands = [line for line in (folder / manifest["command"][1]).read_text().splitlines()
                if "insight-mcp" in line and not line.lstrip().startswith("#")]
    assert len(commands) == 2
    for line in commands:
        words = shlex.split(line.replace("exec ", "").replace("&", "").replace('"${DATABRICKS_APP_PORT:-8000}"',
                                                                                  "8000"))
        _cli_resolves(words[1:])
    assert "insight-mcp" in (folder / "requirements.txt").read_text()
    declared = {r["name"] for r in spec["resources"]}
    for variable in manifest["env"]:
        if "valueFrom" in variable:
            assert variable["valueFrom"] in declared
    names = {v["name"] for v in manifest["env"]}
    assert {"MLFLOW_DISABLE_TELEMETRY", "LITELLM_LOCAL_MODEL_COST_MAP"} <= names
    assert not any("TOKEN" in n or "SECRET" in n for n in names), "credentials come from the platform"


def test_the_bundles_settings_file_holds_only_settings() -> None:
    """The daily job reads deploy/config/insight.yaml: a key no setting reads would fail it on the workspace."""
    from insight_mcp.agents.settings import load_settings

    settings = load_settings(ROOT / "deploy" / "config" / "insight.yaml")
    assert settings.spark.catalog == "system"
