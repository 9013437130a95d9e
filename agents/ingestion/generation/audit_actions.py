"""The catalogue of audit actions the bulk audit log draws from: per-kind weights, parameters, errors."""

from __future__ import annotations

from dataclasses import dataclass

from insight_mcp.agents.ingestion.generation.sql_helpers import _sql_list
from insight_mcp.agents.ingestion.generation.vocabulary import GROUPS


@dataclass(frozen=True)
class _Action:
    service: str
    action: str
    weights: tuple[float, float, float, float, float]  # human, admin, sp_etl, sp_sql, sp_infra
    params: dict[str, str]  # request_params key -> SQL expression
    browser: bool = False  # humans do it in the UI (browser user agent, UI session)
    fail: float = 0.002  # share of failed requests
    errors: str = "generic"
    account_level: bool = False
    result: str | None = None  # SQL expression of response.result on success
    sql_client: bool = False  # humans may do it from a SQL tool (JDBC/ODBC/dbt user agent)


# The expressions below may use the columns email, ws, pid, kind, r (a random UBIGINT), ts (event time),
# token_id, user_id, account_id, metastore_id, and the $variables of _audit_vars (expanded only where used).
_UC = {"workspace_id": "ws", "metastore_id": "metastore_id"}
_NB = {"notebookId": "$nb_id", "notebookFullPath": "$nb_path"}
_CATALOG = "split_part($tbl, '.', 1)"
_SCHEMA = "split_part($tbl, '.', 2)"
_N = "rb(r, 40, 16, 99999)::VARCHAR"  # a random file or run number
_GROUP = f"list_extract({_sql_list(GROUPS)}, 1 + rb(r, 50, 3, 8))"
_EXPORT_FORMAT = ("CASE rb(r, 44, 7, 128) WHEN 0 THEN 'JUPYTER' WHEN 1 THEN 'HTML' WHEN 2 THEN 'DBC' "
                  "ELSE 'SOURCE' END")  # mostly source; now and then another format
_LIBRARY = ("'[{\"pypi\":{\"package\":\"' || list_extract(['pandas==2.2.2', 'scikit-learn==1.5.1', "
            "'great-expectations==0.18.19', 'xgboost==2.1.1', 'openpyxl==3.1.5'], 1 + rb(r, 50, 3, 5)) "
            "|| '\"}}]'")
_REPO = "(1000000 + pid * 7 + rb(r, 40, 3, 7))::VARCHAR"
_VOLUME = "'/Volumes/' || replace($tbl, '.', '/')"
_WORKERS = "(1 + rb(r, 52, 3, 8))::VARCHAR"

