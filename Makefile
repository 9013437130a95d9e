# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export MLFLOW_DISABLE_TELEMETRY := true
export INSIGHT_HOME ?= $(HOME)/.insight-mcp
export TEXTGRAD_LOG_DIR ?= $(INSIGHT_HOME)/logs

# The official MCP clients the tests drive (Inspector CLI, conformance suite), installed outside the source tree.
export INSIGHT_NODE_TOOLS ?= $(HOME)/.cache/insight-mcp/node-tools
NODE_STAMP := $(INSIGHT_NODE_TOOLS)/.installed

.PHONY: setup node-tools bytecode demo test test-all lint bench docs clean

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) Python would otherwise
# compile MLflow and the rest from source in every process the servers and tests start (import mlflow: 9 s vs 3 s).
$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv sync --frozen --extra dev --extra spark --python $(BIN)/python --compile-bytecode
	@touch $(STAMP)

setup: $(STAMP)

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	@mkdir -p $(INSIGHT_NODE_TOOLS)
	cp tests/node/package.json tests/node/package-lock.json $(INSIGHT_NODE_TOOLS)/
	cd $(INSIGHT_NODE_TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

node-tools: $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/insight-mcp demo

# Our own sources too (Python reads .pyc files even where it may not write them); a stale one is ignored.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 agents servers supervisor clients

test: $(STAMP) $(NODE_STAMP) bytecode
	$(BIN)/ruff check agents servers supervisor clients tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder

test-all: $(STAMP) $(NODE_STAMP) bytecode
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check agents servers supervisor clients tests benchmarks

docs: $(STAMP)
	$(BIN)/python -m insight_mcp.servers.docs docs

# The peer bench_peer_query.py compares run_query with, pinned, in a virtual environment of its own outside the tree
# (INSIGHT_PEER_VENV, default ~/.cache/insight-mcp/peer-venv): it pins an older DuckDB than ours.
.PHONY: bench-peer-env
bench-peer-env: $(STAMP)
	UV=$(BIN)/uv PYTHON=$(PYTHON) bash benchmarks/peer_env.sh

bench: $(STAMP) bench-peer-env
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_roundtrip.py
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_detect.py
	$(BIN)/python benchmarks/bench_spark_detect.py
	$(BIN)/python benchmarks/bench_warehouse.py
	$(BIN)/python benchmarks/bench_tracing.py
	$(BIN)/python benchmarks/bench_analyze.py
	$(BIN)/python benchmarks/bench_evaluate_agent.py
	$(BIN)/python benchmarks/bench_supervisor.py
	$(BIN)/python benchmarks/bench_peer_query.py

clean:
	rm -rf $(VENV) .pytest_cache
