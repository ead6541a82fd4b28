# qgate: `make serve` runs the gateway on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint browser-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	.ci/dev-tree $(VENV)
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/qgate serve -c conf/qgate.toml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Debian's chromium and the npm packages of tests/browser (idempotent; installs once).
browser-deps:
	.ci/setup-browser

test: $(STAMP) lint browser-deps
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.core

clean:
	rm -rf $(VENV) var
