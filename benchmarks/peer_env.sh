#!/usr/bin/env bash
# The peer for benchmarks/bench_peer_query.py: mcp-server-motherduck, pinned, in a virtual environment of its own
# outside the source tree (it pins duckdb 1.5, we use duckdb 2). Idempotent: a stamp naming the pins skips the work.
#
#     bash benchmarks/peer_env.sh        (or `make bench-peer-env`)
#
# INSIGHT_PEER_VENV moves it (default ~/.cache/insight-mcp/peer-venv); UV and PYTHON pick the tools used.
set -euo pipefail

VENV="${INSIGHT_PEER_VENV:-$HOME/.cache/insight-mcp/peer-venv}"
UV="${UV:-uv}"
PYTHON="${PYTHON:-python3.11}"
# The peer and the pieces whose speed it is measured by (its DuckDB, its MCP framework and SDK), exactly.
PINS=(mcp-server-motherduck==1.1.0 duckdb==1.5.6 fastmcp==4.2.3 mcp==2.3.0)
STAMP="$VENV/.installed-$(printf '%s\n' "${PINS[@]}" | cksum | cut -d' ' -f1)"

if [[ -f "$STAMP" && -x "$VENV/bin/mcp-server-motherduck" ]]; then
    echo "peer env ready: $VENV (${PINS[*]})"
    exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    "$UV" venv --quiet --python "$PYTHON" "$VENV"
fi
"$UV" pip install --quiet --python "$VENV/bin/python" "${PINS[@]}"
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "peer env installed: $VENV (${PINS[*]})"
