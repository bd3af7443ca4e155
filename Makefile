# Two commands on a fresh machine: `make run` starts the whole stack, `make test` passes the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-integration bench browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

# `make run DEMO=0` starts the stack without triggering the demo run.
DEMO ?= 1
run: install
	$(BIN)/ibflow up $(if $(filter 0 no false,$(DEMO)),--no-demo)

# Headless Chromium for the browser tier comes from Debian's package.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

test: install browser
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m unit

bench: install
	$(BIN)/python -m ibflow.bench

clean:
	rm -rf $(VENV) var test-output
