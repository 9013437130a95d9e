#!/bin/sh
# Start the supervisor in the background, then serve every MCP server on the App's port in the foreground.
set -e
insight-mcp supervise &
exec insight-mcp serve --host 0.0.0.0 --port "${DATABRICKS_APP_PORT:-8000}"
