# tierwise: the two commands of the README, and the jobs behind them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: serve test lint unit bundles bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "installing tierwise and its dependencies into $(VENV) (about 100 s the first time)..."
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

# serve the bundled default router (HTTP :8080, gRPC :50051)
serve: $(STAMP)
	$(BIN)/tierwise serve

# lint, type-check, import contracts, then the whole test suite
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check router_model service training cli tests bench
	$(BIN)/mypy router_model service training cli
	$(BIN)/lint-imports

# rebuild every shipped bundle, its reports and RESULTS.md from data/sources
bundles: $(STAMP)
	$(BIN)/tierwise train --all --compare

bench: $(STAMP)
	$(BIN)/python bench/bench_router.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
