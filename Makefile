# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The HTML report's test renders it in headless Chromium: Debian's package, installed once.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

run: $(STAMP)
	$(BIN)/ats replay

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check engine storage dataflows actors online_ml tests
	$(BIN)/mypy engine storage

BENCH_TAPE := benchmarks/tapes/btcusdt-1d

$(BENCH_TAPE)/tape.json: | $(STAMP)
	$(BIN)/ats synth from-bars --bars data/binance-1m/BTCUSDT_1m.csv --out $(BENCH_TAPE) --minutes 1440

bench: $(STAMP) $(BENCH_TAPE)/tape.json
	$(BIN)/ats bench replay --tape $(BENCH_TAPE) --strategy ema_cross --out benchmarks/replay.json
	$(BIN)/ats bench live --out benchmarks/live.json

clean:
	rm -rf $(VENV) runs .pytest_cache
