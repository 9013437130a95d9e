"""The Databricks system tables we mirror, with their real layouts: one source for loader, generator, guard, tools."""

from __future__ import annotations

from functools import cached_property, lru_cache

import sqlglot
from pydantic import BaseModel, ConfigDict
from sqlglot import exp

from insight_mcp.agents.sql.dialect import ColumnTypes, local_table_name


class Column(BaseModel):
    """One column as Databricks declares it."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str  # Databricks SQL type, e.g. "STRUCT<email: STRING, subject_name: STRING>"
    description: str

    @property
    def duckdb_type(self) -> str:
        """The same type spelled for DuckDB; timestamps are stored as UTC without a zone."""
        built = exp.DataType.build(self.type, dialect="databricks")
        for node in built.find_all(exp.DataType):
            if node.this in (exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMPLTZ):
                node.set("this", exp.DataType.Type.TIMESTAMP)
        return built.sql("duckdb")


class TableSpec(BaseModel):
    """A system table: its name, meaning, columns and the keys the loader and tools rely on."""

    model_config = ConfigDict(frozen=True, ignored_types=(cached_property,))

    name: str  # fully qualified Databricks name, e.g. "system.access.audit"
    description: str
    columns: tuple[Column, ...]
    time_column: str  # the event timestamp used for windows and time ranges
    event_key: tuple[str, ...]  # columns that identify one row; loads de-duplicate on them

    @property
    def schema_name(self) -> str:
        return self.name.split(".")[1]

    @property
    def table_name(self) -> str:
        return self.name.split(".")[2]

    @property
    def local_name(self) -> str:
        """Where the table lives in the DuckDB workspace: `<schema>.<table>` in the default catalog."""
        return f"{self.schema_name}.{self.table_name}"

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")

    def create_sql(self) -> str:
        """DuckDB DDL for this table."""
        cols = ",\n  ".join(f'"{c.name}" {c.duckdb_type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.local_name} (\n  {cols}\n)"


def _cols(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name=n, type=t, description=d) for n, t, d in specs)


# --- table definitions ----------------------------------------------------------------------------
# Filled from the public Databricks documentation for system tables (docs.databricks.com/admin/system-tables).

AUDIT = TableSpec(
    name="system.access.audit",
    description=(
        "Audit log events for the account and its workspaces: one row per audited API or UI action, with who "
        "did it, from where, against which service, with what parameters and what the response was."
    ),
    columns=_cols(
        ("account_id", "STRING", "ID of the Databricks account the event belongs to."),
        (
            "workspace_id",
            "STRING",
            "ID of the workspace where the event happened; '0' for account-level events.",
        ),
        ("version", "STRING", "Audit log schema version, e.g. '2.0'."),
        ("event_time", "TIMESTAMP", "When the event happened (UTC)."),
        ("event_date", "DATE", "Calendar date of the event; the partition column, filter on it for speed."),
        ("source_ip_address", "STRING", "IP address the request came from."),
        ("user_agent", "STRING", "Client that sent the request (browser, SDK, CLI, JDBC driver, ...)."),
        ("session_id", "STRING", "ID of the session the request came from."),
        (
            "user_identity",
            "STRUCT<email: STRING, subject_name: STRING>",
            "Who initiated the request: user email or service principal, and subject name.",
        ),
        (
            "service_name",
            "STRING",
            "Databricks service that handled the request, e.g. unityCatalog, accounts.",
        ),
        ("action_name", "STRING", "The audited action, e.g. getTable, login, createToken."),
        ("request_id", "STRING", "ID of the request; correlates related events."),
        (
            "request_params",
            "MAP<STRING, STRING>",
            "All request parameters as key/value pairs; keys depend on the action.",
        ),
        (
            "response",
            "STRUCT<status_code: INT, error_message: STRING, result: STRING>",
            "Outcome of the request: HTTP-style status code, error message and result string.",
        ),
        ("audit_level", "STRING", "WORKSPACE_LEVEL or ACCOUNT_LEVEL."),
        ("event_id", "STRING", "Unique ID of the event."),
        (
            "identity_metadata",
            "STRUCT<run_by: STRING, run_as: STRING, acting_resource: STRING>",
            (
                "Identities behind the action: who ran it, whose privileges it ran as, and the acting "
                "resource (e.g. a group-dedicated cluster or app)."
            ),
        ),
    ),
    time_column="event_time",
    event_key=("event_id",),
)

_CLUSTER_AWS = (
    "STRUCT<instance_profile_arn: STRING, zone_id: STRING, first_on_demand: INT, availability: STRING, "
    "spot_bid_price_percent: INT, ebs_volume_type: STRING, ebs_volume_count: INT, ebs_volume_size: INT, "
    "ebs_volume_iops: INT, ebs_volume_throughput: INT>"
)
_CLUSTER_AZURE = "STRUCT<first_on_demand: INT, availability: STRING, spot_bid_max_price: DOUBLE>"
_CLUSTER_GCP = (
    "STRUCT<use_preemptible_executors: BOOLEAN, zone_id: STRING, first_on_demand: INT, availability: STRING>"
)

CLUSTERS = TableSpec(
    name="system.compute.clusters",
    description=(
        "Slowly changing history of classic compute configurations (all-purpose, jobs, pipeline clusters): "
        "one row per configuration change, so the latest row per cluster_id is its current definition."
    ),
    columns=_cols(
        ("account_id", "STRING", "ID of the account where the cluster was created."),
        ("workspace_id", "STRING", "ID of the workspace where the cluster was created."),
        ("cluster_id", "STRING", "ID of the cluster this record describes."),
        ("cluster_name", "STRING", "User-defined cluster name."),
        ("owned_by", "STRING", "Username of the cluster owner (defaults to the creator)."),
        ("create_time", "TIMESTAMP", "When the cluster was created."),
        ("delete_time", "TIMESTAMP", "When the cluster was deleted; NULL while it still exists."),
        ("driver_node_type", "STRING", "Cloud instance type of the driver node."),
        ("worker_node_type", "STRING", "Cloud instance type of the worker nodes."),
        ("worker_count", "BIGINT", "Number of workers; set for fixed-size clusters only."),
        ("min_autoscale_workers", "BIGINT", "Minimum workers; set for autoscaling clusters only."),
        ("max_autoscale_workers", "BIGINT", "Maximum workers; set for autoscaling clusters only."),
        (
            "auto_termination_minutes",
            "BIGINT",
            "Idle minutes before auto-termination; NULL or 0 means never.",
        ),
        ("enable_elastic_disk", "BOOLEAN", "Whether autoscaling local storage is enabled."),
        ("tags", "MAP<STRING, STRING>", "User-defined cluster tags (default tags excluded)."),
        ("cluster_source", "STRING", "What created the cluster: UI, API, JOB, DLT, PIPELINE, ..."),
        ("init_scripts", "ARRAY<STRING>", "Paths of the init scripts the cluster runs at start."),
        (
            "aws_attributes",
            _CLUSTER_AWS,
            "AWS-specific settings (instance profile, spot/on-demand, EBS); else NULL.",
        ),
        (
            "azure_attributes",
            _CLUSTER_AZURE,
            "Azure-specific settings (spot/on-demand, bid price); else NULL.",
        ),
        ("gcp_attributes", _CLUSTER_GCP, "GCP-specific settings (preemptible executors, zone); else NULL."),
        ("driver_instance_pool_id", "STRING", "Instance pool the driver comes from, if any."),
        ("worker_instance_pool_id", "STRING", "Instance pool the workers come from, if any."),
        ("dbr_version", "STRING", "Databricks Runtime version, e.g. 15.4.x-scala2.12."),
        ("change_time", "TIMESTAMP", "When this configuration change happened."),
        ("change_date", "DATE", "Date of the configuration change."),
        (
            "data_security_mode",
            "STRING",
            "Access mode: USER_ISOLATION (standard/shared), SINGLE_USER (dedicated), NONE (no isolation).",
        ),
        ("policy_id", "STRING", "ID of the compute policy governing the cluster, if any."),
    ),
    time_column="change_time",
    event_key=("cluster_id", "change_time"),
)

_QUERY_SOURCE = (
    "STRUCT<job_info: STRUCT<job_id: STRING, job_run_id: STRING, job_task_run_id: STRING>, "
    "legacy_dashboard_id: STRING, dashboard_id: STRING, alert_id: STRING, notebook_id: STRING, "
    "sql_query_id: STRING, genie_space_id: STRING, "
    "pipeline_info: STRUCT<pipeline_id: STRING, update_id: STRING>>"
)
_QUERY_PARAMETERS = (
    "STRUCT<named_parameters: MAP<STRING, STRING>, pos_parameters: ARRAY<STRING>, truncated: BOOLEAN>"
)

QUERY_HISTORY = TableSpec(
    name="system.query.history",
    description=(
        "One row per SQL statement run on SQL warehouses, serverless notebooks/jobs or pipelines: who "
        "ran it, the statement text, its outcome, and timing and I/O metrics."
    ),
    columns=_cols(
        ("account_id", "STRING", "ID of the account."),
        ("workspace_id", "STRING", "ID of the workspace where the statement ran."),
        ("statement_id", "STRING", "Unique ID of this statement execution (as in the Query History UI)."),
        ("executed_by", "STRING", "Email or username of the user who ran the statement."),
        ("session_id", "STRING", "Spark session ID."),
        ("execution_status", "STRING", "Terminal state: FINISHED, FAILED or CANCELED."),
        (
            "compute",
            "STRUCT<type: STRING, cluster_id: STRING, warehouse_id: STRING>",
            "Compute used: type (WAREHOUSE, SERVERLESS_COMPUTE, ...) and its cluster or warehouse ID.",
        ),
        ("executed_by_user_id", "STRING", "ID of the user who ran the statement."),
        ("statement_text", "STRING", "SQL text of the statement; empty with customer-managed keys."),
        ("statement_type", "STRING", "Statement type, e.g. SELECT, INSERT, ALTER, COPY."),
        ("error_message", "STRING", "Error description when the statement failed."),
        (
            "client_application",
            "STRING",
            "Client that ran the statement, e.g. Databricks SQL, Tableau, Power BI.",
        ),
        ("client_driver", "STRING", "Connector used, e.g. Databricks JDBC/ODBC driver, SQL Driver for Go."),
        ("total_duration_ms", "BIGINT", "Total execution time in ms, excluding result fetch."),
        ("waiting_for_compute_duration_ms", "BIGINT", "Time waiting for compute to be provisioned, in ms."),
        (
            "waiting_at_capacity_duration_ms",
            "BIGINT",
            "Time queued waiting for free compute capacity, in ms.",
        ),
        ("execution_duration_ms", "BIGINT", "Time spent executing the statement, in ms."),
        ("compilation_duration_ms", "BIGINT", "Time spent loading metadata and optimizing, in ms."),
        ("total_task_duration_ms", "BIGINT", "Sum of all task durations across cores and nodes, in ms."),
        ("result_fetch_duration_ms", "BIGINT", "Time spent fetching results after execution, in ms."),
        ("start_time", "TIMESTAMP", "When Databricks received the request (UTC)."),
        ("end_time", "TIMESTAMP", "When execution ended, excluding result fetch (UTC)."),
        ("update_time", "TIMESTAMP", "When the statement last reported progress (UTC)."),
        ("read_partitions", "BIGINT", "Partitions read after pruning."),
        ("pruned_files", "BIGINT", "Files skipped by pruning."),
        ("read_files", "BIGINT", "Files read after pruning."),
        ("read_rows", "BIGINT", "Rows read by the statement."),
        ("produced_rows", "BIGINT", "Rows returned by the statement."),
        ("read_bytes", "BIGINT", "Bytes of data read by the statement."),
        ("read_io_cache_percent", "TINYINT", "Percentage of persistent-data bytes read from the IO cache."),
        ("from_result_cache", "BOOLEAN", "TRUE when the result came from the result cache."),
        ("spilled_local_bytes", "BIGINT", "Bytes temporarily spilled to local disk during execution."),
        ("written_bytes", "BIGINT", "Bytes of persistent data written to cloud object storage."),
        ("shuffle_read_bytes", "BIGINT", "Bytes sent over the network during shuffles."),
        (
            "query_source",
            _QUERY_SOURCE,
            (
                "Databricks entities that triggered the statement: job run, dashboard, alert, notebook, "
                "saved query, Genie space or pipeline update."
            ),
        ),
        ("executed_as_user_id", "STRING", "ID of the user or service principal whose privileges were used."),
        ("executed_as", "STRING", "Name of the user or service principal whose privileges were used."),
        ("written_rows", "BIGINT", "Rows of persistent data written to cloud object storage."),
        ("written_files", "BIGINT", "Files of persistent data written to cloud object storage."),
        (
            "cache_origin_statement_id",
            "STRING",
            "For cached results, the statement that originally produced them.",
        ),
        (
            "query_parameters",
            _QUERY_PARAMETERS,
            "Named or positional parameters of a parameterized statement, and whether they were truncated.",
        ),
        ("query_tags", "MAP<STRING, STRING>", "Key/value tags attached to the statement by the client."),
    ),
    time_column="start_time",
    event_key=("statement_id",),
)

OUTBOUND_NETWORK = TableSpec(
    name="system.access.outbound_network",
    description=(
        "Outbound (egress) network access events from serverless compute: one row per outbound request to a "
        "domain, IP or storage location that the workspace's egress policy denied (public preview)."
    ),
    columns=_cols(
        ("account_id", "STRING", "ID of the Databricks account."),
        ("workspace_id", "STRING", "ID of the workspace where the event happened."),
        ("event_id", "STRING", "Unique ID of the event."),
        ("destination_type", "STRING", "Kind of destination: DNS, IP or STORAGE."),
        ("destination", "STRING", "Blocked destination: domain name, IP address or storage location."),
        (
            "dns_event",
            "STRUCT<domain_name: STRING, rcode: INT, rdata: ARRAY<STRING>>",
            "DNS details (domain, response code, resolved addresses); NULL unless destination_type is DNS.",
        ),
        (
            "storage_event",
            "STRUCT<hostname: STRING, path: STRING, rejection_reason: STRING>",
            "Storage details (bucket/host, path, rejection reason); NULL unless destination_type is STORAGE.",
        ),
        ("event_time", "TIMESTAMP", "When the event happened (UTC)."),
        ("access_type", "STRING", "What happened to the traffic, e.g. DROP."),
        (
            "network_source_type",
            "STRING",
            "Product the traffic came from, e.g. DBSQL, General Compute, MLServing, ML Build, Apps.",
        ),
    ),
    time_column="event_time",
    event_key=("event_id",),
)

INBOUND_NETWORK = TableSpec(
    name="system.access.inbound_network",
    description=(
        "Inbound (ingress) network access events: one row per request to a workspace that its context-based "
        "ingress policy denied or, in dry-run mode, would have denied (public preview, 30-day retention). "
        "Databricks documents this table thinly; the layout is reconstructed from documented fields and "
        "published queries against the table."
    ),
    columns=_cols(
        ("account_id", "STRING", "ID of the Databricks account."),
        ("workspace_id", "STRING", "ID of the workspace the request targeted."),
        ("event_id", "STRING", "Unique ID of the event."),
        ("event_time", "TIMESTAMP", "When the request hit the ingress policy (UTC)."),
        (
            "source",
            "STRUCT<ip: STRING>",
            "Network origin of the request; ip is the caller's source IP address.",
        ),
        ("authenticated_as", "STRING", "User or service principal the request authenticated as."),
        ("request_path", "STRING", "Path of the denied request, e.g. /api/2.0/sql/statements."),
        ("rule_label", "STRING", "Label of the deny rule that matched; NULL when no allow rule matched."),
        ("policy_outcome", "STRING", "Enforcement result: DENIED (blocked) or DRY_RUN_DENIAL (logged only)."),
    ),
    time_column="event_time",
    event_key=("event_id",),
)

_USAGE_METADATA = (
    "STRUCT<cluster_id: STRING, job_id: STRING, warehouse_id: STRING, instance_pool_id: STRING, "
    "node_type: STRING, job_run_id: STRING, notebook_id: STRING, dlt_pipeline_id: STRING, "
    "endpoint_name: STRING, endpoint_id: STRING, dlt_update_id: STRING, dlt_maintenance_id: STRING, "
    "run_name: STRING, job_name: STRING, notebook_path: STRING, central_clean_room_id: STRING, "
    "source_region: STRING, destination_region: STRING, app_id: STRING, app_name: STRING, "
    "metastore_id: STRING, private_endpoint_name: STRING, storage_api_type: STRING, "
    "budget_policy_id: STRING, ai_runtime_pool_id: STRING, ai_runtime_workload_id: STRING, "
    "uc_table_catalog: STRING, uc_table_schema: STRING, uc_table_name: STRING, "
    "database_instance_id: STRING, sharing_materialization_id: STRING, schema_id: STRING, "
    "usage_policy_id: STRING, base_environment_id: STRING, agent_bricks_id: STRING, index_id: STRING, "
    "catalog_id: STRING, networking_client: STRING, recipient_id: STRING>"
)
_USAGE_IDENTITY = "STRUCT<run_as: STRING, created_by: STRING, owned_by: STRING, run_by: STRING>"
_PRODUCT_FEATURES = (
    "STRUCT<jobs_tier: STRING, sql_tier: STRING, dlt_tier: STRING, is_serverless: BOOLEAN, "
    "is_photon: BOOLEAN, serving_type: STRING, networking: STRUCT<connectivity_type: STRING>, "
    "ai_runtime: STRUCT<compute_type: STRING>, "
    "model_serving: STRUCT<offering_type: STRING, reservation_term: STRING>, "
    "ai_gateway: STRUCT<feature_type: STRING>, serverless_gpu: STRUCT<workload_type: STRING>, "
    "agent_bricks: STRUCT<problem_type: STRING, workload_type: STRING>, performance_target: STRING, "
    "ai_functions: STRUCT<ai_function: STRING>, apps: STRUCT<compute_size: STRING>, "
    "lakeflow_connect: STRUCT<task_type: STRING, zerobus_request_type: STRING>, "
    "lakebase: STRUCT<storage_type: STRING, compute_type: STRING>, "
    "ai_bi_genie: STRUCT<capability_type: STRING, offering_type: STRING>, "
    "genie: STRUCT<offering_type: STRING>>"
)

BILLING_USAGE = TableSpec(
    name="system.billing.usage",
    description=(
        "Account-wide billable usage: one row per usage record (usually an hour of a SKU on one resource), "
        "with the quantity, the resource and identity it is attributed to, and the product features used."
    ),
    columns=_cols(
        ("record_id", "STRING", "Unique ID of the usage record."),
        ("account_id", "STRING", "ID of the account the record belongs to."),
        ("workspace_id", "STRING", "ID of the workspace the usage is attributed to."),
        ("sku_name", "STRING", "Billed SKU, e.g. STANDARD_ALL_PURPOSE_COMPUTE."),
        ("cloud", "STRING", "Cloud of the usage: AWS, AZURE or GCP."),
        ("usage_start_time", "TIMESTAMP", "Start of the usage window (UTC)."),
        ("usage_end_time", "TIMESTAMP", "End of the usage window (UTC)."),
        ("usage_date", "DATE", "Date of the usage; use it to filter and aggregate by day."),
        (
            "custom_tags",
            "MAP<STRING, STRING>",
            "User tags on the resource (cluster, job, warehouse, budget policy).",
        ),
        ("usage_unit", "STRING", "Unit of usage_quantity, e.g. DBU."),
        ("usage_quantity", "DECIMAL(38,18)", "Units consumed; negative in RETRACTION records."),
        (
            "usage_metadata",
            _USAGE_METADATA,
            (
                "IDs of the resource behind the usage: cluster, job/run, warehouse, pipeline, endpoint, "
                "app, notebook, budget policy, UC table and more."
            ),
        ),
        (
            "identity_metadata",
            _USAGE_IDENTITY,
            "Who the usage is attributed to: run_as (workload identity), created_by, owned_by, run_by.",
        ),
        ("record_type", "STRING", "ORIGINAL, RETRACTION or RESTATEMENT (billing corrections)."),
        ("ingestion_date", "DATE", "Date the record was written to the table."),
        (
            "billing_origin_product",
            "STRING",
            "Product that generated the usage, e.g. JOBS, SQL, MODEL_SERVING.",
        ),
        (
            "product_features",
            _PRODUCT_FEATURES,
            "Features in use: tiers, serverless, Photon, serving type, networking, AI and app details.",
        ),
        ("usage_type", "STRING", "Kind of usage, e.g. COMPUTE_TIME, STORAGE_SPACE, NETWORK_BYTE, TOKEN."),
    ),
    time_column="usage_start_time",
    event_key=("record_id",),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (AUDIT, CLUSTERS, QUERY_HISTORY, OUTBOUND_NETWORK, INBOUND_NETWORK, BILLING_USAGE)
}


def get_table(name: str) -> TableSpec:
    """Look a table up by its Databricks name, case-insensitively."""
    try:
        return TABLES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise KeyError(f"unknown table {name!r}; known tables: {known}") from None


WORKSPACE_CATALOG = "workspace"  # what the type lookups call the workspace's own catalog


@lru_cache(maxsize=1)
def column_types() -> ColumnTypes:
    """The system tables' DuckDB column types under their workspace names, for the dialect's typed transforms."""
    return ColumnTypes(
        tables=tuple(((WORKSPACE_CATALOG, *local_table_name(spec.schema_name, spec.table_name)),
                      tuple((c.name, c.duckdb_type) for c in spec.columns)) for spec in TABLES.values()),
        default_catalog=WORKSPACE_CATALOG,
    )


def _check_types() -> None:
    for spec in TABLES.values():
        for col in spec.columns:
            sqlglot.exp.DataType.build(col.type, dialect="databricks")
