"""Settings come from env and YAML; bad values name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from insight_mcp.agents.settings import SettingsError, load_settings


def test_home_defaults_from_env(_isolated_home: Path) -> None:
    settings = load_settings()
    assert settings.home == _isolated_home.resolve()
    assert settings.workspace_path == _isolated_home.resolve() / "workspace.duckdb"
    assert settings.port == 9000  # the endpoint the seed's agent_config.yaml names
    assert settings.tracking_uri == f"sqlite:///{_isolated_home.resolve() / 'mlflow.db'}"


def test_yaml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("port: 9050\nquery:\n  row_cap: 50\n  timeout_seconds: 5\nlog_level: debug\n")
    monkeypatch.setenv("INSIGHT_PORT", "9100")
    settings = load_settings(config, log_level="warning")
    assert settings.port == 9100  # env beats the file
    assert settings.query.row_cap == 50 and settings.query.timeout_seconds == 5
    assert settings.log_level == "warning"  # explicit beats both


def test_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSIGHT_QUERY__ROW_CAP", "25")
    assert load_settings().query.row_cap == 25


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [("port: 70000\n", "INSIGHT_PORT"), ("- a\n- b\n", "mapping"), ("port: [\n", "not valid YAML"),
     ("query:\n  row_cap: 0\n", "INSIGHT_QUERY__ROW_CAP")],
)
def test_bad_config_names_the_setting(tmp_path: Path, yaml_text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SettingsError, match=message):
        load_settings(config)


def test_a_setting_the_file_misspells_is_named_not_ignored(tmp_path: Path) -> None:
    config = tmp_path / "typos.yaml"
    config.write_text("bakend: spark\ndatabricks:\n  warehouse: abc\ndetections:\n  suppression:\n"
                      "    trusted_cidr: [10.0.0.0/8]\n")
    with pytest.raises(SettingsError) as typos:
        load_settings(config)
    message = str(typos.value)
    assert message.startswith(f"{config}: no such setting: bakend (did you mean backend?)")
    assert "databricks.warehouse (did you mean databricks.warehouse_id?)" in message
    assert "detections.suppression.trusted_cidr (did you mean detections.suppression.trusted_cidrs?)" in message
    # the names a setting also answers to are settings too
    config.write_text("mlflow_tracking_uri: sqlite:///elsewhere.db\nlm_model: openai/gpt-4o-mini\n")
    settings = load_settings(config)
    assert settings.tracking_uri == "sqlite:///elsewhere.db" and settings.lm_model == "openai/gpt-4o-mini"


def test_a_file_that_is_not_yaml_says_where_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("backend: [oops\n")
    with pytest.raises(SettingsError) as broken:
        load_settings(config)
    assert str(broken.value) == (f"{config} is not valid YAML at line 2, column 1: expected ',' or ']', but got "
                                 "'<stream end>' (while parsing a flow sequence)")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_blank_token_means_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSIGHT_API_TOKEN", "")
    assert load_settings().api_token is None
