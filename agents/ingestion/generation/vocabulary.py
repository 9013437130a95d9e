"""Fixed vocabulary the estate draws from: names, catalogs, secrets, user agents, IP prefixes, node types."""

from __future__ import annotations

FIRST_NAMES = (
    "james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david", "elizabeth",
    "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah", "charles", "karen",
    "daniel", "lisa", "matthew", "nancy", "anthony", "sandra", "mark", "ashley", "steven", "emily", "paul",
    "michelle", "andrew", "amanda", "joshua", "melissa", "kevin", "stephanie", "brian", "rebecca", "george",
    "laura", "timothy", "helen", "ryan", "anna", "jacob", "olivia", "lucas", "sophie", "maximilian", "lena",
    "jonas", "mia", "felix", "hannah", "pierre", "camille", "luca", "giulia", "mateo", "lucia", "sven",
    "ingrid", "pieter", "femke", "raj", "priya", "wei", "mei", "hiroshi", "yuki", "omar", "fatima", "ivan",
    "olga", "kofi", "amara", "diego", "valentina",
)
LAST_NAMES = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez", "martinez",
    "hernandez", "lopez", "wilson", "anderson", "thomas", "taylor", "moore", "jackson", "martin", "lee",
    "thompson", "white", "harris", "clark", "lewis", "walker", "hall", "young", "allen", "king", "wright",
    "scott", "green", "baker", "adams", "nelson", "hill", "campbell", "mitchell", "roberts", "carter",
    "phillips", "evans", "turner", "mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner",
    "becker", "dubois", "moreau", "laurent", "rossi", "russo", "ferrari", "jansen", "devries", "bakker",
    "nielsen", "hansen", "larsen", "kowalski", "nowak", "novak", "silva", "santos", "costa", "patel",
    "sharma", "chen", "wang", "tanaka", "suzuki", "kim", "park", "okafor", "mensah",
)
COMPANY_DOMAINS = (
    "northwind-analytics.com", "bluepeak-logistics.com", "meridian-health.org", "corvalis-energy.com",
    "harborview-retail.com", "altamira-insurance.com", "stellarfreight.io", "kestrel-pharma.com",
)
TEAMS = ("data-engineering", "analytics", "data-science", "finance", "marketing", "platform", "ml-platform")
GROUPS = ("data-engineers", "analysts", "data-scientists", "ml-platform", "finance-readers", "bi-developers",
          "marketing-analysts", "platform-ops")
SP_NAMES = {
    "sp_etl": ("etl-nightly", "ingest-kafka", "orders-pipeline", "feature-store-refresh", "cdc-replicator",
               "dq-checks", "ml-batch-scoring", "events-compaction", "crm-sync", "gl-close-jobs"),
    "sp_sql": ("dbt-prod", "tableau-server", "powerbi-gateway", "looker-svc", "dbt-marketing", "reverse-etl"),
    "sp_infra": ("terraform-ci", "github-actions-deploy", "workspace-automation", "uc-permissions-bot"),
}
SQL_SP_TOOLS = {  # name prefix -> ((client_application, client_driver), user agent)
    "dbt": (("dbt", "Databricks SQL Connector for Python"),
            "dbt-databricks/1.{d}.3 databricks-sql-connector/3.{q}.0 python/3.11.9"),
    "tableau": (("Tableau Server 2024.2", "Databricks JDBC Driver"),
                "Databricks-JDBC-Driver/2.6.{j} (Tableau Server 2024.2)"),
    "powerbi": (("Power BI Service", "Databricks ODBC Driver"),
                "SimbaSparkODBCDriver/2.8.{j} (Power BI Gateway)"),
    "looker": (("Looker", "Databricks JDBC Driver"), "Databricks-JDBC-Driver/2.6.{j} (Looker)"),
    "reverse": (("Hightouch", "Databricks SQL Driver for Go"), "databricks-sql-go/1.{d}.0"),
}
CATALOGS = ("main", "prod", "dev", "sandbox", "finance", "hr")
SCHEMAS = ("sales", "marketing", "finance", "hr", "product", "ml_features", "raw_events", "bronze", "silver",
           "gold", "crm", "supply_chain", "support", "web_analytics")
