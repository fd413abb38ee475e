# `make test` works on a fresh clone: it makes the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck pytest test-vm zipapp bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint typecheck pytest test-vm

lint: $(STAMP)
	$(BIN)/ruff check labrun tests bench
	$(BIN)/ruff format --check labrun tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

# The cgroup v2 tests on a real kernel, in a throw-away qemu guest (vm/lane.sh).
test-vm: $(STAMP)
	VM_PYTHON=$(abspath $(BIN))/python vm/lane.sh

zipapp: $(STAMP)
	rm -rf dist/labrun.pyz
	mkdir -p dist
	$(BIN)/shiv --quiet -c labrun -o dist/labrun.pyz -p '/usr/bin/env python3' .

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache
