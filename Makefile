# Trialforge developer commands. `make demo` and `make test` work on a fresh machine
# with Python >= 3.11 and Go (for the local Kubernetes control plane).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv demo smoke test unit entrypoint-test cluster-test prometheus lint format crds cluster-build cluster-up cluster-down bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,tensorboard,mlflow]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv with trialforge and the dev tools

demo: $(STAMP)  ## run the digits example (TPE + ASHA) locally
	$(BIN)/trialforge run examples/digits-tpe-asha.yaml

smoke: $(STAMP)  ## a run that finishes in seconds
	$(BIN)/trialforge run examples/smoke.yaml

test: $(STAMP) cluster-build  ## every test: lint, unit, and against the real local control plane
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/trialforge crds --check
	$(BIN)/trialforge crds --check -o charts/trialforge/crds
	$(MAKE) --no-print-directory entrypoint-test
	$(BIN)/pytest

unit: $(STAMP)  ## the fast tests only (no cluster)
	$(BIN)/pytest -m "not cluster"

cluster-test: $(STAMP) cluster-build  ## only the tests against the local control plane
	$(BIN)/pytest -m cluster

prometheus: $(STAMP) cluster-build  ## the chart's alerts and dashboard with promtool and a real Prometheus (tests/cluster/test_chart_monitoring.py)
	$(BIN)/pytest tests/cluster/test_chart_monitoring.py

lint: $(STAMP)  ## ruff, and the import layers of DESIGN.md section 1 (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

entrypoint-test:  ## gofmt, go vet and the Go tests of the trainer's entrypoint (entrypoint/)
	@test -z "$$(cd entrypoint && gofmt -l .)" || { echo "gofmt: entrypoint/ is not formatted" >&2; exit 1; }
	cd entrypoint && GOTOOLCHAIN=local go vet ./... && GOTOOLCHAIN=local go test -count=1 ./...

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

crds: $(STAMP)  ## regenerate crds/ (and the chart's copy) from the models
	$(BIN)/trialforge crds
	$(BIN)/trialforge crds -o charts/trialforge/crds

cluster-build:  ## build the control plane binaries from Go modules (cached in ~/.cache/trialforge)
	e2e/cluster build --real-node

cluster-up: $(STAMP) cluster-build  ## start a local control plane; then: eval $$(e2e/cluster env)
	e2e/cluster up

cluster-down:
	e2e/cluster down

bench: $(STAMP)  ## local overhead benchmark
	$(BIN)/python bench/local_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
