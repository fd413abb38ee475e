# `make test` works on a fresh clone: it makes the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test system lint typecheck pytest test-vm soak zipapp bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) system lint typecheck pytest test-vm

# Debian packages the tests use for real (dockerd, busybox, sshd, ...); installs only
# what is missing, and only as root. Tests that need a missing one skip and say why.
system:
	sh tests/setup-system.sh

lint: $(STAMP)
	$(BIN)/ruff check labrun tests bench vm tools
	$(BIN)/ruff format --check labrun tests bench vm tools

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

# The cgroup v2 tests on a real kernel, in a throw-away qemu guest (vm/lane.sh).
test-vm: $(STAMP)
	VM_PYTHON=$(abspath $(BIN))/python vm/lane.sh

# The chaos test with 20 seeds per runtime and command kind (about 25 minutes).
soak: $(STAMP) system
	LABRUN_SOAK_SEEDS=20 $(BIN)/pytest -q tests/test_chaos.py

zipapp: $(STAMP)
	rm -rf dist/labrun.pyz
	$(BIN)/python tools/zipapp.py -o dist/labrun.pyz

# Byte-compiled first, as an installed copy is (even where PYTHONDONTWRITEBYTECODE is set).
bench: $(STAMP)
	$(BIN)/python -m compileall -q labrun
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/report.py
	$(BIN)/python bench/slurm.py

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache
