"""Load a Databricks system-table export (JSON lines, Parquet or CSV) into the workspace, all or nothing.

Formats, as people export them from a real workspace:

* JSON lines: a folder of Spark `part-*.json` files (optionally `.json.gz`), or one `.json`/`.jsonl`/`.ndjson`
  file. Null fields may be absent, timestamps carry a zone, structs and maps are objects, arrays are arrays.
* Parquet: one `.parquet` file or a folder of `part-*.parquet` files (Spark's own output works as is).
* CSV: one `.csv` file (or a folder of them) with a header row. Nested columns (structs, maps, arrays) must be
  JSON text in their cells, as Databricks SQL's "Download as CSV" writes them; scalar cells are plain text.

Folders may be Hive-partitioned (`event_date=2026-11-20/part-*.json`); Spark's `_SUCCESS`/`_committed_*` and
hidden files are skipped. Every load is one transaction: a bad line anywhere means nothing is loaded. Rows are
de-duplicated on the table's event key, against the table and within the input.

Unknown columns and nested fields are refused. Parquet and CSV declare their columns, so that check is exact;
for JSON lines it uses DuckDB's schema sample of every file (its first `SCHEMA_SAMPLE_ROWS` rows), because a
second full parse of the data would break the speed goal (within 1.5x of DuckDB's own read_json). A key that
first appears later in a file is not noticed, and its values are not loaded. Type errors, malformed lines and
missing event keys are caught on every row, with the file and line named.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import duckdb
from duckdb.sqltypes import DuckDBPyType
from pydantic import BaseModel

from insight_mcp.agents.ingestion.catalog import TABLES, TableSpec, get_table

Format = Literal["json", "parquet", "csv"]

SCHEMA_SAMPLE_ROWS = 20_480  # rows per JSON file DuckDB samples for the nested-field check (its own default)
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
COMPRESSED_SUFFIXES = ("", ".gz")
_SUFFIXES: dict[str, Format] = {
    **{j + c: "json" for j in JSON_SUFFIXES for c in COMPRESSED_SUFFIXES},
    ".parquet": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
}
_INT_RANGES = {
    "tinyint": 2**7,
    "smallint": 2**15,
    "integer": 2**31,
    "bigint": 2**63,
    "hugeint": 2**127,
}
_TIMESTAMP_RE = re.compile(
    r"^\s*\d{4,}-\d{1,2}-\d{1,2}"  # date
    r"([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"  # time
    r"\s*(Z|UTC|[+-]\d{2}(:?\d{2}(:?\d{2})?)?)?\s*$",  # zone
    re.IGNORECASE,
)
_DATE_RE = re.compile(r"^\s*\d{4,}-\d{1,2}-\d{1,2}\s*$")
_FILE_RE = re.compile(r'in file "([^"]+)"')
_LINE_RE = re.compile(r"\bline (\d+)")
_NESTED = ("struct", "map", "list")


class LoadError(ValueError):
    """A load that was refused or rolled back; the message names the file, line or column and what to do."""


class LoadReport(BaseModel):
    """What one load did: rows read from the export, rows new to the table, rows already there."""

    table: str
    files: int
    rows_read: int
    inserted: int
    duplicates: int
    seconds: float


@dataclass
class _Export:
    """The data files of one export, their format and any Hive partition columns in their paths."""

    source: Path
    fmt: Format
    files: list[Path]
    partitions: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    """A SELECT giving the catalog's columns (UTC timestamps) from the export, and the files it reads."""

    select: str
    files: list[Path]
    origin: dict[str, Path] = field(default_factory=dict)  # converted CSV file -> the user's CSV file


def load_table(workspace: Path, table: str, source: Path) -> LoadReport:
    """Load one export into `table`: all files in one transaction, de-duplicated on the event key."""
    started = time.perf_counter()
    spec = _resolve_table(table)
    export = _discover(Path(source))
    workspace = Path(workspace)
    created = not workspace.exists()
    workspace.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = duckdb.connect(str(workspace))
    except duckdb.Error as exc:
        raise LoadError(
            f"cannot open workspace {workspace} for writing: {_first_line(exc)}. If `insight-mcp serve` or "
            "another process has it open, stop it and load again."
        ) from exc
    done = False
    try:
        _quiet_utc(conn)
        # Global to the database instance, so reset below; row order means nothing here and costs time.
        conn.execute("SET preserve_insertion_order = false")
        with tempfile.TemporaryDirectory(prefix="insight-load-") as tmp:
            plan = _plan(conn, spec, export, Path(tmp))
            rows_read, inserted = _write(conn, spec, plan)
        done = True
    finally:
        try:
            conn.execute("RESET preserve_insertion_order")
        except duckdb.Error:
            pass  # the connection is going away anyway
        conn.close()
        if not done and created:
            for leftover in (workspace, workspace.with_name(workspace.name + ".wal")):
                leftover.unlink(missing_ok=True)
    return LoadReport(
        table=spec.name,
        files=len(export.files),
        rows_read=rows_read,
        inserted=inserted,
        duplicates=rows_read - inserted,
        seconds=round(time.perf_counter() - started, 3),
    )


# --- finding the files --------------------------------------------------------------------------------------


def _resolve_table(table: str) -> TableSpec:
    """The catalog entry, or a LoadError listing the tables that can be loaded."""
    try:
        return get_table(table)
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise LoadError(f"unknown table {table!r}; tables that can be loaded: {known}") from None


def _format_of(path: Path) -> Format | None:
    """The export format a file name says, or None."""
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


def _discover(source: Path) -> _Export:
    """The data files under `source` and their single format; refuses missing, empty or mixed exports."""
    expected = (
        "a folder of part-*.json / part-*.parquet files, or one .json/.jsonl/.ndjson/.parquet/.csv file"
    )
    if not source.exists():
        raise LoadError(f"{source} does not exist; pass the exported data: {expected}")
    if source.is_file():
        fmt = _format_of(source)
        if fmt is None:
            raise LoadError(f"{source} is not a supported export file; expected {expected}")
        return _Export(source, fmt, [source])
    if (source / "_delta_log").is_dir():
        raise LoadError(
            f"{source} is a Delta table folder (it has _delta_log): its Parquet files include old versions; "
            "export the table with `df.write.json(...)` or `df.write.parquet(...)` and load that folder"
        )
    files, others = [], []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or any(part.startswith(("_", ".")) for part in rel.parts):
            continue  # Spark's _SUCCESS, _committed_*, .crc files and hidden folders
        (files if _format_of(path) else others).append(path)
    if others:
        shown = ", ".join(str(p.relative_to(source)) for p in others[:5])
        raise LoadError(
            f"{source} holds files that are not export data: {shown}; move them out and load again"
        )
    if not files:
        raise LoadError(f"{source} is an empty folder: no data files in it; expected {expected}")
    formats = sorted({_format_of(p) or "" for p in files})
    if len(formats) > 1:
        raise LoadError(f"{source} mixes formats ({', '.join(formats)}); load one format per folder")
    partitions: list[str] = []
    for path in files:
        keys = [part.split("=", 1)[0] for part in path.relative_to(source).parts[:-1] if "=" in part]
        if partitions and keys != partitions:
            raise LoadError(f"{path}: its partition folders {keys} differ from the others' {partitions}")
        partitions = partitions or keys
    fmt = formats[0]
    if partitions and fmt == "csv":
        raise LoadError(
            f"{source}: Hive-partitioned CSV folders are not supported; export as JSON or Parquet"
        )
    return _Export(source, fmt, files, partitions)  # type: ignore[arg-type]


# --- planning: schema checks and the normalising SELECT -----------------------------------------------------


def _plan(conn: duckdb.DuckDBPyConnection, spec: TableSpec, export: _Export, tmp: Path) -> _Plan:
    """Check the export's schema against the catalog and build the SELECT that reads it."""
    unknown_parts = [p for p in export.partitions if p not in {c.name for c in spec.columns}]
    if unknown_parts:
        raise LoadError(
            f"{export.source}: partition column(s) {', '.join(unknown_parts)} are not columns of {spec.name}"
        )
    if export.fmt == "json":
        _check_json_files(conn, spec, export)
        return _Plan(_json_select(spec, export.files, export.partitions), export.files)
    if export.fmt == "parquet":
        return _Plan(_parquet_select(conn, spec, export), export.files)
    converted: dict[str, Path] = {}
    outputs = []
    for n, path in enumerate(export.files):
        out = tmp / f"csv-{n:05d}.json"
        _csv_to_json(conn, spec, path, out)
        converted[str(out)] = path
        outputs.append(out)
    return _Plan(_json_select(spec, outputs, []), outputs, converted)


@lru_cache(maxsize=512)
def _sqltype(type_sql: str) -> DuckDBPyType:
    """DuckDB's parsed form of a type string, to walk nested types (cached: the diagnosis asks per row)."""
    return duckdb.sqltype(type_sql)