# Weights are per principal kind: (human, admin, sp_etl, sp_sql, sp_infra).
ACTIONS: tuple[_Action, ...] = (
    # accounts: authentication
    _Action("accounts", "login", (4, 3, 0, 0, 0), {"user": "email"}, True, 0.02, "login"),
    _Action("accounts", "samlLogin", (8, 6, 0, 0, 0), {"user": "email"}, True, 0.012, "saml"),
    _Action("accounts", "oidcBrowserLogin", (5, 4, 0, 0, 0), {"user": "email"}, True, 0.008, "login"),
    _Action("accounts", "tokenLogin", (28, 22, 60, 80, 40), {"tokenId": "token_id", "user": "email"},
            False, 0.003, "token"),
    _Action("accounts", "logout", (2, 2, 0, 0, 0), {"user": "email"}, True, 0.0),
    _Action("accounts", "generateDbToken", (0.3, 0.5, 0, 0, 0.2),
            {"tokenExpirationTime": "(epoch_ms(ts) + 7776000000)::VARCHAR", "comment": "'cli access'"}, True),
    _Action("accounts", "login", (0, 0.8, 0, 0, 0), {"user": "email"}, True, 0.01, "login",
            account_level=True),
    _Action("accountsAccessControl", "getRuleSet", (0, 2, 0, 0, 1.5),
            {"name": "'accounts/' || account_id || '/ruleSets/default'", "etag": "''"}, True,
            account_level=True),
    _Action("accountsAccessControl", "updateRuleSet", (0, 0.3, 0, 0, 0.6),
            {"name": "'accounts/' || account_id || '/servicePrincipals/' || user_id || '/ruleSets/default'"},
            True, account_level=True),
    # notebooks and workspace objects
    _Action("notebook", "runCommand", (220, 110, 50, 0, 0),
            {"notebookId": "$nb_id", "executionTime": "$exec_time",
             "status": "CASE WHEN rb(r, 56, 4, 16) = 0 THEN 'error' ELSE 'finished' END",
             "commandId": "rb(r, 0, 32, 4000000000)::VARCHAR"}, True, 0.0),
    _Action("notebook", "attachNotebook", (25, 10, 0, 0, 0),
            {"path": "$nb_path", "clusterId": "$cl", "notebookId": "$nb_id"}, True, 0.002, "cluster"),
    _Action("notebook", "createNotebook", (4, 2, 0, 0, 0), {"notebookId": "$nb_id", "path": "$nb_path"},
            True),
    _Action("notebook", "downloadPreviewResults", (1.5, 1, 0, 0, 0), _NB, True),
    _Action("notebook", "downloadLargeResults", (0.15, 0.1, 0, 0, 0), _NB, True),
    _Action("notebook", "deleteNotebook", (0.2, 0.2, 0, 0, 0),
            {"notebookId": "$nb_id", "notebookName": "split_part($nb_path, '/', -1)", "path": "$nb_path"},
            True),
    _Action("workspace", "workspaceExport", (1.2, 0.8, 0, 0, 0.6),
            {"workspaceExportFormat": _EXPORT_FORMAT, "notebookFullPath": "$nb_path"}, True),
    _Action("workspace", "getRoleAssignment", (10, 8, 0, 0, 2), {}, True),
    _Action("workspace", "mkdirs", (0.5, 0.3, 0, 0, 1), {"path": "'/Users/' || email || '/projects'"}, True),
    # Unity Catalog
    _Action("unityCatalog", "getTable", (80, 60, 150, 120, 5), {"full_name_arg": "$tbl", **_UC},
            True, 0.006, "uc"),
    _Action("unityCatalog", "getCatalog", (15, 15, 20, 20, 5), {"name_arg": _CATALOG, **_UC},
            True, 0.002, "uc"),
    _Action("unityCatalog", "listSchemas", (15, 15, 10, 20, 5), {"catalog_name": _CATALOG, **_UC},
            True, 0.002, "uc"),
    _Action("unityCatalog", "listTables", (10, 10, 5, 10, 0),
            {"catalog_name": _CATALOG, "schema_name": _SCHEMA, **_UC}, True, 0.002, "uc"),
    _Action("unityCatalog", "generateTemporaryTableCredential", (40, 30, 120, 80, 0),
            {"table_id": "$tid", "table_full_name": "$tbl",
             "operation": "CASE WHEN kind = 2 AND rb(r, 50, 2, 4) = 0 THEN 'READ_WRITE' ELSE 'READ' END"},
            False, 0.006, "uc"),
    _Action("unityCatalog", "getPermissions", (2, 4, 0, 0, 5),
            {"securable_type": "'table'", "securable_full_name": "$tbl"}, True, 0.003, "uc"),
    _Action("unityCatalog", "updatePermissions", (0.2, 2, 0, 0, 3),
            {"securable_type": "'table'", "securable_full_name": "$tbl",
             "changes": f"'[{{\"principal\":\"' || {_GROUP} || '\",\"add\":[\"SELECT\"]}}]'"},
            True, 0.01, "uc"),
    _Action("unityCatalog", "createTable", (0.5, 0.5, 3, 4, 0),
            {"name": "split_part($tbl, '.', 3) || '_v' || rb(r, 50, 4, 9)::VARCHAR", "catalog_name": _CATALOG,
             "schema_name": _SCHEMA, "table_type": "'MANAGED'", "data_source_format": "'DELTA'"},
            False, 0.004, "uc"),
    _Action("unityCatalog", "deleteTable", (0.03, 0.08, 0.2, 0.1, 0), {"full_name_arg": "$tbl", **_UC},
            False, 0.01, "uc"),
    # Databricks SQL
    _Action("databrickssql", "executeStatement", (30, 20, 5, 100, 0),
            {"warehouseId": "$wh", "statementId": "md5(r::VARCHAR)::UUID::VARCHAR"}, True, 0.004,
            sql_client=True),
    _Action("databrickssql", "downloadQueryResult", (1.2, 0.8, 0, 0.3, 0),
            {"queryResultId": "md5((r >> 7)::VARCHAR)::UUID::VARCHAR",
             "fileType": "list_extract(['csv', 'csv', 'xlsx', 'arrows'], 1 + rb(r, 40, 2, 4))",
             "queryId": "md5((r >> 9)::VARCHAR)::UUID::VARCHAR"}, True),
    # jobs
    _Action("jobs", "runNow", (4, 3, 10, 0, 5), {"job_id": "$job"}, False, 0.004,
            result="'{\"run_id\":' || (100000000000000 + rb(r, 0, 24, 10000000) * 97)::VARCHAR || '}'"),
    _Action("jobs", "submitRun", (1, 1, 15, 0, 0), {"run_name": "'adhoc-run-' || " + _N}, False, 0.004),
    _Action("jobs", "create", (0.4, 0.4, 0.2, 0, 6), {"name": "'job-' || $job", "job_type": "'NORMAL'"}),
    _Action("jobs", "reset", (0.3, 0.3, 0, 0, 5), {"job_id": "$job"}),
    _Action("jobs", "delete", (0.03, 0.05, 0, 0, 0.4), {"job_id": "$job"}),
    # clusters
    _Action("clusters", "start", (3, 2, 2, 0, 0), {"cluster_id": "$cl"}, True, 0.006, "cluster"),
    _Action("clusters", "create", (0.25, 0.4, 1.5, 0, 1),
            {"cluster_name": "'adhoc-' || rb(r, 40, 10, 999)::VARCHAR", "spark_version": "'15.4.x-scala2.12'",
             "node_type_id": "list_extract(['i3.xlarge', 'm5d.xlarge', 'r5d.xlarge'], 1 + rb(r, 50, 2, 3))",
             "num_workers": _WORKERS, "autotermination_minutes": "'60'"}, True, 0.01, "cluster"),
    _Action("clusters", "edit", (0.4, 1, 0, 0, 3),
            {"cluster_id": "$cl", "num_workers": _WORKERS,
             "autotermination_minutes": "list_extract(['30', '60', '120'], 1 + rb(r, 50, 2, 3))"},
            True, 0.01, "cluster"),
    _Action("clusters", "delete", (0.4, 0.5, 2, 0, 0.5), {"cluster_id": "$cl"}, True, 0.004, "cluster"),
    _Action("clusters", "permanentDelete", (0.01, 0.06, 0, 0, 0.2), {"cluster_id": "$cl"}, True, 0.01,
            "cluster"),
    _Action("clusters", "resize", (0.3, 0.3, 0.5, 0, 0), {"cluster_id": "$cl", "num_workers": _WORKERS},
            True, 0.01, "cluster"),
    _Action("clusters", "restart", (0.5, 0.5, 0, 0, 0), {"cluster_id": "$cl"}, True, 0.004, "cluster"),
    _Action("clusterLibraries", "installLibraries", (0.4, 0.4, 0.3, 0, 0.5),
            {"clusterId": "$cl", "libraries": _LIBRARY}, True, 0.01),
    # secrets
    _Action("secrets", "getSecret", (1.2, 0.8, 10, 2, 1.5), {"scope": "$scope", "key": "$key"},
            False, 0.004, "secret"),
    _Action("secrets", "listSecrets", (0.4, 0.5, 0.4, 0, 1), {"scope": "$scope"}, False, 0.004, "secret"),
    _Action("secrets", "listScopes", (0.4, 0.5, 0.1, 0, 1), {}),
    _Action("secrets", "putSecret", (0.05, 0.3, 0, 0, 1), {"scope": "$scope", "key": "$key"}, False, 0.01),
    # repos
    _Action("repos", "pull", (3, 2, 0, 0, 0.5), {"id": _REPO}, True),
    _Action("repos", "commitAndPush", (1, 0.5, 0, 0, 0), {"id": _REPO, "checkSensitiveToken": "'true'"},
            True),
    _Action("repos", "createRepo", (0.1, 0.1, 0, 0, 0.5),
            {"url": "'https://github.com/' || split_part(split_part(email, '@', 2), '.', 1) || '/analytics-' "
                    "|| rb(r, 40, 4, 12)::VARCHAR || '.git'",
             "provider": "'gitHub'", "path": "'/Repos/' || email || '/analytics'"}, True),
    # DBFS and files
    _Action("dbfs", "getStatus", (6, 4, 10, 0, 1), {"path": "'dbfs:/FileStore/' || split_part($tbl, '.', 3)"},
            False, 0.01, "notfound"),
    _Action("dbfs", "list", (4, 3, 5, 0, 0), {"path": f"'dbfs:/mnt/' || {_SCHEMA}"}),
    _Action("dbfs", "read", (3, 2, 5, 0, 0),
            {"path": "'dbfs:/FileStore/' || split_part($tbl, '.', 3) || '.csv'", "offset": "'0'",
             "length": "'1048576'"}, False, 0.005, "notfound"),
    _Action("dbfs", "put", (0.5, 0.5, 3, 0, 0),
            {"path": "'dbfs:/FileStore/uploads/' || " + _N + " || '.csv'", "overwrite": "'true'"}, True),
    _Action("filesystem", "filesGet", (3, 2, 6, 0, 0),
            {"path": _VOLUME + " || '/part-' || rb(r, 40, 8, 200)::VARCHAR || '.parquet'",
             "transferredSize": "rb(r, 20, 20, 50000000)::VARCHAR"}, False, 0.005, "notfound"),
    _Action("filesystem", "filesPut", (0.5, 0.5, 4, 0, 0),
            {"path": _VOLUME + " || '/landing/' || " + _N + " || '.json'",
             "transferredSize": "rb(r, 20, 20, 5000000)::VARCHAR"}),
    _Action("filesystem", "directoriesGet", (1, 1, 1, 0, 0), {"path": _VOLUME}),
    # legacy table ACLs
    _Action("sqlPermissions", "showPermissions", (0.3, 1, 0, 0, 0), {"securable": "'TABLE `' || $tbl || '`'"},
            True),
    _Action("sqlPermissions", "grantPermission", (0.02, 0.4, 0, 0, 0.4),
            {"securable": "'TABLE `' || $tbl || '`'", "permission": "'SELECT'", "principal": _GROUP}, True),
)

