"""The loader on real DuckDB files and Spark-style exports: formats, UTC, de-duplication, all-or-nothing."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from insight_mcp.agents.ingestion.catalog import get_table
from insight_mcp.agents.ingestion.loader import LoadError, LoadReport, load_table

AUDIT = "system.access.audit"
CLUSTERS = "system.compute.clusters"


def audit_event(i: int, **changes: Any) -> dict[str, Any]:
    """One audit row as Spark exports it: nulls absent, zoned timestamps, nested objects."""
    row: dict[str, Any] = {
        "account_id": "7c1b2e4a-0f5d-4a8e-9b6c-3d2e1f0a9b8c",
        "workspace_id": "1234567890123456",
        "version": "2.0",
        "event_time": f"2026-11-20T08:{i:02d}:02.123Z",
        "event_date": "2026-11-20",
        "source_ip_address": f"10.1.2.{i}",
        "user_agent": "databricks-sdk-py/0.60.0 python/3.11.9",
        "session_id": f"s-{i // 2}",
        "user_identity": {"email": f"user{i}@corp.example"},
        "service_name": "unityCatalog",
        "action_name": "getTable",
        "request_id": f"r-{i}",
        "request_params": {"full_name_arg": f"main.sales.orders_{i}", "workspace_id": "1234567890123456"},
        "response": {"status_code": 200},
        "audit_level": "WORKSPACE_LEVEL",
        "event_id": f"e-{i:04d}",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def special_events() -> list[dict[str, Any]]:
    """Rows exercising offsets, failures, service principals and identity metadata."""
    return [
        audit_event(
            90,
            event_time="2026-11-20T10:30:00.500+02:00",
            user_identity={"email": "sp@corp.example", "subject_name": "etl-service-principal"},
            response={"status_code": 403, "error_message": "PERMISSION_DENIED: no USE CATALOG"},
            identity_metadata={"run_by": "alice@corp.example", "run_as": "etl-service-principal"},
        ),
        audit_event(91, event_time="2026-11-19T23:45:00-05:00", event_date="2026-11-19", user_agent=None),
    ]


def write_parts(folder: Path, parts: list[list[dict[str, Any]]], gz: bool = False) -> Path:
    """Write rows as Spark does: one part-NNNNN-<uuid>-c000.json file per list, plus _SUCCESS."""
    folder.mkdir(parents=True, exist_ok=True)
    job = uuid.uuid4()
    for n, rows in enumerate(parts):
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        name = f"part-{n:05d}-{job}-c000.json"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / name).write_text(text)
    (folder / "_SUCCESS").touch()
    return folder


def query(workspace: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the workspace back through a fresh read-only connection."""
    conn = duckdb.connect(str(workspace), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(workspace: Path, table: str = "access.audit") -> int:
    return query(workspace, f"SELECT count(*) FROM {table}")[0][0]


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """A two-part export: four plain events and two special ones."""
    rows = [audit_event(i) for i in range(4)] + special_events()
    return write_parts(tmp_path / "audit_export", [rows[:3], rows[3:]])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws" / "workspace.duckdb"


# --- JSON lines ---------------------------------------------------------------------------------------------


def test_json_folder_loads_nested_values_and_utc_timestamps(export: Path, workspace: Path) -> None:
    report = load_table(workspace, AUDIT, export)

    assert isinstance(report, LoadReport)
    assert (report.table, report.files, report.rows_read, report.inserted, report.duplicates) == (
        AUDIT,
        2,
        6,
        6,
        0,
    )
    assert report.seconds >= 0
    row = query(
        workspace,
        "SELECT event_time, event_date, user_identity.email, user_identity.subject_name, "
        "request_params['full_name_arg'], response.status_code, response.error_message, "
        "identity_metadata.run_as, user_agent FROM access.audit WHERE event_id = 'e-0090'",
    )[0]
    assert row == (
        dt.datetime(2026, 11, 20, 8, 30, 0, 500000),  # 10:30:00.5+02:00 in UTC
        dt.date(2026, 11, 20),
        "sp@corp.example",
        "etl-service-principal",
        "main.sales.orders_90",
        403,
        "PERMISSION_DENIED: no USE CATALOG",
        "etl-service-principal",
        "databricks-sdk-py/0.60.0 python/3.11.9",
    )
    # -05:00 crosses midnight into the next UTC day; absent fields are NULL
    assert query(
        workspace,
        "SELECT event_time, user_agent, identity_metadata FROM access.audit WHERE event_id = 'e-0091'",
    ) == [(dt.datetime(2026, 11, 20, 4, 45), None, None)]
    assert query(workspace, "SELECT event_time FROM access.audit WHERE event_id = 'e-0002'") == [
        (dt.datetime(2026, 11, 20, 8, 2, 2, 123000),)
    ]
    assert query(
        workspace, "SELECT map_keys(request_params) FROM access.audit WHERE event_id = 'e-0001'"
    ) == [(["full_name_arg", "workspace_id"],)]
    types = dict(
        query(
            workspace,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'access' AND table_name = 'audit'",
        )
    )
    assert types["event_time"] == "TIMESTAMP"
    assert types["event_date"] == "DATE"
    assert types["request_params"].startswith("MAP(")


def test_single_jsonl_file_and_gzipped_parts(tmp_path: Path, workspace: Path) -> None:
    single = tmp_path / "audit.jsonl"
    single.write_text("".join(json.dumps(audit_event(i)) + "\n" for i in range(3)) + "\n")
    assert load_table(workspace, AUDIT, single).inserted == 3

    gz = write_parts(tmp_path / "gz", [[audit_event(i) for i in range(3, 6)], [audit_event(6)]], gz=True)
    report = load_table(workspace, AUDIT, gz)
    assert (report.files, report.inserted) == (2, 4)
    assert count(workspace) == 7


def test_hive_partitioned_folder_takes_the_partition_column_from_the_path(
    tmp_path: Path, workspace: Path
) -> None:
    folder = tmp_path / "partitioned"
    for day, ids in (("2026-11-19", [1, 2]), ("2026-11-20", [3])):
        rows = [{k: v for k, v in audit_event(i).items() if k != "event_date"} for i in ids]
        write_parts(folder / f"event_date={day}", [rows])
    report = load_table(workspace, AUDIT, folder)
    assert report.inserted == 3
    assert query(workspace, "SELECT event_date, count(*) FROM access.audit GROUP BY ALL ORDER BY 1") == [
        (dt.date(2026, 11, 19), 2),
        (dt.date(2026, 11, 20), 1),
    ]


# --- Parquet and CSV ----------------------------------------------------------------------------------------


def _parquet_source(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory table with the catalog's own types holding two audit events."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA access")
    conn.execute(get_table(AUDIT).create_sql())
    conn.execute(
        """
        INSERT INTO access.audit BY NAME
        SELECT * FROM (VALUES
          ('acc', '1001', '2.0', TIMESTAMP '2026-11-20 08:00:00', DATE '2026-11-20', '10.0.0.1',
           {'email': 'alice@corp.example', 'subject_name': NULL}, 'accounts', 'login', 'r-1',
           MAP {'user': 'alice'}, {'status_code': 200, 'error_message': NULL, 'result': NULL}, 'p-1'),
          ('acc', '1001', '2.0', TIMESTAMP '2026-11-20 09:00:00', DATE '2026-11-20', '10.0.0.2',
           {'email': 'bob@corp.example', 'subject_name': NULL}, 'accounts', 'login', 'r-2',
           MAP {'user': 'bob'}, {'status_code': 401, 'error_message': 'Invalid credentials', 'result': NULL},
           'p-2')
        ) t(account_id, workspace_id, version, event_time, event_date, source_ip_address, user_identity,
            service_name, action_name, request_id, request_params, response, event_id)
        """
    )
    return conn


def test_parquet_file_and_folder(tmp_path: Path, workspace: Path) -> None:
    conn = _parquet_source(tmp_path)
    single = tmp_path / "audit.parquet"
    conn.execute(f"COPY access.audit TO '{single}' (FORMAT parquet)")
    folder = tmp_path / "parquet_export"
    folder.mkdir()
    # Spark writes zoned (UTC-adjusted) timestamps; DuckDB reads them back as TIMESTAMPTZ
    conn.execute(
        "COPY (SELECT * REPLACE (CAST(event_time AS TIMESTAMPTZ) AS event_time, "
        f"'q-' || event_id AS event_id) FROM access.audit) "
        f"TO '{folder}/part-00000-{uuid.uuid4()}-c000.snappy.parquet' (FORMAT parquet)"
    )
    conn.close()

    assert load_table(workspace, AUDIT, single).inserted == 2
    report = load_table(workspace, AUDIT, folder)
    assert (report.files, report.inserted) == (1, 2)
    assert query(
        workspace,
        "SELECT event_id, event_time, user_identity.email, request_params['user'], response.error_message "
        "FROM access.audit ORDER BY event_id",
    ) == [
        ("p-1", dt.datetime(2026, 11, 20, 8), "alice@corp.example", "alice", None),
        ("p-2", dt.datetime(2026, 11, 20, 9), "bob@corp.example", "bob", "Invalid credentials"),
        ("q-p-1", dt.datetime(2026, 11, 20, 8), "alice@corp.example", "alice", None),
        ("q-p-2", dt.datetime(2026, 11, 20, 9), "bob@corp.example", "bob", "Invalid credentials"),
    ]
    assert load_table(workspace, AUDIT, folder).duplicates == 2


def test_parquet_with_unknown_column_is_refused(tmp_path: Path, workspace: Path) -> None:
    conn = _parquet_source(tmp_path)
    bad = tmp_path / "extra.parquet"
    conn.execute(f"COPY (SELECT *, 'x' AS workspace_name FROM access.audit) TO '{bad}' (FORMAT parquet)")
    conn.close()
    with pytest.raises(LoadError, match=r"extra\.parquet.*unknown column\(s\) workspace_name"):
        load_table(workspace, AUDIT, bad)


def test_parquet_value_that_does_not_convert_names_file_and_column(tmp_path: Path, workspace: Path) -> None:
    conn = _parquet_source(tmp_path)
    bad = tmp_path / "text_times.parquet"
    conn.execute(
        "COPY (SELECT * REPLACE (CASE WHEN event_id = 'p-2' THEN 'last tuesday' ELSE event_time::VARCHAR END "
        f"AS event_time) FROM access.audit) TO '{bad}' (FORMAT parquet)"
    )
    conn.close()
    with pytest.raises(
        LoadError, match=r"text_times\.parquet: column event_time does not convert.*last tuesday"
    ):
        load_table(workspace, AUDIT, bad)
    assert not workspace.exists()


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CSV_HEADER = [
    "event_id",
    "event_time",
    "event_date",
    "user_identity",
    "request_params",
    "response",
    "action_name",
]


def test_csv_with_nested_columns_as_json_text(tmp_path: Path, workspace: Path) -> None:
    path = _write_csv(
        tmp_path / "audit.csv",
        CSV_HEADER,
        [
            [
                "c-1",
                "2026-11-20T10:00:00+02:00",
                "2026-11-20",
                '{"email":"alice@corp.example"}',
                '{"scope":"prod","key":"db-password"}',
                '{"status_code":200}',
                "getSecret",
            ],
            [
                "c-2",
                "2026-11-20T08:30:00Z",
                "2026-11-20",
                "",
                "",
                '{"status_code":"403"}',
                "getSecret, again",
            ],
        ],
    )
    report = load_table(workspace, AUDIT, path)
    assert (report.rows_read, report.inserted) == (2, 2)
    assert query(
        workspace,
        "SELECT event_id, event_time, user_identity.email, request_params['key'], response.status_code, "
        "action_name, version FROM access.audit ORDER BY event_id",
    ) == [
        ("c-1", dt.datetime(2026, 11, 20, 8), "alice@corp.example", "db-password", 200, "getSecret", None),
        ("c-2", dt.datetime(2026, 11, 20, 8, 30), None, None, 403, "getSecret, again", None),
    ]


def test_csv_nested_cell_that_is_not_json_names_line_and_column(tmp_path: Path, workspace: Path) -> None:
    good = ["c-1", "2026-11-20T08:00:00Z", "2026-11-20", '{"email":"a@corp.example"}', "", "", "login"]
    bad = ["c-2", "2026-11-20T08:00:00Z", "2026-11-20", "{'email': 'b@corp.example'}", "", "", "login"]
    path = _write_csv(
        tmp_path / "bad.csv", CSV_HEADER, [good, [*good[:1], "2026-11-20T09:00:00Z", *good[2:]], bad]
    )
    with pytest.raises(LoadError, match=r"bad\.csv: line 4: column user_identity .*not JSON"):
        load_table(workspace, AUDIT, path)
    assert not workspace.exists()


def test_csv_unknown_header_column_is_refused(tmp_path: Path, workspace: Path) -> None:
    path = _write_csv(
        tmp_path / "extra.csv", ["event_id", "event_time", "colour"], [["x", "2026-11-20", "red"]]
    )
    with pytest.raises(LoadError, match=r"extra\.csv: line 1: unknown column\(s\) colour"):
        load_table(workspace, AUDIT, path)


# --- all or nothing -----------------------------------------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path, workspace: Path) -> int:
    """A workspace already holding three events, so 'nothing loaded' is checked against real rows."""
    load_table(workspace, AUDIT, write_parts(tmp_path / "first", [[audit_event(i) for i in range(3)]]))
    return count(workspace)


def test_malformed_line_names_file_and_line_and_loads_nothing(
    tmp_path: Path, workspace: Path, loaded: int
) -> None:
    folder = write_parts(tmp_path / "broken", [[audit_event(i) for i in range(10, 13)], []])
    second = next(folder.glob("part-00001-*.json"))
    lines = [json.dumps(audit_event(20)), json.dumps(audit_event(21))[:-7], json.dumps(audit_event(22))]
    second.write_text("\n".join(lines) + "\n")

    with pytest.raises(LoadError) as info:
        load_table(workspace, AUDIT, folder)

    message = str(info.value)
    assert second.name in message
    assert "line 2" in message
    assert "malformed JSON" in message
    assert count(workspace) == loaded  # not even the good first part was loaded
    assert query(workspace, "SELECT count(*) FROM access.audit WHERE event_id IN ('e-0010', 'e-0020')") == [
        (0,)
    ]


def test_truncated_last_line_is_reported(tmp_path: Path, workspace: Path, loaded: int) -> None:
    path = tmp_path / "cut.json"
    text = "".join(json.dumps(audit_event(i)) + "\n" for i in range(30, 34))
    path.write_text(text[: len(text) - 40])  # an interrupted download
    with pytest.raises(LoadError, match=r"cut\.json: line 4.*truncated"):
        load_table(workspace, AUDIT, path)
    assert count(workspace) == loaded


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"workspace_name": "prod"}, r"line 3: unknown column\(s\) workspace_name"),
        (
            {"user_identity": {"email": "a@corp.example", "nickname": "al"}},
            r"line 3: .*user_identity\.nickname",
        ),
        ({"user_identity": "alice@corp.example"}, r"line 3: column user_identity should be a struct"),
        ({"request_params": ["a", "b"]}, r"line 3: column request_params should be a map"),
        ({"event_time": "yesterday"}, r"line 3: column event_time should be a timestamp"),
        ({"response": {"status_code": "OK"}}, r"line 3: column response\.status_code should be a number"),
        ({"event_id": None}, r"line 3: column event_id is missing"),
    ],
    ids=[
        "unknown-column",
        "unknown-nested-field",
        "string-for-struct",
        "array-for-map",
        "bad-timestamp",
        "text-for-int",
        "missing-event-key",
    ],
)
def test_wrong_schema_names_the_column_and_loads_nothing(
    tmp_path: Path, workspace: Path, loaded: int, change: dict[str, Any], expected: str
) -> None:
    rows = [audit_event(40), audit_event(41), audit_event(42, **change), audit_event(43)]
    folder = write_parts(tmp_path / "wrong", [[audit_event(44)], rows])
    with pytest.raises(LoadError, match=expected) as info:
        load_table(workspace, AUDIT, folder)
    assert "part-00001-" in str(info.value)
    assert count(workspace) == loaded