@lru_cache(maxsize=64)
def _column_types(table: str) -> dict[str, DuckDBPyType]:
    """Column name -> parsed catalog type, for the row checks."""
    return {c.name: _sqltype(c.duckdb_type) for c in get_table(table).columns}


def _render(t: DuckDBPyType, zoned: bool) -> str:
    """A type as SQL; with `zoned`, TIMESTAMPs become TIMESTAMPTZ so zone offsets in the data are honoured."""
    if t.id == "struct":
        return "STRUCT(" + ", ".join(f"{_ident(n)} {_render(c, zoned)}" for n, c in t.children) + ")"
    if t.id == "map":
        (_, key), (_, value) = t.children
        return f"MAP({_render(key, zoned)}, {_render(value, zoned)})"
    if t.id == "list":
        return f"{_render(t.children[0][1], zoned)}[]"
    if t.id == "timestamp" and zoned:
        return "TIMESTAMPTZ"
    return str(t)


def _has_timestamp(t: DuckDBPyType) -> bool:
    """Whether a (nested) type contains a TIMESTAMP that must be converted to UTC."""
    if t.id in _NESTED:
        return any(_has_timestamp(child) for _, child in t.children)
    return t.id == "timestamp"


def _json_select(spec: TableSpec, files: list[Path], partitions: list[str]) -> str:
    """SELECT over read_json with the catalog's types, zoned timestamps converted to UTC."""
    columns = {}
    exprs = []
    for col in spec.columns:
        target = _sqltype(col.duckdb_type)
        name = _ident(col.name)
        if col.name in partitions:
            exprs.append(f"CAST({name} AS {col.duckdb_type}) AS {name}")
            continue
        columns[col.name] = _render(target, zoned=True)
        if target.id == "timestamp":
            exprs.append(f"timezone('UTC', {name}) AS {name}")
        elif _has_timestamp(target):
            exprs.append(f"CAST({name} AS {col.duckdb_type}) AS {name}")
        else:
            exprs.append(name)
    options = [
        "format = 'newline_delimited'",
        "columns = {" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in columns.items()) + "}",
    ]
    if partitions:
        hive_types = ", ".join(f"{_lit(p)}: {_lit(spec.column(p).duckdb_type)}" for p in partitions)
        options += ["hive_partitioning = true", f"hive_types = {{{hive_types}}}"]
    else:
        options.append("hive_partitioning = false")
    source = f"read_json({_file_list(files)}, {', '.join(options)})"
    return f"SELECT {', '.join(exprs)} FROM {source}"


def _check_json_files(conn: duckdb.DuckDBPyConnection, spec: TableSpec, export: _Export) -> None:
    """Refuse JSON arrays, and columns or nested fields the catalog lacks (from DuckDB's per-file sample)."""
    for path in export.files:
        if _first_char(path) == "[":
            raise LoadError(
                f"{path}: line 1: is a JSON array, not JSON lines (one object per line, as Spark writes); "
                "convert it with `jq -c '.[]'` and load again"
            )
    sampled = [p for p in export.files if p.stat().st_size > 0]
    if not sampled:
        return
    found = _sample_schema(conn, spec, sampled)
    if not _schema_problem(spec, export, found):
        return
    for path in sampled:  # something is off: find the file, then re-read it to name the line
        problem = _schema_problem(spec, export, _sample_schema(conn, spec, [path]))
        if problem:
            described = _diagnose_json(spec, path)
            raise LoadError(_refused(described or f"{path}: {problem}"))


def _sample_schema(conn: duckdb.DuckDBPyConnection, spec: TableSpec, files: list[Path]) -> dict[str, str]:
    """Column name -> type as DuckDB infers them from the first SCHEMA_SAMPLE_ROWS rows of each file."""
    try:
        rows = conn.execute(
            f"DESCRIBE SELECT * FROM read_json({_file_list(files)}, format = 'newline_delimited', "
            f"union_by_name = true, sample_size = {SCHEMA_SAMPLE_ROWS}, maximum_sample_files = -1, "
            "hive_partitioning = false)"
        ).fetchall()
    except duckdb.Error as exc:
        raise _explain(exc, spec, files, {}) from exc
    return {r[0]: r[1] for r in rows if (r[0], r[1]) != ("json", "JSON")}  # ("json", JSON): an empty file


def _schema_problem(spec: TableSpec, export: _Export, found: dict[str, str]) -> str | None:
    """An unknown column or nested field in a sampled schema, described, or None."""
    known = {c.name for c in spec.columns} - set(export.partitions)
    unknown = sorted(n for n in found if n not in known)
    if unknown:
        return (
            f"unknown column(s) {', '.join(unknown)} for {spec.name}; "
            f"export only the table's columns ({', '.join(c.name for c in spec.columns)})"
        )
    for name, found_type in found.items():
        problem = _compare_types(
            name, _sqltype(spec.column(name).duckdb_type), _sqltype(found_type), kinds=False
        )
        if problem:
            return problem
    return None


def _check_nested(spec: TableSpec, path: Path, found: dict[str, str]) -> None:
    """Compare a file's (sampled or declared) schema with the catalog: unknown fields, wrong nesting."""
    for name, found_type in found.items():
        try:
            col = spec.column(name)
        except KeyError:
            continue  # unknown top-level columns are the caller's to report
        problem = _compare_types(name, _sqltype(col.duckdb_type), _sqltype(found_type))
        if problem:
            raise LoadError(_refused(f"{path}: {problem}"))


def _compare_types(path: str, want: DuckDBPyType, got: DuckDBPyType, kinds: bool = True) -> str | None:
    """Unknown struct fields in a found type and, with `kinds`, nesting that can't hold the catalog type."""
    if got.id == "null" or str(got) == "JSON":
        return None  # all-null or mixed in a sample: the typed read decides, with line numbers
    if want.id == "struct" and got.id == "struct":
        fields = dict(want.children)
        extra = [n for n, _ in got.children if n not in fields]
        if extra:
            return (
                f"unknown field(s) {', '.join(f'{path}.{n}' for n in extra)} in column {path.split('.')[0]}"
            )
        for n, child in got.children:
            problem = _compare_types(f"{path}.{n}", fields[n], child, kinds)
            if problem:
                return problem
        return None
    if want.id == "list" and got.id == "list":
        return _compare_types(f"{path}[]", want.children[0][1], got.children[0][1], kinds)
    if not kinds:
        return None
    expected = {"struct": "a struct", "map": "a map", "list": "an array"}
    if want.id in expected and got.id != want.id:
        return f"column {path} should be {expected[want.id]} but is {got}"
    if got.id in _NESTED and want.id not in _NESTED and want.id != "varchar":
        return f"column {path} should be {want} but is {got}"
    return None


def _parquet_select(conn: duckdb.DuckDBPyConnection, spec: TableSpec, export: _Export) -> str:
    """SELECT over read_parquet: schema checked per file, absent columns NULL, timestamps converted to UTC."""
    required = {*spec.event_key, spec.time_column}
    for path in export.files:
        try:
            found = {
                r[0]: r[1]
                for r in conn.execute(
                    f"DESCRIBE SELECT * FROM read_parquet({_lit(str(path))}, hive_partitioning = false)"
                ).fetchall()
            }
        except duckdb.Error as exc:
            raise LoadError(
                f"{path}: not a readable Parquet file ({_first_line(exc)}); re-export it"
            ) from exc
        unknown = [n for n in found if n not in {c.name for c in spec.columns}]
        if unknown:
            raise LoadError(
                f"{path}: unknown column(s) {', '.join(unknown)} for {spec.name}; "
                "export only the table's columns and load again"
            )
        missing = sorted(required - set(found) - set(export.partitions))
        if missing:
            raise LoadError(
                f"{path}: required column(s) {', '.join(missing)} missing; {_required_note(spec)}"
            )
        _check_nested(spec, path, found)
    options = "union_by_name = true, " + (
        "hive_partitioning = true, hive_types = {"
        + ", ".join(f"{_lit(p)}: {_lit(spec.column(p).duckdb_type)}" for p in export.partitions)
        + "}"
        if export.partitions
        else "hive_partitioning = false"
    )
    source = f"read_parquet({_file_list(export.files)}, {options})"
    try:
        unified = {r[0]: r[1] for r in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    except duckdb.Error as exc:
        raise LoadError(f"{export.source}: the Parquet files do not combine: {_first_line(exc)}") from exc
    exprs = []
    for col in spec.columns:
        name = _ident(col.name)
        if col.name not in unified:
            exprs.append(f"CAST(NULL AS {col.duckdb_type}) AS {name}")
        else:
            exprs.append(f"{_convert(name, unified[col.name], col.duckdb_type)} AS {name}")
    return f"SELECT {', '.join(exprs)} FROM {source}"


def _convert(expr: str, found: str, target: str) -> str:
    """An expression casting a Parquet column to the catalog type; zoned or text timestamps go through UTC."""
    found_upper = found.upper()
    if target == "TIMESTAMP":
        if found_upper == "TIMESTAMP WITH TIME ZONE":
            return f"timezone('UTC', {expr})"
        if found_upper == "VARCHAR":
            return f"timezone('UTC', CAST({expr} AS TIMESTAMPTZ))"
    if target == "DATE" and found_upper == "TIMESTAMP WITH TIME ZONE":
        return f"CAST(timezone('UTC', {expr}) AS DATE)"
    if found_upper == target.upper():
        return expr
    return f"CAST({expr} AS {target})"


def _csv_to_json(conn: duckdb.DuckDBPyConnection, spec: TableSpec, path: Path, out: Path) -> None:
    """Rewrite one CSV as JSON lines (nested cells parsed as JSON) so the JSON reader's checks apply."""
    try:
        header = [
            r[0]
            for r in conn.execute(
                f"DESCRIBE SELECT * FROM read_csv({_lit(str(path))}, header = true, all_varchar = true)"
            ).fetchall()
        ]
    except duckdb.Error as exc:
        raise _csv_error(exc, spec, path) from exc
    known = {c.name for c in spec.columns}
    unknown = [h for h in header if h not in known]
    if unknown:
        raise LoadError(
            f"{path}: line 1: unknown column(s) {', '.join(unknown)} in the header for {spec.name}; "
            "export only the table's columns and load again"
        )
    missing = sorted({*spec.event_key, spec.time_column} - set(header))
    if missing:
        raise LoadError(
            f"{path}: line 1: required column(s) {', '.join(missing)} missing from the header; "
            f"{_required_note(spec)}"
        )
    exprs = []
    for name in header:
        nested = _sqltype(spec.column(name).duckdb_type).id in _NESTED
        exprs.append(f"json({_ident(name)}) AS {_ident(name)}" if nested else _ident(name))
    query = f"SELECT {', '.join(exprs)} FROM read_csv({_lit(str(path))}, header = true, all_varchar = true)"
    try:
        conn.execute(f"COPY ({query}) TO {_lit(str(out))} (FORMAT json)")
    except duckdb.Error as exc:
        raise _csv_error(exc, spec, path) from exc


# --- writing ------------------------------------------------------------------------------------------------


def _write(conn: duckdb.DuckDBPyConnection, spec: TableSpec, plan: _Plan) -> tuple[int, int]:
    """Insert new rows in one transaction; returns (rows read, rows inserted). Rolls back on any error."""
    target = f"{_ident(spec.schema_name)}.{_ident(spec.table_name)}"
    keys = [_ident(k) for k in spec.event_key]
    key_tuple = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
    required_null = " OR ".join(
        f"{_ident(c)} IS NULL" for c in dict.fromkeys([*spec.event_key, spec.time_column])
    )
    columns = ", ".join(_ident(c.name) for c in spec.columns)
    conn.execute("BEGIN TRANSACTION")
    try:
        # Every catalog table exists in every workspace, empty until loaded: tools and rules can rely on it.
        for other in TABLES.values():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(other.schema_name)}")
            conn.execute(other.create_sql())
        _check_target_columns(conn, spec)
        existing = conn.execute(f"SELECT count(*) FROM {target}").fetchone()[0]  # type: ignore[index]
        if existing == 0:
            rows_read = _run(conn, spec, plan, f"INSERT INTO {target} ({columns}) {plan.select}")
            nulls, distinct = conn.execute(
                f"SELECT count(*) FILTER (WHERE {required_null}), count(DISTINCT {key_tuple}) FROM {target}"
            ).fetchone()  # type: ignore[misc]
            if nulls:
                raise _missing_required(spec, plan)
            inserted = rows_read
            if distinct < rows_read:
                inserted -= _delete_repeats(conn, target, keys, exclude=None)
        else:
            rows_read, distinct_in, nulls = _run(
                conn,
                spec,
                plan,
                f"SELECT count(*), count(DISTINCT {key_tuple}), count(*) FILTER (WHERE {required_null}) "
                f"FROM ({plan.select})",
                fetch_all=True,
            )
            if nulls:
                raise _missing_required(spec, plan)
            before_dups = conn.execute(
                f"SELECT count(*) - count(DISTINCT {key_tuple}) FROM {target}"
            ).fetchone()[0]  # type: ignore[index]
            if before_dups:
                conn.execute(
                    f"CREATE TEMP TABLE _insight_old_repeats AS SELECT {', '.join(keys)} FROM {target} "
                    f"GROUP BY ALL HAVING count(*) > 1"
                )
            on = " AND ".join(f"s.{k} = t.{k}" for k in keys)
            inserted = _run(
                conn,
                spec,
                plan,
                f"INSERT INTO {target} ({columns}) SELECT s.* FROM ({plan.select}) s "
                f"ANTI JOIN {target} t ON {on}",
            )
            if distinct_in < rows_read:
                exclude = "_insight_old_repeats" if before_dups else None
                inserted -= _delete_repeats(conn, target, keys, exclude=exclude)
            if before_dups:
                conn.execute("DROP TABLE _insight_old_repeats")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rows_read, inserted


def _run(
    conn: duckdb.DuckDBPyConnection, spec: TableSpec, plan: _Plan, sql: str, fetch_all: bool = False
) -> Any:
    """Run a statement that reads the export; DuckDB's errors become LoadErrors naming the file and line."""
    try:
        row = conn.execute(sql).fetchone()
    except duckdb.Error as exc:
        raise _explain(exc, spec, plan.files, plan.origin) from exc
    assert row is not None
    return row if fetch_all else row[0]


def _delete_repeats(
    conn: duckdb.DuckDBPyConnection, target: str, keys: list[str], exclude: str | None
) -> int:
    """Delete all but the first copy of each repeated key (except keys in `exclude`); returns rows deleted."""
    key_list = ", ".join(keys)
    repeated = f"SELECT {key_list} FROM {target} GROUP BY ALL HAVING count(*) > 1"
    if exclude:
        repeated = f"SELECT * FROM ({repeated}) r ANTI JOIN {exclude} x USING ({key_list})"
    deleted = conn.execute(
        f"DELETE FROM {target} WHERE rowid IN (SELECT rid FROM (SELECT t.rowid AS rid, row_number() OVER "
        f"(PARTITION BY {', '.join(f't.{k}' for k in keys)} ORDER BY t.rowid) AS rn FROM {target} t "
        f"SEMI JOIN ({repeated}) d USING ({key_list})) WHERE rn > 1)"
    ).fetchone()
    return int(deleted[0]) if deleted else 0


def _check_target_columns(conn: duckdb.DuckDBPyConnection, spec: TableSpec) -> None:
    """Refuse to write into an existing table that lacks catalog columns (made by an older version)."""
    have = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [spec.schema_name, spec.table_name],
        ).fetchall()
    }
    missing = [c.name for c in spec.columns if c.name not in have]
    if missing:
        raise LoadError(
            f"the workspace table {spec.local_name} lacks column(s) {', '.join(missing)} (an older version "
            "made it); rebuild the workspace or add the columns with ALTER TABLE, then load again"
        )


# --- explaining failures ------------------------------------------------------------------------------------


def _refused(problem: str) -> str:
    """A problem plus what it means and what to do: the load was rolled back, fix the data and retry."""
    return f"{problem}. Nothing was loaded; fix or remove that data (or re-export it) and load again."


def _required_note(spec: TableSpec) -> str:
    """Why the event key and time column are required."""
    key = ", ".join(spec.event_key)
    return (
        f"every row of {spec.name} needs {key} (the event key loads de-duplicate on) and {spec.time_column} "
        "(its event time); re-export with those columns"
    )


def _missing_required(spec: TableSpec, plan: _Plan) -> LoadError:
    """A LoadError for rows without an event key or time, pointing at the first such line."""
    for path in plan.files:
        found = _diagnose(spec, path, plan.origin)
        if found:
            return LoadError(_refused(found))
    return LoadError(
        f"some rows lack {', '.join(spec.event_key)} or {spec.time_column}; {_required_note(spec)}"
    )


def _explain(exc: duckdb.Error, spec: TableSpec, files: list[Path], origin: dict[str, Path]) -> LoadError:
    """Turn a DuckDB read error into one naming the file, exact line and column, found by re-reading."""
    message = _first_line(exc)
    named = _FILE_RE.search(str(exc))
    candidates = files
    if named:
        candidates = [
            p for p in files if str(p) == named.group(1) or p.name == Path(named.group(1)).name
        ] or files
    for path in candidates:
        found = _diagnose(spec, path, origin)
        if found:
            return LoadError(_refused(found))
    where = str(origin.get(named.group(1), named.group(1))) if named else ", ".join(str(p) for p in files[:3])
    line = _LINE_RE.search(message)
    unit = "data row" if named and named.group(1) in origin else "line"  # CSVs are read as converted JSON
    near = f" near {unit} {line.group(1)}" if line else ""
    detail = _FILE_RE.sub("", message).strip()
    return LoadError(_refused(f"{where}:{near} {detail}"))


