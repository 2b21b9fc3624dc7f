# Entry points: `make demo` (install + run the main job), `make app` (the web app), `make test` (the test suite, minutes)
# and `make test-slow` (slow end-to-end runs and the deploy tests, ~25 min; `make test-deploy`: the deploy tests).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/ham10000
MODEL ?= src/dermxai/assets/default_model

.PHONY: install demo app lint test test-slow test-deploy bench clean

$(BIN)/dermxai: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[pretrained,dev]'
	touch $@

install: $(BIN)/dermxai

demo: install
	$(BIN)/dermxai --help
	$(BIN)/dermxai data split --data tests/fixtures/ham_mini --out artifacts/demo/split.csv
	$(BIN)/dermxai data audit --data tests/fixtures/ham_mini --split artifacts/demo/split.csv

app: install  # the web app on the bundled default model (offline); then open http://localhost:8501
	$(BIN)/dermxai app

lint: install  # code shape: ruff (lint + format), the import layers (import-linter contracts in pyproject.toml), hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/hadolint deploy/Dockerfile

test: install  # pytest's exit code 5 (no tests collected) counts as a failure
	$(BIN)/python -m pytest; status=$$?; if [ $$status -eq 5 ]; then echo 'no tests collected' >&2; exit 1; fi; exit $$status

test-slow: install  # what `make test` leaves out: slow end-to-end runs and the deploy tests (~25 min); one module per worker, so the Space is built once
	$(BIN)/python -m pytest -m 'slow or deploy' --dist loadfile

test-deploy: install  # the deploy tests alone (a fresh venv with PyTorch, ~18 min)
	$(BIN)/python -m pytest -m deploy -n 0 tests/test_deploy.py

bench: install  # every benchmark in quick mode, one after another; see benchmarks/RESULTS.md for full runs
	$(BIN)/python benchmarks/bench_cache.py --data $(DATA)
	$(BIN)/python benchmarks/bench_inference.py --quick
	$(BIN)/python benchmarks/bench_cams.py --quick --model $(MODEL)
	$(BIN)/python benchmarks/bench_api.py --quick --model $(MODEL)
	$(BIN)/python benchmarks/bench_train.py --quick --data $(DATA)

clean:
	rm -rf $(VENV) artifacts .pytest_cache
