# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export LITELLM_LOCAL_MODEL_COST_MAP := True
export INSIGHT_HOME ?= $(HOME)/.insight-mcp
export TEXTGRAD_LOG_DIR ?= $(INSIGHT_HOME)/logs

.PHONY: setup demo test test-all lint bench docs clean

$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv sync --frozen --extra dev --python $(BIN)/python
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/insight-mcp demo

test: $(STAMP)
	$(BIN)/ruff check agents servers supervisor clients tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check agents servers supervisor clients tests benchmarks

docs: $(STAMP)
	$(BIN)/python -m insight_mcp.servers.docs docs

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_roundtrip.py
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_detect.py

clean:
	rm -rf $(VENV) .pytest_cache