def test_error_deep_in_a_large_file_gets_the_exact_line(tmp_path: Path, workspace: Path) -> None:
    rows = [audit_event(i % 60, event_id=f"big-{i}") for i in range(30_000)]
    rows[24_321]["event_time"] = "20/11/2026 08:00"
    folder = write_parts(tmp_path / "big", [rows])
    with pytest.raises(LoadError, match=r"line 24322: column event_time should be a timestamp"):
        load_table(workspace, AUDIT, folder)
    assert not workspace.exists()  # a failed first load leaves no half-made workspace behind


def test_json_array_file_is_refused_with_advice(tmp_path: Path, workspace: Path) -> None:
    path = tmp_path / "audit.json"
    path.write_text(json.dumps([audit_event(1), audit_event(2)]))
    with pytest.raises(LoadError, match=r"JSON array.*jq"):
        load_table(workspace, AUDIT, path)


# --- de-duplication -----------------------------------------------------------------------------------------


def test_loading_the_same_export_twice_adds_nothing(export: Path, workspace: Path) -> None:
    first = load_table(workspace, AUDIT, export)
    second = load_table(workspace, AUDIT, export)
    assert (first.inserted, first.duplicates) == (6, 0)
    assert (second.rows_read, second.inserted, second.duplicates) == (6, 0, 6)
    assert count(workspace) == 6


def test_duplicates_within_one_input_are_collapsed(tmp_path: Path, workspace: Path) -> None:
    a, b, c = audit_event(1), audit_event(2), audit_event(3)
    folder = write_parts(tmp_path / "dups", [[a, b, a], [b, c, a]])
    report = load_table(workspace, AUDIT, folder)
    assert (report.rows_read, report.inserted, report.duplicates) == (6, 3, 3)
    assert query(workspace, "SELECT event_id, count(*) FROM access.audit GROUP BY 1 ORDER BY 1") == [
        ("e-0001", 1),
        ("e-0002", 1),
        ("e-0003", 1),
    ]


def test_overlapping_export_with_internal_duplicates_into_a_filled_table(
    tmp_path: Path, workspace: Path, loaded: int
) -> None:
    # e-0000..e-0002 are already loaded; this export repeats two of them and repeats e-0050 twice
    rows = [audit_event(1), audit_event(2), audit_event(50), audit_event(51), audit_event(50)]
    report = load_table(workspace, AUDIT, write_parts(tmp_path / "overlap", [rows[:3], rows[3:]]))
    assert (report.rows_read, report.inserted, report.duplicates) == (5, 2, 3)
    assert count(workspace) == loaded + 2
    assert query(workspace, "SELECT count(*) - count(DISTINCT event_id) FROM access.audit") == [(0,)]


