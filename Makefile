# abdus: two commands for a new user, `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint clean

setup: $(STAMP)

# The stamp is refreshed whenever pyproject.toml or the system tools change, so `make` keeps the
# venv and the tools the tests use (dicom3tools, dcmtk, Orthanc) current.
$(STAMP): pyproject.toml scripts/install_system_deps.sh
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "abdus needs $(PYTHON) on PATH"; exit 1; }
	@bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Every run is new: runs/demo/runs/N; the cohort in runs/demo/cohorts/ is reused while it matches.
demo: setup
	$(VENV)/bin/abdus demo --out runs/demo

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(PY) -m ruff check src tests

# runs/ is left alone: it holds your demo runs and any run you trained there.
clean:
	rm -rf $(VENV) .pytest_cache