TABLE_NAMES = (
    "orders", "order_items", "customers", "customer_addresses", "invoices", "payments", "refunds", "sessions",
    "page_views", "clicks", "employees", "salaries", "payroll_runs", "inventory", "shipments", "forecasts",
    "churn_features", "leads", "campaigns", "gl_entries", "budgets", "tickets", "products", "price_history",
    "suppliers", "contracts", "events_raw", "events_clean", "daily_revenue", "user_profiles", "consents",
    "model_predictions", "ab_tests", "returns", "credit_limits",
)
SENSITIVE_SCHEMAS = ("hr", "finance", "crm")
NOTEBOOK_NAMES = ("exploration", "etl_orders", "feature_engineering", "dashboard_prep", "scratch",
                  "model_training", "data_quality_checks", "Untitled Notebook 2024-03-11", "weekly_report",
                  "backfill", "eda_customers", "join_debug", "kpi_definitions", "prototype", "cleanup",
                  "udfs")
SECRET_SCOPES = {
    "etl-prod": ("jdbc-user", "jdbc-password", "storage-account-key"),
    "kafka": ("sasl-username", "sasl-password", "schema-registry-key"),
    "salesforce": ("client-id", "client-secret", "refresh-token"),
    "snowflake-migration": ("user", "password"),
    "aws-keys": ("access-key-id", "secret-access-key"),
    "openai": ("api-key",),
    "slack-alerts": ("webhook-url", "bot-token"),
    "postgres-crm": ("username", "password", "host"),
    "sftp-partner": ("username", "private-key"),
    "github": ("pat", "app-private-key"),
    "datadog": ("api-key", "app-key"),
    "sendgrid": ("api-key",),
}
BROWSER_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
    "Safari/537.36 Edg/{v}.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{s} "
    "Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{f}.0) Gecko/20100101 Firefox/{f}.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{f}.0) Gecko/20100101 Firefox/{f}.0",
)
BROWSER_UA_WEIGHTS = (34, 26, 12, 14, 9, 5)
HUMAN_API_UAS = (
    "databricks-cli/0.{c}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/darwin cmd/{cmd} auth/pat",
    "databricks-cli/0.{c}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/windows cmd/{cmd} auth/databricks-cli",
    "databricks-sdk-py/0.{p}.0 python/3.11.9 os/darwin auth/pat",
    "databricks-sdk-py/0.{p}.0 python/3.10.12 os/linux auth/databricks-cli",
    "vscode-extension/2.{d}.1 databricks-sdk-py/0.{p}.0 python/3.11.9 os/darwin",
)
HUMAN_API_UA_WEIGHTS = (30, 10, 25, 15, 20)
HUMAN_SQL_UAS = (
    "dbt-databricks/1.{d}.3 databricks-sql-connector/3.{q}.0 python/3.11.9",
    "Databricks-JDBC-Driver/2.6.{j} (DBeaver 24.{d}.0)",
    "SimbaSparkODBCDriver/2.8.{j} (Tableau Desktop 2024.2)",
    "SimbaSparkODBCDriver/2.8.{j} (Power BI Desktop)",
    "databricks-sql-python/3.{q}.0",
)
HUMAN_SQL_UA_WEIGHTS = (25, 20, 20, 20, 15)
SP_UAS = {
    "sp_etl": (
        "databricks-sdk-py/0.{p}.0 python/3.10.12 os/linux auth/oauth-m2m",
        "Apache-HttpClient/4.5.14 (Java/17.0.10) databricks-jobs",
        "databricks-sdk-go/0.{g}.0 go/1.22.7 os/linux auth/oauth-m2m",
    ),
    "sp_infra": (
        "Terraform/1.{t}.8 databricks-tf-provider/1.{tp}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/linux",
        "databricks-cli/0.{c}.0 databricks-sdk-go/0.{g}.0 go/1.22.7 os/linux cmd/bundle_deploy "
        "auth/oauth-m2m",
        "databricks-sdk-py/0.{p}.0 python/3.12.3 os/linux auth/oauth-m2m",
    ),
}
CORP_PREFIXES = ("62.153", "80.156", "193.110", "195.34", "212.227", "145.40", "91.218", "213.61")
HOME_PREFIXES = ("73", "24", "68", "98", "86", "90", "92", "81", "82", "84", "109", "176", "188", "217", "79",
                 "94", "2", "5")