def _diagnose(spec: TableSpec, path: Path, origin: dict[str, Path]) -> str | None:
    """Re-read one file (error path only) and describe its first bad line, row or column, or None."""
    if str(path) in origin:
        return _diagnose_csv(spec, origin[str(path)])
    if _format_of(path) == "parquet":
        return _diagnose_parquet(spec, path)
    return _diagnose_json(spec, path)


def _diagnose_parquet(spec: TableSpec, path: Path) -> str | None:
    """The first row of a Parquet file lacking a required column, or its first column that won't convert."""
    conn = duckdb.connect()
    source = f"read_parquet({_lit(str(path))}, hive_partitioning = false, file_row_number = true)"
    try:
        _quiet_utc(conn)
        found = {r[0]: r[1] for r in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        for name in dict.fromkeys([*spec.event_key, spec.time_column]):
            if name in found:
                row = conn.execute(
                    f"SELECT min(file_row_number) FROM {source} WHERE {_ident(name)} IS NULL"
                ).fetchone()
                if row and row[0] is not None:
                    return f"{path}: row {row[0] + 1}: column {name} is missing; {_required_note(spec)}"
        for col in spec.columns:
            if col.name not in found:
                continue
            expr = _convert(_ident(col.name), found[col.name], col.duckdb_type)
            try:
                conn.execute(f"SELECT count(*) FROM {source} WHERE ({expr}) IS NULL").fetchone()
            except duckdb.Error as exc:
                return f"{path}: column {col.name} does not convert to {col.duckdb_type}: {_first_line(exc)}"
    except duckdb.Error:
        return None
    finally:
        conn.close()
    return None


def _diagnose_json(spec: TableSpec, path: Path) -> str | None:
    """The first line of a JSON-lines file that is malformed or doesn't fit the catalog, described."""
    lineno = 0
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.rstrip("\r\n"), object_pairs_hook=_no_duplicate_keys)
                except ValueError as exc:
                    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    col = f", column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                    if not line.endswith("\n") and isinstance(exc, json.JSONDecodeError):
                        reason += " (the file looks truncated)"
                    return f"{path}: line {lineno}{col}: malformed JSON: {reason}"
                problem = _check_row(spec, obj)
                if problem:
                    return f"{path}: line {lineno}: {problem}"
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        return f"{path}: line {lineno + 1}: unreadable ({exc}); the file looks truncated or corrupt"
    return None


def _diagnose_csv(spec: TableSpec, path: Path) -> str | None:
    """The first line of a CSV file whose cells don't fit the catalog (nested cells must be JSON)."""
    types = _column_types(spec.name)
    dialect: dict[str, Any] = {}
    sniffer = duckdb.connect()
    try:
        _quiet_utc(sniffer)
        sniffed = sniffer.execute(
            f"SELECT Delimiter, Quote, Escape FROM sniff_csv({_lit(str(path))}, header = true)"
        ).fetchone()
        if sniffed:
            delim, quote, escape = sniffed
            dialect = {"delimiter": delim or ",", "quotechar": quote or '"'}
            if escape and escape != quote:
                dialect.update(escapechar=escape, doublequote=False)
    except duckdb.Error:
        dialect = {}
    finally:
        sniffer.close()
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh, strict=True, **dialect)
            header = next(reader, [])
            for row in reader:
                if not any(row):
                    continue
                if len(row) != len(header):
                    return (
                        f"{path}: line {reader.line_num}: {len(row)} cells but the header has {len(header)}"
                    )
                obj: dict[str, Any] = {}
                for name, cell in zip(header, row, strict=True):
                    if cell == "" or name not in types:
                        continue
                    if types[name].id in _NESTED:
                        try:
                            obj[name] = json.loads(cell)
                        except ValueError:
                            return (
                                f"{path}: line {reader.line_num}: column {name} holds {cell[:60]!r}, "
                                "which is not JSON text; nested columns in CSV must be JSON (as "
                                "Databricks SQL downloads write them)"
                            )
                    else:
                        obj[name] = cell
                problem = _check_row(spec, obj)
                if problem:
                    return f"{path}: line {reader.line_num}: {problem}"
    except csv.Error as exc:
        return f"{path}: line {reader.line_num}: bad CSV ({exc})"
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        return f"{path}: unreadable ({exc}); the file looks truncated or corrupt, re-export it"
    return None


def _csv_error(exc: duckdb.Error, spec: TableSpec, path: Path) -> LoadError:
    """A LoadError for a CSV DuckDB could not read or convert, with the line found by re-reading."""
    found = _diagnose_csv(spec, path)
    if found:
        return LoadError(_refused(found))
    message = _first_line(exc)
    line = _LINE_RE.search(str(exc))
    near = f" line {line.group(1)}:" if line else ""
    return LoadError(_refused(f"{path}:{near} bad CSV ({message})"))


def _check_row(spec: TableSpec, obj: Any) -> str | None:
    """What is wrong with one parsed row: unknown or missing columns, or a type mismatch."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    types = _column_types(spec.name)
    unknown = [k for k in obj if k not in types]
    if unknown:
        return f"unknown column(s) {', '.join(unknown)} for {spec.name}"
    for required in dict.fromkeys([*spec.event_key, spec.time_column]):
        if obj.get(required) is None:
            return f"column {required} is missing; {_required_note(spec)}"
    for name, value in obj.items():
        problem = _check_value(value, types[name], name)
        if problem:
            return problem
    return None


def _check_value(value: Any, t: DuckDBPyType, path: str) -> str | None:
    """Why `value` can't be read as type `t` (close enough to DuckDB's JSON reader to find the line)."""
    if value is None:
        return None
    kind = t.id
    if kind == "struct":
        if not isinstance(value, dict):
            return f"column {path} should be a struct (JSON object) but holds {_show(value)}"
        fields = dict(t.children)
        extra = [k for k in value if k not in fields]
        if extra:
            return f"unknown field(s) {', '.join(f'{path}.{k}' for k in extra)}"
        for k, v in value.items():
            problem = _check_value(v, fields[k], f"{path}.{k}")
            if problem:
                return problem
        return None
    if kind == "map":
        if not isinstance(value, dict):
            return f"column {path} should be a map (JSON object) but holds {_show(value)}"
        value_type = t.children[1][1]
        for k, v in value.items():
            problem = _check_value(v, value_type, f"{path}[{k!r}]")
            if problem:
                return problem
        return None
    if kind == "list":
        if not isinstance(value, list):
            return f"column {path} should be an array but holds {_show(value)}"
        for n, v in enumerate(value):
            problem = _check_value(v, t.children[0][1], f"{path}[{n}]")
            if problem:
                return problem
        return None
    if kind in ("timestamp", "timestamp with time zone"):
        if not (isinstance(value, str) and _TIMESTAMP_RE.match(value)):
            return (
                f"column {path} should be a timestamp like 2026-11-20T08:15:02.123Z but holds {_show(value)}"
            )
        return None
    if kind == "date":
        if not (isinstance(value, str) and _DATE_RE.match(value)):
            return f"column {path} should be a date like 2026-11-20 but holds {_show(value)}"
        return None
    if kind in _INT_RANGES or kind in ("double", "float", "decimal"):
        number = _as_number(value)
        if number is None:
            return f"column {path} should be a number ({t}) but holds {_show(value)}"
        limit = _INT_RANGES.get(kind)
        if limit is not None and not -limit <= number < limit:
            return f"column {path} holds {_show(value)}, out of range for {t}"
        return None
    if kind == "boolean":
        if isinstance(value, (dict, list)) or (
            isinstance(value, str) and value.strip().lower() not in ("true", "false", "t", "f", "1", "0")
        ):
            return f"column {path} should be true or false but holds {_show(value)}"
        return None
    return None


def _show(value: Any) -> str:
    """A short JSON rendering of a bad value for an error message."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_number(value: Any) -> float | None:
    """A JSON value as a number the way DuckDB casts it (numbers and numeric text), or None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads hook: DuckDB refuses objects with a repeated key, so the diagnosis does too."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


# --- small helpers ------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    """A text reader over a plain or gzip-compressed file."""
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _first_char(path: Path) -> str:
    """The first non-blank character of a (possibly compressed) file, or '' if it is empty."""
    try:
        with _open_text(path) as fh:
            for chunk in iter(lambda: fh.read(4096), ""):
                stripped = chunk.lstrip()
                if stripped:
                    return stripped[0]
    except (UnicodeDecodeError, EOFError, OSError):
        return ""
    return ""


def _quiet_utc(conn: duckdb.DuckDBPyConnection) -> None:
    """Session settings for every loader connection: UTC for zone conversions, no progress bar on stdout."""
    conn.execute("SET TimeZone = 'UTC'")  # session-local: TIMESTAMPTZ -> TIMESTAMP casts land in UTC
    conn.execute("SET enable_progress_bar = false")  # stdout may be an MCP stdio pipe


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without DuckDB's error-class prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^[A-Za-z ]+ Error: ", "", text)


def _lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _file_list(files: list[Path]) -> str:
    """A DuckDB list literal of file paths."""
    return "[" + ", ".join(_lit(str(p)) for p in files) + "]"
