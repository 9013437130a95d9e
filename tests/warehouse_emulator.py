"""A local Databricks SQL warehouse speaking the Statement Execution API 2.0 over real HTTP, for tests and benchmarks.

We cannot reach Databricks from here, so this server stands in for a workspace well enough that the real
`databricks-sdk` `WorkspaceClient` talks to it unchanged: unified auth (PAT or OAuth M2M), retries on 429/503,
typed statement parameters, the wait/poll/cancel life cycle, chunked results inline or as external links. The SQL
itself runs in an `Executor` you pass in (DuckDB in the tests), which returns the full result as Arrow.

Reference: https://docs.databricks.com/api/workspace/statementexecution (and the SDK's own docstrings, which are
generated from the same OpenAPI spec: `databricks/sdk/service/sql.py`, class `StatementExecutionAPI`).

Implemented request fields
    POST /api/2.0/sql/statements (executeStatement): `statement`, `warehouse_id`, `catalog`, `schema`,
        `parameters` [{`name`, `value`, `type`}], `row_limit`, `byte_limit`, `disposition` (INLINE | EXTERNAL_LINKS),
        `format` (JSON_ARRAY | ARROW_STREAM | CSV), `wait_timeout` ("0s" or "5s".."50s", default "10s"),
        `on_wait_timeout` (CONTINUE | CANCEL), `query_tags` [{`key`, `value`}] (accepted and kept).
    GET  /api/2.0/sql/statements/{statement_id} (getStatement)
    GET  /api/2.0/sql/statements/{statement_id}/result/chunks/{chunk_index} (getStatementResultChunkN)
    POST /api/2.0/sql/statements/{statement_id}/cancel (cancelExecution): answers `{}`.
    GET  /api/2.0/sql/warehouses/{id} (warehouses.get)

Implemented response fields
    StatementResponse: `statement_id`, `status` {`state`, `error` {`error_code`, `message`}, `sql_state`},
        `manifest`, `result`.
    ResultManifest: `format`, `schema` {`column_count`, `columns` [{`name`, `position`, `type_name`, `type_text`,
        `type_precision`, `type_scale`}]}, `total_chunk_count`, `chunks` [{`chunk_index`, `row_offset`,
        `row_count`, `byte_count`}], `total_row_count`, `total_byte_count`, `truncated`. As documented, `byte_count`
        and `total_byte_count` are "not available when using INLINE disposition" and so left out there.
    ResultData: `chunk_index`, `row_offset`, `row_count`, `data_array`, `next_chunk_index`,
        `next_chunk_internal_link` (INLINE); `external_links` [{`chunk_index`, `row_offset`, `row_count`,
        `byte_count`, `external_link`, `expiration`, `next_chunk_index`, `next_chunk_internal_link`}] (EXTERNAL_LINKS,
        one link per response, as the docs say "Currently only a single link is returned").
    GetWarehouseResponse: `id`, `name`, `state`, `cluster_size`, `num_clusters`, `num_active_sessions`,
        `min_num_clusters`, `max_num_clusters`, `auto_stop_mins`, `enable_photon`, `enable_serverless_compute`,
        `warehouse_type`, `creator_name`.
    Errors: `{"error_code", "message"}` with the HTTP status (databricks/sdk/errors/deserializer.py reads exactly
        these two keys, plus `details`); a 429/503 may carry `Retry-After` in whole seconds (a fractional
        `retry_after` is rounded to the nearest), the only form the SDK parses (errors/customizer.py
        `_RetryAfterCustomizer`; a missing or unparsable header makes it wait 1 s, plus up to 1 s of jitter).

Behaviour taken from the docs (SDK docstrings of `StatementExecutionAPI`)
    * `wait_timeout=0s` answers at once with PENDING and the id; 5-50 s waits; then CONTINUE answers with the current
      state and CANCEL cancels and answers CANCELED. A statement the warehouse ran and failed is HTTP 200, state
      FAILED, details in `status.error`; a request refused outright is a non-200.
    * ARROW_STREAM and CSV only with EXTERNAL_LINKS; INLINE results above 25 MiB fail; positional `?` markers are not
      supported; a parameter without `type` is a STRING, without `value` a NULL.
    * JSON_ARRAY values are "the string representation of a value, or null"; CSV follows RFC 4180, `null` for NULL,
      the header row on the first chunk only; ARROW_STREAM chunks are Arrow IPC streams.
    * External links are short-lived (<= 15 minutes) cloud-storage URLs that must be fetched without the
      `Authorization` header; each chunk but the last names the next one.
    * Cancellation "might silently fail": a statement that already ended keeps its terminal state.
    * Results are available for one hour after success (`result_ttl_seconds` here), then the statement is CLOSED.

Facts taken from public reports rather than the reference (the reference does not document them)
    * No or unsupported credential: 401 `{"error_code": 401, "message": "Credential was not sent or was of an
      unsupported type for this API. [ReqId: ...]"}` (github.com/PipedreamHQ/pipedream/issues/20701).
    * Unknown PAT: 403 `{"error_code": 403, "message": "Invalid access token."}` with header
      `X-Databricks-Reason-Phrase` (github.com/databricks/databricks-sdk-go/issues/873,
      github.com/databricks/terraform-provider-databricks/issues/917). The code is a number there, not a string.
    * Expired token: 401 "Token is expired" (github.com/databrickslabs/splunk-integration/issues/55).
    * Chunk of an expired result: 404 `NOT_FOUND` "The result of the statement <id> was not found."
      (github.com/databricks/databricks-jdbc/pull/1302).
    * Permission failure text, as a public app's tests transcribe it from the API:
      "[INSUFFICIENT_PERMISSIONS] Insufficient privileges:\\nUser does not have SELECT on Table 'cat.sch.t'
      SQLSTATE: 42501" (a line break after "privileges:", no full stop before SQLSTATE).
    * An empty result has `total_chunk_count` 0 and no data (databricks-sql-python, backend/sea/queue.py).
    * "Inline byte limit exceeded" is how an oversized INLINE result fails (reported by users; the rest of our message
      is our own wording).
    * The SDK finds OAuth endpoints through `GET /.well-known/databricks-config` (`oidc_endpoint`), then
      `{oidc_endpoint}/.well-known/oauth-authorization-server`, and posts `grant_type=client_credentials` (plus
      `scope`) as a form with HTTP Basic client credentials (sdk/config.py `_resolve_host_metadata`,
      credentials_provider.py `oauth_service_principal`, oauth.py `retrieve_token`).

Our own choices where nothing public settles it (kept plain so a test can state them): an unknown warehouse is
404 RESOURCE_DOES_NOT_EXIST "Warehouse <id> does not exist."; an unknown statement is 404 NOT_FOUND; a chunk of a
statement that has not SUCCEEDED is 400 BAD_REQUEST; an empty result answers `"result": {}`; TIMESTAMP in JSON_ARRAY
is ISO 8601 in UTC with milliseconds and `Z` (microseconds when present), TIMESTAMP_NTZ the same without `Z` and with
`type_name` TIMESTAMP (the SDK's ColumnInfoTypeName has no TIMESTAMP_NTZ); BINARY is base64 (databricks-sql-python's
SEA converter reads hex, so this one is uncertain); doubles print as Java's `Double.toString`, as Spark casts them;
nested values are compact JSON (Spark's `to_json`); unqualified table names resolve against the request's catalog
and schema, else hive_metastore.default; an external link refused or expired answers S3-style XML.

Beyond the agreed interface: `link_ttl_seconds` (default 15 min) and `wait_scale` (default 1; < 1 shortens every
wait_timeout so tests need not sit through the documented 5 s minimum).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import datetime as dt
import decimal
import io
import json
import math
import re
import secrets
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
import uvicorn
from sqlglot import exp
from sqlglot.tokens import TokenType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Executor = Callable[[str, str, dict[str, Any], str | None, str | None], pa.Table]
Canceller = Callable[[str], None]

INLINE_LIMIT_BYTES = 25 * 1024 * 1024
LINK_TTL_SECONDS = 15 * 60.0
DEFAULT_CATALOG, DEFAULT_SCHEMA = "hive_metastore", "default"
_STATEMENTS = "/api/2.0/sql/statements"
_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"})
_WAREHOUSE_STATES = frozenset({"RUNNING", "STARTING", "STOPPED", "STOPPING", "DELETED", "DELETING"})
# Error classes whose SQLSTATE Databricks documents, for messages that name the class but not the state.
_SQLSTATES = {"TABLE_OR_VIEW_NOT_FOUND": "42P01", "PARSE_SYNTAX_ERROR": "42601", "UNRESOLVED_COLUMN": "42703",
              "UNRESOLVED_ROUTINE": "42883", "SCHEMA_NOT_FOUND": "42704", "INSUFFICIENT_PERMISSIONS": "42501",
              "DIVIDE_BY_ZERO": "22012", "CAST_INVALID_INPUT": "22018", "UNBOUND_SQL_PARAMETER": "42P02"}


class _Refusal(Exception):
    """A request the API turns down before any statement exists: a non-200 in the documented error shape."""

    def __init__(self, status: int, error_code: str | int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message

    def response(self) -> JSONResponse:
        """The HTTP answer a client sees."""
        return _error(self.status, self.error_code, self.message)


class _Failure(Exception):
    """A statement the warehouse ran and that failed: HTTP 200 with state FAILED and `status.error`."""

    def __init__(self, message: str, error_code: str = "BAD_REQUEST", sql_state: str | None = None) -> None:
        super().__init__(message)
        self.message, self.error_code = message, error_code
        self.sql_state = sql_state or _sql_state(message)

    @classmethod
    def from_exception(cls, error: BaseException) -> _Failure:
        """The executor's exception as Databricks reports it: the first line as message, SQLSTATE when it has one."""
        text = str(error).strip() or type(error).__name__
        return cls(text.splitlines()[0], sql_state=_sql_state(text))


