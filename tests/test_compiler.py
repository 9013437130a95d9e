"""Compile-step transforms keep a rule's meaning: checked by running both forms on the same rows."""

from __future__ import annotations

import duckdb
import sqlglot

from insight_mcp.agents.security.compiler import sargable_pairs
from insight_mcp.agents.sql.dialect import compat_transforms


def _rows(sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('dbfs', 'mount'), ('dbfs', 'read'), "
                "('unityCatalog', 'mount'), ('unityCatalog', 'createStorageCredential'), (NULL, 'mount')) v(s, a)")
    return sorted(con.execute(sql).fetchall(), key=str)


def test_sargable_pairs_adds_conjuncts_without_changing_answers() -> None:
    sql = "SELECT s, a FROM t WHERE concat(s, '.', a) IN ('dbfs.mount', 'unityCatalog.createStorageCredential')"
    tree = sqlglot.parse_one(sql, read="databricks")
    rewritten = sargable_pairs(tree).sql("duckdb")
    assert "s IN ('dbfs', 'unityCatalog')" in rewritten
    assert _rows(rewritten) == _rows(tree.sql("duckdb")) == [("dbfs", "mount"), ("unityCatalog",
                                                                                 "createStorageCredential")]


def test_sargable_pairs_leaves_negations_alone() -> None:
    sql = "SELECT s, a FROM t WHERE NOT concat(s, '.', a) IN ('dbfs.mount')"
    tree = sqlglot.parse_one(sql, read="databricks")
    assert sargable_pairs(tree).sql("duckdb") == tree.sql("duckdb")


def test_dayofweek_and_date_add_answer_as_spark_does() -> None:
    sql = "SELECT dayofweek(DATE '2026-11-10'), date_add(DATE '2026-11-10', 1)"
    duck = compat_transforms(sqlglot.parse_one(sql, read="databricks")).sql("duckdb")
    import datetime as dt

    # Spark: Tuesday is 3 (1 = Sunday); date_add returns a DATE.
    assert duckdb.connect().execute(duck).fetchone() == (3, dt.date(2026, 11, 11))


def test_collect_over_only_nulls_is_an_empty_array_as_on_spark() -> None:
    sql = "SELECT collect_set(x), size(collect_set(x)), collect_list(x) FROM (SELECT CAST(NULL AS STRING) AS x) t"
    duck = compat_transforms(sqlglot.parse_one(sql, read="databricks")).sql("duckdb")
    assert duckdb.connect().execute(duck).fetchone() == ([], 0, [])
