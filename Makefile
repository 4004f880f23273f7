# shardlab: every target sets up what it needs on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "shardlab needs $(PYTHON) on PATH (set PYTHON=... to another 3.11 interpreter)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/shardlab run

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-all: setup
	$(PY) -m pytest -q -p no:cacheprovider -m ''

bench: setup
	$(PY) benchmarks/flow.py
	$(PY) benchmarks/check.py

clean:
	rm -rf $(VENV) *.egg-info .hypothesis