def _sql_state(text: str) -> str | None:
    """The SQLSTATE a Databricks error message carries, or that its error class implies."""
    if found := re.search(r"SQLSTATE: ([0-9A-Z]{5})", text):
        return found.group(1)
    if found := re.match(r"\s*\[([A-Z_]+)(?:\.[A-Z_]+)?\]", text):
        return _SQLSTATES.get(found.group(1))
    return None


def _error(status: int, error_code: str | int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An API error in the shape the SDK's deserializer reads."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status, headers=headers)


def _storage_error(status: int, code: str, message: str) -> Response:
    """An error as cloud storage (S3) answers it: XML, no Databricks shape."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>")
    return Response(body, status_code=status, media_type="application/xml")


def _rfc3339(moment: float) -> str:
    """A wall-clock instant as the API writes `expiration`: UTC, milliseconds, `Z`."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------------------------------------------------------
# Statement parameters: strings with an optional type, cast as Databricks' `cast` function would.
# ---------------------------------------------------------------------------------------------------------------

_INT_BITS = {"TINYINT": 8, "BYTE": 8, "SMALLINT": 16, "SHORT": 16, "INT": 32, "INTEGER": 32, "BIGINT": 64, "LONG": 64}
_TRUE, _FALSE = {"t", "true", "y", "yes", "1"}, {"f", "false", "n", "no", "0"}
_DECIMAL = re.compile(r"(?:DECIMAL|DEC|NUMERIC)(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?")
_STRINGS = re.compile(r"STRING|(?:VAR)?CHAR\(\s*\d+\s*\)")
_SCALARS = {"BOOLEAN", "FLOAT", "REAL", "DOUBLE", "DATE", "TIMESTAMP", "TIMESTAMP_LTZ", "TIMESTAMP_NTZ", "BINARY"}


def _param_type(text: Any) -> str:
    """The parameter's type, upper-cased; a type we do not cast is refused like any bad request field."""
    kind = "STRING" if text is None else str(text).strip().upper()
    if kind in _INT_BITS or kind in _SCALARS or _DECIMAL.fullmatch(kind) or _STRINGS.fullmatch(kind):
        return kind
    raise _Refusal(400, "INVALID_PARAMETER_VALUE", f"Unsupported parameter type: {text}. Complex types such as "
                   "ARRAY, MAP and STRUCT are not supported.")


def _malformed(value: str, kind: str) -> _Failure:
    """Spark's CAST_INVALID_INPUT, which is what a parameter that does not cast to its type produces."""
    return _Failure(f"[CAST_INVALID_INPUT] The value '{value}' of the type \"STRING\" cannot be cast to \"{kind}\" "
                    "because it is malformed. Correct the value as per the syntax, or change its target type. Use "
                    "`try_cast` to tolerate malformed input and return NULL instead. SQLSTATE: 22018")


def _parse_timestamp(text: str) -> dt.datetime:
    """A timestamp literal as Spark's cast reads it: a date, an optional time, an optional zone."""
    return dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))


def _cast(value: str | None, kind: str) -> Any:
    """One parameter's value as the typed Python value the executor binds; `_Failure` when it does not cast."""
    if value is None:
        return None
    text = str(value)
    try:
        if _STRINGS.fullmatch(kind):
            return text
        if kind in _INT_BITS:
            if not re.fullmatch(r"\s*[+-]?\d+(\.\d*)?\s*", text):
                raise ValueError(text)
            number, bits = int(text.strip().split(".")[0]), _INT_BITS[kind]
            if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
                raise ValueError(text)
            return number
        if kind == "BOOLEAN":
            word = text.strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
            raise ValueError(text)
        if kind in ("FLOAT", "REAL", "DOUBLE"):
            return float(text.strip())
        if match := _DECIMAL.fullmatch(kind):
            precision, scale = int(match.group(1) or 10), int(match.group(2) or 0)
            number = decimal.Decimal(text.strip()).quantize(decimal.Decimal(1).scaleb(-scale), decimal.ROUND_HALF_UP)
            if not number.is_finite() or (len(number.as_tuple().digits) > precision and number != 0):
                raise ValueError(text)
            return number
        if kind == "DATE":
            match = re.fullmatch(r"\s*(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?(?:[T ].*)?\s*", text)
            if not match:
                raise ValueError(text)
            return dt.date(int(match.group(1)), int(match.group(2) or 1), int(match.group(3) or 1))
        if kind in ("TIMESTAMP", "TIMESTAMP_LTZ"):
            moment = _parse_timestamp(text)  # no zone: the session's, which is UTC here
            return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
        if kind == "TIMESTAMP_NTZ":
            return _parse_timestamp(text).replace(tzinfo=None)
        return text.encode()  # BINARY: cast of a string is its UTF-8 bytes
    except (ValueError, ArithmeticError):
        raise _malformed(text, kind) from None


# ---------------------------------------------------------------------------------------------------------------
# Results: Databricks types for Arrow types, and the string representation JSON_ARRAY and CSV use.
# ---------------------------------------------------------------------------------------------------------------


def _type(t: pa.DataType) -> tuple[str, str]:
    """(`type_name`, `type_text`) for an Arrow type, in Databricks' names."""
    if pa.types.is_dictionary(t):
        return _type(t.value_type)
    simple = [(pa.types.is_boolean, "BOOLEAN", "BOOLEAN"), (pa.types.is_int8, "BYTE", "TINYINT"),
              (pa.types.is_int16, "SHORT", "SMALLINT"), (pa.types.is_uint8, "SHORT", "SMALLINT"),
              (pa.types.is_int32, "INT", "INT"), (pa.types.is_uint16, "INT", "INT"),
              (pa.types.is_int64, "LONG", "BIGINT"), (pa.types.is_uint32, "LONG", "BIGINT"),
              (pa.types.is_float16, "FLOAT", "FLOAT"), (pa.types.is_float32, "FLOAT", "FLOAT"),
              (pa.types.is_float64, "DOUBLE", "DOUBLE"), (pa.types.is_date, "DATE", "DATE"),
              (pa.types.is_null, "NULL", "VOID"), (pa.types.is_duration, "INTERVAL", "INTERVAL DAY TO SECOND"),
              (pa.types.is_interval, "INTERVAL", "INTERVAL")]
    for test, name, text in simple:
        if test(t):
            return name, text
    if pa.types.is_uint64(t):
        return "DECIMAL", "DECIMAL(20,0)"
    if pa.types.is_decimal(t):
        return "DECIMAL", f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP", "TIMESTAMP" if t.tz else "TIMESTAMP_NTZ"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return "BINARY", "BINARY"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or pa.types.is_list_view(t):
        return "ARRAY", f"ARRAY<{_type(t.value_type)[1]}>"
    if pa.types.is_map(t):
        return "MAP", f"MAP<{_type(t.key_type)[1]}, {_type(t.item_type)[1]}>"
    if pa.types.is_struct(t):
        return "STRUCT", "STRUCT<" + ", ".join(f"{f.name}: {_type(f.type)[1]}" for f in t) + ">"
    return "STRING", "STRING"  # strings, and types Databricks has no name for (TIME): printed as text


def _column(position: int, f: pa.Field) -> dict[str, Any]:
    """One `ColumnInfo` of the manifest's schema."""
    name, text = _type(f.type)
    info: dict[str, Any] = {"name": f.name, "position": position, "type_name": name, "type_text": text}
    if name == "DECIMAL":
        precision, scale = re.findall(r"\d+", text)
        info.update(type_precision=int(precision), type_scale=int(scale))
    return info


def _java_number(shortest: str, x: float) -> str:
    """A float as Java's Double/Float.toString prints it: plain in [1e-3, 1e7), else `d.dddE±n`."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    number = decimal.Decimal(shortest)
    sign, digits, exponent = number.as_tuple()
    minus = "-" if sign else ""
    if 1e-3 <= abs(x) < 1e7:
        plain = format(abs(number), "f")
        return minus + (plain if "." in plain else plain + ".0")
    text = "".join(map(str, digits)).rstrip("0") or "0"
    return f"{minus}{text[0]}.{text[1:] or '0'}E{len(digits) + int(exponent) - 1}"


def _double_text(x: float) -> str:
    """A DOUBLE as Spark prints it."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return _java_number(repr(x), x)


def _float_text(x: float) -> str:
    """A FLOAT as Spark prints it: the shortest digits that read back as the same 32-bit float."""
    if math.isnan(x) or math.isinf(x):
        return _double_text(x)
    shortest = repr(x)
    for digits in range(1, 10):
        shortest = f"{x:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(shortest)))[0] == x:
            break
    return _java_number(shortest, x)


def _timestamp_text(moment: dt.datetime, with_zone: bool) -> str:
    """ISO 8601 with milliseconds (microseconds when it has them); UTC and `Z` for a zoned timestamp."""
    if with_zone and moment.tzinfo is not None:  # a naive value of a zoned column is already UTC
        moment = moment.astimezone(dt.UTC)
    micros = moment.microsecond
    fraction = f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}"
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}{fraction}{'Z' if with_zone else ''}")


