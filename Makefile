# tierwise: the two commands of the README, and the jobs behind them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: serve test test-deploy lint unit bundles bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "installing tierwise and its dependencies into $(VENV) (about 100 s the first time)..."
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

# serve the bundled default router (HTTP :8080, gRPC :50051)
serve: $(STAMP)
	$(BIN)/tierwise serve

# lint, type-check, import contracts, then the whole test suite (not the deploy tests: below)
test: $(STAMP) lint
	$(BIN)/python -m pytest -q --durations=15 --ignore=tests/deploy

# real containers and manifests (docs/deploy.md): builds the image from the Containerfile on a
# debootstrapped Debian base (kept between runs), runs it read-only, renders deploy/k8s.
# Needs root, podman, runc, debootstrap and kubectl; skips with the reason without them.
test-deploy: $(STAMP)
	TIERWISE_DEPLOY_TESTS=1 $(BIN)/python -m pytest -q tests/deploy

lint: $(STAMP)
	$(BIN)/ruff check router_model service training cli integrations tests bench
	$(BIN)/mypy router_model service training cli integrations
	$(BIN)/lint-imports

# rebuild every shipped bundle, its reports and RESULTS.md from data/sources
bundles: $(STAMP)
	$(BIN)/tierwise train --all --compare

bench: $(STAMP)
	$(BIN)/python bench/bench_router.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