MOBILE_PREFIXES = ("37", "46", "89", "31", "176", "77")
HOSTING_PREFIXES = ("45", "185", "194", "103", "141", "159", "167", "193", "206", "91", "5", "179", "162")
CLOUD_PREFIXES = ("3", "18", "34", "35", "44", "52", "54", "13", "20", "40", "4")
NODE_TYPES = ("i3.xlarge", "i3.2xlarge", "m5d.large", "m5d.xlarge", "m5d.2xlarge", "r5d.xlarge",
              "r5d.4xlarge", "c5d.2xlarge", "c5d.4xlarge", "m6gd.xlarge", "r6gd.2xlarge")
GPU_NODE_TYPES = ("g5.xlarge", "g5.2xlarge", "g4dn.xlarge", "p3.2xlarge")
DBU_PER_HOUR = {
    "i3.xlarge": 1.0, "i3.2xlarge": 2.0, "m5d.large": 0.34, "m5d.xlarge": 0.69, "m5d.2xlarge": 1.37,
    "r5d.xlarge": 0.9, "r5d.4xlarge": 3.6, "c5d.2xlarge": 1.5, "c5d.4xlarge": 3.0, "m6gd.xlarge": 0.75,
    "r6gd.2xlarge": 1.8, "g5.xlarge": 2.7, "g5.2xlarge": 3.3, "g4dn.xlarge": 1.5, "p3.2xlarge": 5.5,
    "g5.12xlarge": 16.0, "g5.48xlarge": 58.0, "p4d.24xlarge": 92.0,
}
DBR_VERSIONS = (("15.4.x-scala2.12", 30), ("14.3.x-scala2.12", 18), ("15.4.x-photon-scala2.12", 12),
                ("13.3.x-photon-scala2.12", 8), ("13.3.x-scala2.12", 8), ("16.1.x-scala2.12", 8),
                ("12.2.x-scala2.12", 4), ("11.3.x-scala2.12", 3), ("10.4.x-scala2.12", 4),
                ("14.3.x-cpu-ml-scala2.12", 5))
GPU_DBR_VERSIONS = ("15.4.x-gpu-ml-scala2.12", "14.3.x-gpu-ml-scala2.12")
EGRESS_BENIGN = (
    ("pypi.org", 30), ("files.pythonhosted.org", 30), ("repo1.maven.org", 10), ("registry.npmjs.org", 6),
    ("api.github.com", 8), ("raw.githubusercontent.com", 10), ("huggingface.co", 8),
    ("cdn-lfs.huggingface.co", 5), ("api.openai.com", 6), ("hooks.slack.com", 5), ("conda.anaconda.org", 5),
    ("login.microsoftonline.com", 3), ("api.segment.io", 2), ("telemetry.vendor-insights.net", 1),
)
# What attackers look like, and what their blocked or failed requests get back.
ATTACK_UAS = ("python-requests/2.31.0", "curl/8.5.0", "Go-http-client/1.1", "python-httpx/0.27.0",
              "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
              "Safari/537.36")
IP_BLOCKED = "Source IP address is blocked by the workspace IP access list."
LOGIN_ERRORS = {"login": "Invalid username or password.",
                "samlLogin": "SAML authentication failed: the assertion is invalid or expired.",
                "oidcBrowserLogin": "Invalid username or password.", "tokenLogin": "Invalid access token."}
