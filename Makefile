# Botmain. On a fresh machine with Python 3.11 and make, these do all the set-up:
#   make test   install (uv, the locked virtualenv) and run the test suite
#   make demo   install, start the store and a local Ray cluster, ingest the sample data,
#               start the Market Data Server and the replay feed as named actors (replaying
#               the sample), sweep an EMA-cross grid as a Ray job and print its leaderboard
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced

.PHONY: test demo bench down clean install

install: $(STAMP)

# uv from PATH, else as a module of $(PYTHON) (installed with pip if missing); then the
# virtualenv exactly as uv.lock says, dev tools included.
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")

$(STAMP): pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --user --quiet uv \
	  || $(PYTHON) -m pip install --user --quiet --break-system-packages uv
	$(UV) sync --frozen --group dev
	@touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/botmain up
	$(BIN)/botmain ingest --submit data/sample
	@echo
	$(BIN)/botmain mds start --wait
	@echo
	$(BIN)/botmain sweep --strategy sol_ema_cross --grid fast=5:55:2 slow=20:220:8 --run-id demo-sol-ema-cross
	@echo
	$(BIN)/botmain status

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/compare_vectorbt.py
	$(BIN)/python bench/mds.py

down: $(STAMP)
	$(BIN)/botmain down

clean:
	rm -rf $(VENV) var .pytest_cache