def cluster_change(cluster_id: str, change_time: str, **changes: Any) -> dict[str, Any]:
    """A system.compute.clusters row: one configuration change of one cluster."""
    row: dict[str, Any] = {
        "account_id": "acc",
        "workspace_id": "1001",
        "cluster_id": cluster_id,
        "cluster_name": f"{cluster_id}-etl",
        "owned_by": "alice@corp.example",
        "create_time": "2026-11-01T09:00:00.000Z",
        "driver_node_type": "i3.xlarge",
        "worker_node_type": "i3.xlarge",
        "min_autoscale_workers": 2,
        "max_autoscale_workers": 8,
        "auto_termination_minutes": 60,
        "enable_elastic_disk": True,
        "tags": {"team": "data-eng", "cost_center": "42"},
        "cluster_source": "UI",
        "init_scripts": ["/Volumes/main/ops/scripts/install.sh"],
        "aws_attributes": {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1, "zone_id": "auto"},
        "dbr_version": "15.4.x-scala2.12",
        "change_time": change_time,
        "change_date": change_time[:10],
        "data_security_mode": "USER_ISOLATION",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def test_clusters_deduplicate_on_cluster_id_and_change_time_from_the_catalog(
    tmp_path: Path, workspace: Path
) -> None:
    assert get_table(CLUSTERS).event_key == ("cluster_id", "change_time")
    rows = [
        cluster_change("c-1", "2026-11-01T09:00:00.000Z"),
        cluster_change(
            "c-1", "2026-11-02T09:00:00.000Z", data_security_mode="NONE"
        ),  # same cluster, new change
        cluster_change(
            "c-1", "2026-11-02T11:00:00+02:00", data_security_mode="NONE"
        ),  # same instant as above
        cluster_change("c-2", "2026-11-01T09:00:00.000Z", delete_time="2026-11-03T00:00:00Z"),
    ]
    folder = write_parts(tmp_path / "clusters", [rows[:2], rows[2:]])
    report = load_table(workspace, CLUSTERS, folder)
    assert (report.table, report.rows_read, report.inserted, report.duplicates) == (CLUSTERS, 4, 3, 1)
    assert query(
        workspace,
        "SELECT cluster_id, change_time, data_security_mode, tags['team'], init_scripts[1], "
        "aws_attributes.first_on_demand, delete_time FROM compute.clusters ORDER BY cluster_id, change_time",
    ) == [
        (
            "c-1",
            dt.datetime(2026, 11, 1, 9),
            "USER_ISOLATION",
            "data-eng",
            "/Volumes/main/ops/scripts/install.sh",
            1,
            None,
        ),
        (
            "c-1",
            dt.datetime(2026, 11, 2, 9),
            "NONE",
            "data-eng",
            "/Volumes/main/ops/scripts/install.sh",
            1,
            None,
        ),
        (
            "c-2",
            dt.datetime(2026, 11, 1, 9),
            "USER_ISOLATION",
            "data-eng",
            "/Volumes/main/ops/scripts/install.sh",
            1,
            dt.datetime(2026, 11, 3),
        ),
    ]
    again = load_table(workspace, CLUSTERS, folder)
    assert (again.inserted, again.duplicates) == (0, 4)


# --- refusals with helpful messages -------------------------------------------------------------------------


def test_unknown_table_lists_the_known_ones(export: Path, workspace: Path) -> None:
    with pytest.raises(
        LoadError,
        match=r"unknown table 'system\.access\.nope'.*system\.access\.audit.*"
        r"system\.compute\.clusters",
    ):
        load_table(workspace, "system.access.nope", export)
    assert not workspace.exists()


def test_missing_path(tmp_path: Path, workspace: Path) -> None:
    missing = tmp_path / "no_such_export"
    with pytest.raises(LoadError, match=r"no_such_export does not exist.*part-\*\.json"):
        load_table(workspace, AUDIT, missing)


def test_empty_folder(tmp_path: Path, workspace: Path) -> None:
    empty = tmp_path / "empty_export"
    empty.mkdir()
    (empty / "_SUCCESS").touch()
    with pytest.raises(LoadError, match=r"empty_export is an empty folder"):
        load_table(workspace, AUDIT, empty)
    assert not workspace.exists()


def test_stray_files_and_delta_folders_are_refused(tmp_path: Path, workspace: Path, export: Path) -> None:
    (export / "notes.txt").write_text("exported by bob")
    with pytest.raises(LoadError, match=r"not export data: notes\.txt"):
        load_table(workspace, AUDIT, export)
    (export / "notes.txt").unlink()
    (export / "_delta_log").mkdir()
    with pytest.raises(LoadError, match=r"Delta table"):
        load_table(workspace, AUDIT, export)


def test_loading_into_a_new_workspace_creates_it(export: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "deep" / "new" / "workspace.duckdb"
    assert not workspace.parent.exists()
    load_table(workspace, AUDIT, export)
    assert workspace.exists()
    assert count(workspace) == 6
    # Every catalog table exists, empty until loaded, so tools and rules can rely on them.
    assert query(
        workspace,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema IN ('access', 'compute', 'query', "
        "'billing')"
    ) == [(6,)]
    assert query(workspace, "SELECT count(*) FROM compute.clusters") == [(0,)]