_TABLE_DENIED = "'PERMISSION_DENIED: User does not have SELECT on Table ''' || $tbl || '''.'"
_SCHEMA_DENIED = ("'PERMISSION_DENIED: User does not have USE SCHEMA on Schema ''' || "
                  "split_part($tbl, '.', 1) || '.' || split_part($tbl, '.', 2) || '''.'")
ERRORS: dict[str, tuple[tuple[int, str], ...]] = {
    "generic": ((404, "'RESOURCE_DOES_NOT_EXIST: The requested resource does not exist.'"),
                (400, "'INVALID_PARAMETER_VALUE: Invalid request parameters.'"),
                (500, "'INTERNAL_ERROR: An internal error occurred. Please retry.'")),
    "login": ((401, "'Invalid username or password.'"),),
    "saml": ((401, "'SAML authentication failed: the assertion is invalid or expired.'"),),
    "token": ((401, "'Invalid access token.'"), (401, "'Token has expired.'")),
    "uc": ((403, _TABLE_DENIED), (403, _SCHEMA_DENIED),
           (404, "'TABLE_DOES_NOT_EXIST: Table ''' || $tbl || ''' does not exist.'")),
    "secret": ((403, "'PERMISSION_DENIED: User does not have READ permission on scope ' || $scope"),
               (404, "'RESOURCE_DOES_NOT_EXIST: Secret does not exist with scope: ' || $scope "
                     "|| ' and key: ' || $key")),
    "cluster": ((400, "'INVALID_STATE: Cluster ' || $cl || ' is in unexpected state Terminating.'"),
                (403, "'PERMISSION_DENIED: User does not have permission to manage cluster ' || $cl"),
                (404, "'RESOURCE_DOES_NOT_EXIST: Cluster ' || $cl || ' does not exist'")),
    "notfound": ((404, "'RESOURCE_DOES_NOT_EXIST: No file or directory exists on path.'"),),
}
ERROR_PROFILES = tuple(ERRORS)
