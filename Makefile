# shardlab: every target sets up what it needs on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup redis run test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "shardlab needs $(PYTHON) on PATH (set PYTHON=... to another 3.11 interpreter)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/shardlab run

# The real-Redis tests (tests/redis) start their own redis-server processes on free
# ports of 127.0.0.1; this target only makes sure the Debian package is there. It never
# starts a server, and without one those tests skip with the reason instead of failing.
REDIS_HINT := install it with: apt-get install redis-server (Debian, Ubuntu), or brew install redis (macOS)

redis:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u 2>/dev/null)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing the Debian package redis-server for tests/redis"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
		|| echo "could not install redis-server: tests/redis will be skipped; $(REDIS_HINT)"; \
	else \
		echo "redis-server is not on PATH: tests/redis will be skipped; $(REDIS_HINT)"; \
	fi

test: setup redis
	$(PY) -m pytest -q -p no:cacheprovider

test-all: setup redis
	$(PY) -m pytest -q -p no:cacheprovider -m ''

bench: setup
	$(PY) benchmarks/flow.py
	$(PY) benchmarks/check.py

clean:
	rm -rf $(VENV) *.egg-info .hypothesis