def _day_time_text(total_micros: int) -> str:
    """A day-time interval in Spark's literal form."""
    sign, total_micros = ("-" if total_micros < 0 else ""), abs(total_micros)
    days, rest = divmod(total_micros, 86_400_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    clock = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" + (f".{micros:06d}" * bool(micros))
    return f"INTERVAL '{sign}{days} {clock}' DAY TO SECOND"


def _interval_text(value: Any) -> str:
    """A year-month or day-time interval in Spark's literal form."""
    if isinstance(value, dt.timedelta):
        return _day_time_text(value // dt.timedelta(microseconds=1))
    months, days, nanos = value.months, value.days, value.nanoseconds
    if months and not days and not nanos:
        sign, months = ("-" if months < 0 else ""), abs(months)
        return f"INTERVAL '{sign}{months // 12}-{months % 12}' YEAR TO MONTH"
    return _day_time_text(days * 86_400_000_000 + nanos // 1000)


def _scalar_text(t: pa.DataType) -> Callable[[Any], str]:
    """How a non-null value of type `t` prints in JSON_ARRAY and CSV."""
    if pa.types.is_dictionary(t):
        return _scalar_text(t.value_type)
    if pa.types.is_boolean(t):
        return lambda v: "true" if v else "false"
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return _float_text
    if pa.types.is_floating(t):
        return _double_text
    if pa.types.is_decimal(t):
        return lambda v: format(v, "f")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return lambda v: base64.b64encode(v).decode()
    if pa.types.is_timestamp(t):
        zoned = bool(t.tz)
        return lambda v: _timestamp_text(v, zoned)
    if pa.types.is_date(t) or pa.types.is_time(t):
        return lambda v: v.isoformat()
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return _interval_text
    if pa.types.is_nested(t):
        return lambda v: _json_text(v, t)
    return str


def _json_text(value: Any, t: pa.DataType) -> str:
    """A value inside an ARRAY, MAP or STRUCT as compact JSON, typed as JSON types it (Spark's `to_json`)."""
    if value is None:
        return "null"
    if pa.types.is_dictionary(t):
        return _json_text(value, t.value_type)
    if pa.types.is_boolean(t):
        return "true" if value else "false"
    if pa.types.is_integer(t) or pa.types.is_decimal(t):
        return _scalar_text(t)(value)
    if pa.types.is_floating(t):
        text = _scalar_text(t)(value)
        return text if math.isfinite(value) else json.dumps(text)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or pa.types.is_list_view(t):
        return "[" + ",".join(_json_text(item, t.value_type) for item in value) + "]"
    if pa.types.is_struct(t):
        return "{" + ",".join(f"{json.dumps(f.name)}:{_json_text(value.get(f.name), f.type)}" for f in t) + "}"
    if pa.types.is_map(t):
        key = _scalar_text(t.key_type)
        return "{" + ",".join(f"{json.dumps(key(k))}:{_json_text(v, t.item_type)}" for k, v in value) + "}"
    if pa.types.is_null(t):
        return "null"
    return json.dumps(_scalar_text(t)(value), ensure_ascii=False)


def _plain_type(t: pa.DataType) -> pa.DataType:
    """`t` with what `to_pylist` handles slowly or not at all replaced: zones dropped (values stay UTC, and pyarrow
    would import pandas to apply a zone), nanoseconds cut to microseconds, dictionaries decoded."""
    if pa.types.is_dictionary(t):
        return _plain_type(t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us")
    if pa.types.is_duration(t):
        return pa.duration("us")
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item = pa.field(t.value_field.name, _plain_type(t.value_type), t.value_field.nullable)
        if pa.types.is_fixed_size_list(t):
            return pa.list_(item, t.list_size)
        return pa.large_list(item) if pa.types.is_large_list(t) else pa.list_(item)
    if pa.types.is_map(t):
        return pa.map_(_plain_type(t.key_type), _plain_type(t.item_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _plain_type(f.type), f.nullable) for f in t])
    return t


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column with `_plain_type`, so `to_pylist` gives plain Python values quickly."""
    target = _plain_type(column.type)
    if target.equals(column.type):
        return column
    try:
        return pc.cast(column, target, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return column


def _text_rows(table: pa.Table) -> list[list[str | None]]:
    """Each row as the JSON_ARRAY format has it: every value its string representation, or None for NULL."""
    columns = []
    for column in table.columns:
        render = _scalar_text(column.type)  # the original type: it knows which timestamps are zoned
        columns.append([None if v is None else render(v) for v in _plain(column).to_pylist()])
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in range(table.num_rows)]


def _chunk_payload(table: pa.Table, fmt: str, header: bool) -> bytes:
    """The file an external link serves for one chunk, in the requested format."""
    if fmt == "ARROW_STREAM":
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()
    rows = _text_rows(table)
    if fmt == "JSON_ARRAY":
        return json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode()
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF line ends, quotes only where needed
    if header:
        writer.writerow(table.column_names)
    writer.writerows([["null" if v is None else v for v in row] for row in rows])
    return out.getvalue().encode()


def _rows_within(table: pa.Table, byte_limit: int) -> int:
    """How many leading whole rows fit in `byte_limit`, measured on Arrow (the API's "internal representation")."""
    low, high = 0, table.num_rows
    while low < high:
        middle = (low + high + 1) // 2
        if table.slice(0, middle).nbytes <= byte_limit:
            low = middle
        else:
            high = middle - 1
    return low


# ---------------------------------------------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """One chunk of a result: rendered rows for INLINE, the file bytes for EXTERNAL_LINKS."""

    index: int
    row_offset: int
    row_count: int
    data_array: list[list[str | None]] | None = None
    payload: bytes | None = None


@dataclass
class _Statement:
    """Everything the warehouse knows about one submitted statement."""

    id: str
    text: str
    parameters: list[tuple[str, str | None, str]]
    catalog: str | None
    schema: str | None
    warehouse_id: str
    disposition: str
    format: str
    row_limit: int | None
    byte_limit: int | None
    query_tags: list[dict[str, Any]]
    principal: str
    state: str = "PENDING"
    states: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    sql_state: str | None = None
    manifest: dict[str, Any] | None = None
    chunks: list[_Chunk] = field(default_factory=list)
    succeeded_at: float | None = None
    future: Future[None] | None = None
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(default_factory=list)


@dataclass
class _Injection:
    """A scripted HTTP error for the next matching requests (throttling, maintenance)."""

    status: int
    error_code: str
    message: str
    remaining: int
    retry_after: float | None
    path_contains: str


class _Server(uvicorn.Server):
    """uvicorn's server, stopping within 10 ms of being asked rather than its 0.1 s tick plus a 0.1 s grace."""

    async def main_loop(self) -> None:
        """uvicorn's loop, ticking every 10 ms instead of every 100 ms."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            await asyncio.sleep(0.01)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close listeners and connections at once: a test fixture has no clients worth a grace period."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        for task in list(self.server_state.tasks):
            task.cancel()  # requests still inside a wait_timeout


def _settle(waiter: asyncio.Future[None]) -> None:
    """Wake a request waiting for a statement to end, unless it already gave up."""
    if not waiter.done():
        waiter.set_result(None)


class WarehouseEmulator:
    """A SQL warehouse and its workspace API on 127.0.0.1, so the real SDK can be tested without Databricks."""

    def __init__(self, executor: Executor, *, canceller: Canceller | None = None,
                 tokens: Iterable[str] = ("dapi-test-token",), expired_tokens: Iterable[str] = (),
                 clients: dict[str, str] | None = None, warehouses: dict[str, str] | None = None,
                 start_seconds: float = 0.0, denied: dict[str, set[str]] | None = None,
                 chunk_rows: int = 10_000, max_concurrency: int = 8, result_ttl_seconds: float = 3600.0,
                 link_ttl_seconds: float = LINK_TTL_SECONDS, wait_scale: float = 1.0) -> None:
        """Configure the workspace; `link_ttl_seconds` and `wait_scale` (beyond the agreed interface) let tests see
        links expire and the documented 5-50 s waits end quickly."""
        self._executor, self._canceller = executor, canceller
        self._tokens, self._expired = set(tokens), set(expired_tokens)
        self._clients = dict(clients or {})
        self._warehouses = dict(warehouses if warehouses is not None else {"wh-test": "RUNNING"})
        unknown = set(self._warehouses.values()) - _WAREHOUSE_STATES
        if unknown:
            raise ValueError(f"unknown warehouse states: {sorted(unknown)}")
        self._start_seconds = start_seconds
        self._starting_since = {wid: time.monotonic() for wid, s in self._warehouses.items() if s == "STARTING"}
        self._denied = {who: {name.lower() for name in names} for who, names in (denied or {}).items()}
        self._chunk_rows, self._ttl, self._link_ttl = max(1, chunk_rows), result_ttl_seconds, link_ttl_seconds
        self._wait_scale = wait_scale  # < 1 makes the documented 5-50 s waits short enough for unit tests
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="warehouse")
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._statements: dict[str, _Statement] = {}
        self._links: dict[str, tuple[str, int, float]] = {}  # token -> (statement id, chunk index, expires at)
        self._oauth: dict[str, tuple[str, float]] = {}  # access token -> (client id, expires at)
        self._injections: list[_Injection] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._app = Starlette(routes=[Route("/{path:path}", self._dispatch,
                                            methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
        self.url = ""
        self.requests: list[dict[str, Any]] = []

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> WarehouseEmulator:
        """Serve on a free port in a daemon thread; return once it accepts connections."""
        # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted sockets and every keep-alive reply waits 40 ms
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # Signal handlers are only installed on the main thread (uvicorn Server.capture_signals), so none here.
        config = uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="off")
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="warehouse-emulator")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the warehouse emulator did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving, cancel what still runs (so executors return) and drop what is queued."""
        self._closing.set()
        with self._lock:
            running = [s for s in self._statements.values() if s.state == "RUNNING"]
            for statement in running:
                self._set_state(statement, "CANCELED")
        for statement in running:
            if self._canceller is not None:
                with contextlib.suppress(Exception):
                    self._canceller(statement.id)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> WarehouseEmulator:
        """`with WarehouseEmulator(...) as emu:` serves for the block's duration."""
        return self.start()

    def __exit__(self, *_: object) -> None:
        """Stop at the end of the block, whatever happened in it."""
        self.stop()

    # -- test controls --------------------------------------------------------------------------------------------

    def fail_next(self, status: int, error_code: str, message: str, *, count: int = 1,
                  retry_after: float | None = None, path_contains: str = _STATEMENTS) -> None:
        """Answer the next `count` requests whose path contains `path_contains` with this error (429/503 drills);
        `count=0` drops the ones still pending for that `path_contains`. Several calls queue up in order."""
        with self._lock:
            if count <= 0:
                self._injections = [i for i in self._injections if i.path_contains != path_contains]
            else:
                self._injections.append(_Injection(status, error_code, message, count, retry_after, path_contains))

    def set_warehouse(self, warehouse_id: str, state: str) -> None:
        """Put a warehouse in a state, as an admin or the auto-stop would."""
        if state not in _WAREHOUSE_STATES:
            raise ValueError(f"unknown warehouse state {state}")
        with self._lock:
            self._warehouses[warehouse_id] = state
            if state == "STARTING":
                self._starting_since[warehouse_id] = time.monotonic()

    def states(self, statement_id: str) -> list[str]:
        """Every state the statement went through, in order (CLOSED included once its result expired)."""
        with self._lock:
            statement = self._statements[statement_id]
            self._refresh(statement)
            return list(statement.states)

    # -- state ----------------------------------------------------------------------------------------------------

    def _set_state(self, statement: _Statement, state: str) -> None:
        """Move a statement to `state` (lock held) and wake the requests waiting for it to end."""
        statement.state = state
        statement.states.append(state)
        if state in _TERMINAL:
            for loop, waiter in statement.waiters:
                loop.call_soon_threadsafe(_settle, waiter)
            statement.waiters.clear()

    def _refresh(self, statement: _Statement) -> None:
        """Close a result older than its time to live (lock held): the data is gone for good."""
        if statement.state == "SUCCEEDED" and time.monotonic() - (statement.succeeded_at or 0) > self._ttl:
            statement.chunks, statement.manifest = [], None
            self._set_state(statement, "CLOSED")

    def _warehouse_state(self, warehouse_id: str) -> str | None:
        """The warehouse's state now (lock held): a starting one is running once `start_seconds` have passed."""
        state = self._warehouses.get(warehouse_id)
        started = self._starting_since.get(warehouse_id, 0.0)
        if state == "STARTING" and time.monotonic() - started >= self._start_seconds:
            state = self._warehouses[warehouse_id] = "RUNNING"
        return state

    # -- HTTP -----------------------------------------------------------------------------------------------------

    async def _dispatch(self, request: Request) -> Response:
        """Every request: record it, apply scripted failures, authenticate `/api/`, then route."""
        path, method = request.url.path, request.method
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body,
                                  "authorization": "authorization" in request.headers})
            injected = self._take_injection(path)
        if injected is not None:
            return injected
        try:
            if method == "GET" and path == "/.well-known/databricks-config":
                return JSONResponse({"oidc_endpoint": f"{self.url}/oidc", "workspace_id": "1234567890123456"})
            if method == "GET" and path == "/oidc/.well-known/oauth-authorization-server":
                return JSONResponse(self._oidc_document())
            if method == "POST" and path == "/oidc/v1/token":
                return self._issue_token(request, raw)
            if method == "GET" and path.startswith("/external/"):
                return self._download(request, path.removeprefix("/external/"))
            if path.startswith("/api/"):
                principal = self._authenticate(request)
                if isinstance(principal, Response):
                    return principal
                return await self._api(method, path.rstrip("/"), body, principal)
        except _Refusal as refusal:
            return refusal.response()
        return _error(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")

    def _take_injection(self, path: str) -> Response | None:
        """The scripted error due for this path, if any (lock held)."""
        for injection in self._injections:
            if injection.remaining > 0 and injection.path_contains in path:
                injection.remaining -= 1
                headers = None
                if injection.retry_after is not None:  # whole seconds, the only form Databricks sends and the SDK
                    headers = {"Retry-After": str(int(injection.retry_after + 0.5))}  # parses: 0.1 -> "0"
                return _error(injection.status, injection.error_code, injection.message, headers)
        return None

    def _authenticate(self, request: Request) -> str | Response:
        """The principal behind the bearer token, or the refusal; no answer ever repeats the token."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _error(401, 401, "Credential was not sent or was of an unsupported type for this API. "
                          f"[ReqId: {uuid.uuid4()}]")
        with self._lock:
            issued = self._oauth.get(token)
        if token in self._expired or (issued is not None and issued[1] < time.time()):
            return _error(401, 401, "Token is expired.")
        if token in self._tokens:
            return token
        if issued is not None:
            return issued[0]
        return _error(403, 403, "Invalid access token.", {"X-Databricks-Reason-Phrase": "Invalid access token."})

    async def _api(self, method: str, path: str, body: Any, principal: str) -> Response:
        """Route an authenticated `/api/` request."""
        parts = path.removeprefix("/api/2.0/sql/").split("/")
        if method == "POST" and path == _STATEMENTS:
            return JSONResponse(await self._execute(body if isinstance(body, dict) else {}, principal))
        if path.startswith(_STATEMENTS + "/") and parts[0] == "statements":
            statement = self._statement(parts[1])
            if method == "GET" and len(parts) == 2:
                with self._lock:
                    self._refresh(statement)
                    response = self._response(statement)
                return JSONResponse(response)  # serialized outside the lock: results never change once made
            if method == "POST" and len(parts) == 3 and parts[2] == "cancel":
                await self._cancel(statement)
                return JSONResponse({})
            if method == "GET" and len(parts) == 5 and parts[2:4] == ["result", "chunks"]:
                return JSONResponse(self._chunk_response(statement, parts[4]))
        if method == "GET" and len(parts) == 2 and parts[0] == "warehouses":
            return JSONResponse(self._warehouse(parts[1]))
        return _error(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")

    # -- statements -----------------------------------------------------------------------------------------------

    def _statement(self, statement_id: str) -> _Statement:
        """A known statement, or the 404 the API gives for an unknown id."""
        with self._lock:
            statement = self._statements.get(statement_id)
        if statement is None:
            raise _Refusal(404, "NOT_FOUND", f"The statement {statement_id} was not found.")
        return statement

    def _validated(self, body: dict[str, Any], principal: str) -> tuple[_Statement, int, str]:
        """The statement a request asks for, with its wait and its on-timeout action; `_Refusal` when malformed."""
        def bad(message: str) -> _Refusal:
            return _Refusal(400, "INVALID_PARAMETER_VALUE", message)

        text, warehouse_id = body.get("statement"), body.get("warehouse_id")
        if not isinstance(text, str) or not text.strip():
            raise bad("statement is required and must be a non-empty string.")
        if not isinstance(warehouse_id, str) or not warehouse_id:
            raise bad("warehouse_id is required.")
        wait = body.get("wait_timeout", "10s")
        match = re.fullmatch(r"(\d+)s", wait) if isinstance(wait, str) else None
        if match is None or not (int(match.group(1)) == 0 or 5 <= int(match.group(1)) <= 50):
            raise bad(f"wait_timeout must be 0s or between 5s and 50s, got {wait!r}.")
        on_timeout = body.get("on_wait_timeout", "CONTINUE")
        disposition, fmt = body.get("disposition", "INLINE"), body.get("format", "JSON_ARRAY")
        for name, value, allowed in (("on_wait_timeout", on_timeout, ("CONTINUE", "CANCEL")),
                                     ("disposition", disposition, ("INLINE", "EXTERNAL_LINKS")),
                                     ("format", fmt, ("JSON_ARRAY", "ARROW_STREAM", "CSV"))):
            if value not in allowed:
                raise bad(f"{name} must be one of {', '.join(allowed)}, got {value!r}.")
        if disposition == "INLINE" and fmt != "JSON_ARRAY":
            raise bad(f"{fmt} format is only supported with EXTERNAL_LINKS disposition; INLINE requires JSON_ARRAY.")
        limits = {}
        for name in ("row_limit", "byte_limit"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise bad(f"{name} must be a positive integer, got {value!r}.")
            limits[name] = value
        with contextlib.suppress(sqlglot.errors.TokenError):
            if any(token.token_type == TokenType.PLACEHOLDER and token.text == "?"
                   for token in sqlglot.tokenize(text, read="databricks")):
                raise bad("Positional parameters (?) are not supported by the Statement Execution API; use named "
                          "parameter markers such as :name.")
        parameters = []
        for item in body.get("parameters") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise bad("Each parameter needs a name.")
            value = item.get("value")
            parameters.append((item["name"], None if value is None else str(value), _param_type(item.get("type"))))
        statement = _Statement(
            id=str(uuid.uuid4()), text=text, parameters=parameters, catalog=body.get("catalog"),
            schema=body.get("schema"), warehouse_id=warehouse_id, disposition=disposition, format=fmt,
            row_limit=limits["row_limit"], byte_limit=limits["byte_limit"],
            query_tags=list(body.get("query_tags") or []), principal=principal)
        return statement, int(match.group(1)), on_timeout

    async def _execute(self, body: dict[str, Any], principal: str) -> dict[str, Any]:
        """executeStatement: accept, queue on the warehouse, wait as asked, answer with what is known."""
        statement, wait, on_timeout = self._validated(body, principal)
        with self._lock:
            state = self._warehouse_state(statement.warehouse_id)
            if state is None or state in ("DELETED", "DELETING"):
                raise _Refusal(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {statement.warehouse_id} does not exist.")
            if state in ("STOPPED", "STOPPING"):  # a statement starts its warehouse
                self._warehouses[statement.warehouse_id] = "STARTING"
                self._starting_since[statement.warehouse_id] = time.monotonic()
            self._statements[statement.id] = statement
            self._set_state(statement, "PENDING")
            snapshot = self._response(statement)
        statement.future = self._pool.submit(self._run, statement)
        if wait == 0:
            return snapshot
        await self._wait(statement, wait * self._wait_scale)
        if on_timeout == "CANCEL":
            await self._cancel(statement)
        with self._lock:
            return self._response(statement)

    async def _wait(self, statement: _Statement, seconds: float) -> None:
        """Wait up to `seconds` for the statement to reach a terminal state."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if statement.state in _TERMINAL:
                return
            statement.waiters.append((loop, waiter))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, seconds)

    async def _cancel(self, statement: _Statement) -> None:
        """cancelExecution: a statement not yet ended is CANCELED at once and its work interrupted."""
        with self._lock:
            self._refresh(statement)
            if statement.state in _TERMINAL:
                return  # "cancelation might silently fail": it already ended
            running = statement.state == "RUNNING"
            self._set_state(statement, "CANCELED")
        if statement.future is not None:
            statement.future.cancel()
        if running and self._canceller is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._canceller, statement.id)

    def _run(self, statement: _Statement) -> None:
        """The warehouse's side: wait for it to run, check access, execute, build the result."""
        while True:
            with self._lock:
                if statement.state != "PENDING":
                    return
                if self._warehouse_state(statement.warehouse_id) == "RUNNING":
                    self._set_state(statement, "RUNNING")
                    break
            if self._closing.wait(0.01):
                return
        outcome: _Failure | tuple[dict[str, Any], list[_Chunk]]
        try:
            self._check_access(statement)
            params = {name: _cast(value, kind) for name, value, kind in statement.parameters}
            table = self._executor(statement.id, statement.text, params, statement.catalog, statement.schema)
            outcome = self._result(statement, table)
        except _Failure as failure:
            outcome = failure
        except Exception as error:
            outcome = _Failure.from_exception(error)
        with self._lock:
            if statement.state != "RUNNING":
                return  # canceled while it ran: the result, if any, is dropped
            if isinstance(outcome, _Failure):
                statement.error = {"error_code": outcome.error_code, "message": outcome.message}
                statement.sql_state = outcome.sql_state
                self._set_state(statement, "FAILED")
            else:
                statement.manifest, statement.chunks = outcome
                statement.succeeded_at = time.monotonic()
                self._set_state(statement, "SUCCEEDED")

    def _check_access(self, statement: _Statement) -> None:
        """Fail, before running, a statement that reads a table its principal may not read."""
        denied = self._denied.get(statement.principal)
        if not denied:
            return
        try:
            trees = sqlglot.parse(statement.text, read="databricks")
        except sqlglot.errors.SqlglotError:
            return  # not parseable here: the executor will say why
        for tree in filter(None, trees):
            for table in tree.find_all(exp.Table):
                if not table.name:
                    continue
                name = ".".join((table.catalog or statement.catalog or DEFAULT_CATALOG,
                                 table.db or statement.schema or DEFAULT_SCHEMA, table.name)).lower()
                if name in denied:
                    raise _Failure("[INSUFFICIENT_PERMISSIONS] Insufficient privileges:\n"
                                   f"User does not have SELECT on Table '{name}' SQLSTATE: 42501", sql_state="42501")

    def _result(self, statement: _Statement, table: pa.Table) -> tuple[dict[str, Any], list[_Chunk]]:
        """Limits, the INLINE size cap, chunks and the manifest for an executor's full result."""
        if not isinstance(table, pa.Table):
            raise _Failure(f"The executor returned {type(table).__name__}, not a pyarrow.Table.", "INTERNAL_ERROR")
        truncated = False
        if statement.row_limit is not None and table.num_rows > statement.row_limit:
            table, truncated = table.slice(0, statement.row_limit), True
        if statement.byte_limit is not None and table.nbytes > statement.byte_limit:
            table, truncated = table.slice(0, _rows_within(table, statement.byte_limit)), True
        inline = statement.disposition == "INLINE"
        if inline and table.nbytes > INLINE_LIMIT_BYTES:
            raise _Failure(f"Inline byte limit exceeded. Statements executed with disposition=INLINE can have a "
                           f"result size of at most {INLINE_LIMIT_BYTES} bytes. Please use "
                           "disposition=EXTERNAL_LINKS for large result sets.")
        chunks = []
        for index, offset in enumerate(range(0, table.num_rows, self._chunk_rows)):
            part = table.slice(offset, self._chunk_rows)
            chunk = _Chunk(index, offset, part.num_rows)
            if inline:
                chunk.data_array = _text_rows(part)
            else:
                chunk.payload = _chunk_payload(part, statement.format, header=index == 0)
            chunks.append(chunk)
        manifest: dict[str, Any] = {
            "format": statement.format,
            "schema": {"column_count": table.num_columns,
                       "columns": [_column(i, f) for i, f in enumerate(table.schema)]},
            "total_chunk_count": len(chunks),
            "chunks": [self._chunk_info(statement, c) for c in chunks],
            "total_row_count": table.num_rows,
            "truncated": truncated,
        }
        if not inline:
            manifest["total_byte_count"] = sum(len(c.payload or b"") for c in chunks)
        return manifest, chunks

    @staticmethod
    def _chunk_info(statement: _Statement, chunk: _Chunk) -> dict[str, Any]:
        """A chunk's `BaseChunkInfo`; `byte_count` only with EXTERNAL_LINKS, as documented."""
        info = {"chunk_index": chunk.index, "row_offset": chunk.row_offset, "row_count": chunk.row_count}
        if statement.disposition == "EXTERNAL_LINKS":
            info["byte_count"] = len(chunk.payload or b"")
        return info

    def _response(self, statement: _Statement) -> dict[str, Any]:
        """A StatementResponse (lock held): the status, and manifest plus first chunk once it SUCCEEDED."""
        status: dict[str, Any] = {"state": statement.state}
        if statement.error is not None:
            status["error"] = dict(statement.error)
        if statement.sql_state:
            status["sql_state"] = statement.sql_state
        response: dict[str, Any] = {"statement_id": statement.id, "status": status}
        if statement.state == "SUCCEEDED":
            response["manifest"] = statement.manifest
            response["result"] = self._chunk_data(statement, 0) if statement.chunks else {}
        return response

    def _chunk_data(self, statement: _Statement, index: int) -> dict[str, Any]:
        """A ResultData for one chunk (lock held): rows inline, or one fresh short-lived link."""
        chunk = statement.chunks[index]
        data = self._chunk_info(statement, chunk)
        if index + 1 < len(statement.chunks):
            data["next_chunk_index"] = index + 1
            data["next_chunk_internal_link"] = f"{_STATEMENTS}/{statement.id}/result/chunks/{index + 1}"
        if statement.disposition == "INLINE":
            data["data_array"] = chunk.data_array
            return data
        token, expires = secrets.token_urlsafe(24), time.time() + self._link_ttl
        self._links[token] = (statement.id, index, expires)
        data.update(external_link=f"{self.url}/external/{token}", expiration=_rfc3339(expires))
        return {"external_links": [data]}

    def _chunk_response(self, statement: _Statement, index_text: str) -> dict[str, Any]:
        """getStatementResultChunkN: any chunk of a SUCCEEDED statement, in any order."""
        if not index_text.isdigit():
            raise _Refusal(400, "INVALID_PARAMETER_VALUE", f"chunk_index must be an integer, got {index_text!r}.")
        with self._lock:
            self._refresh(statement)
            if statement.state == "CLOSED":
                raise _Refusal(404, "NOT_FOUND", f"The result of the statement {statement.id} was not found.")
            if statement.state != "SUCCEEDED":
                raise _Refusal(400, "BAD_REQUEST", f"The statement {statement.id} is in state {statement.state}; "
                               "result chunks are available once it has SUCCEEDED.")
            index = int(index_text)
            if index >= len(statement.chunks):
                raise _Refusal(400, "INVALID_PARAMETER_VALUE", f"chunk_index {index} is out of range: the result "
                               f"has {len(statement.chunks)} chunks.")
            return self._chunk_data(statement, index)

    def _download(self, request: Request, token: str) -> Response:
        """An external link, served as cloud storage would: no Authorization header allowed, and it expires."""
        if "authorization" in request.headers:
            return _storage_error(400, "InvalidArgument", "Only one auth mechanism allowed; only the "
                                  "X-Amz-Algorithm query parameter, Signature query string parameter or the "
                                  "Authorization header should be specified")
        with self._lock:
            link = self._links.get(token)
            if link is None:
                return _storage_error(403, "AccessDenied", "Access Denied")
            statement_id, index, expires = link
            if expires < time.time():
                return _storage_error(403, "AccessDenied", "Request has expired")
            statement = self._statements[statement_id]
            self._refresh(statement)
            if statement.state != "SUCCEEDED":
                return _storage_error(404, "NoSuchKey", "The specified key does not exist.")
            payload, fmt = statement.chunks[index].payload or b"", statement.format
        media = {"ARROW_STREAM": "application/vnd.apache.arrow.stream", "CSV": "text/csv"}.get(fmt, "application/json")
        return Response(payload, media_type=media)

    # -- warehouses and OAuth -------------------------------------------------------------------------------------

    def _warehouse(self, warehouse_id: str) -> dict[str, Any]:
        """warehouses.get: the fields `GetWarehouseResponse` parses that a client may look at."""
        with self._lock:
            state = self._warehouse_state(warehouse_id)
            busy = sum(s.state == "RUNNING" and s.warehouse_id == warehouse_id for s in self._statements.values())
        if state is None:
            raise _Refusal(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {warehouse_id} does not exist.")
        return {"id": warehouse_id, "name": f"Emulated warehouse {warehouse_id}", "state": state,
                "cluster_size": "2X-Small", "min_num_clusters": 1, "max_num_clusters": 1,
                "num_clusters": 1 if state == "RUNNING" else 0, "num_active_sessions": busy, "auto_stop_mins": 10,
                "enable_photon": True, "enable_serverless_compute": False, "warehouse_type": "PRO",
                "creator_name": "emulator@example.com"}

    def _oidc_document(self) -> dict[str, Any]:
        """The workspace's OAuth authorization-server metadata (RFC 8414), as the SDK fetches it."""
        base = f"{self.url}/oidc"
        return {"issuer": base, "authorization_endpoint": f"{base}/v1/authorize",
                "token_endpoint": f"{base}/v1/token", "jwks_uri": f"{base}/jwks.json",
                "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
                "response_types_supported": ["code", "id_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["all-apis", "offline_access", "sql"]}

    def _issue_token(self, request: Request, raw: bytes) -> Response:
        """The token endpoint: client_credentials for the configured clients, by HTTP Basic or form fields."""
        form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode(errors="replace")).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type",
                                 "error_description": "Only client_credentials is supported here."}, 400)
        if client_id is None or self._clients.get(client_id) != secret:
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed"}, 401)
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._oauth[token] = (client_id, time.time() + 3600)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3600,
                             "scope": form.get("scope", "all-apis")})
