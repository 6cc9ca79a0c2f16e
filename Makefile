# Botmain. On a fresh machine with Python 3.11 and make, these do all the set-up:
#   make test   install (uv, the locked virtualenv) and run the test suite
#   make demo   install, start the store and a local Ray cluster, ingest the sample data,
#               start the Market Data Server and the replay feed as named actors (replaying
#               the sample), sweep an EMA-cross grid as a Ray job and print its leaderboard,
#               paper-trade both sample strategies on the trading actors (strategy, risk,
#               execution, paper venue), train the venue selector (a Ray job), serve it on
#               Ray Serve and make a few authenticated decisions
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

# The demo's JWT key and API client are random, made once under var/demo (git-ignored),
# and reach every Ray process through the environment `botmain up` starts them with (the
# service's replicas read them there, and re-read the files every serve.auth_reload_s).
# The demo client may only decide (scope `decide`); to add an admin client, which may also
# activate models, append `,admin:<a long random secret>:decide+admin` to var/demo/api_clients.
# Set BOTMAIN_JWT_SECRET / BOTMAIN_API_CLIENTS (or their _FILE variants) yourself to use your own.
DEMO_SECRETS := $(CURDIR)/var/demo
demo: export BOTMAIN_JWT_SECRET_FILE ?= $(DEMO_SECRETS)/jwt_secret
demo: export BOTMAIN_API_CLIENTS_FILE ?= $(DEMO_SECRETS)/api_clients

$(DEMO_SECRETS)/jwt_secret: | $(STAMP)
	@mkdir -p $(DEMO_SECRETS) && chmod 700 $(DEMO_SECRETS)
	@umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(48))" > $@

$(DEMO_SECRETS)/api_clients: | $(STAMP)
	@mkdir -p $(DEMO_SECRETS) && chmod 700 $(DEMO_SECRETS)
	@umask 077 && $(BIN)/python -c "import secrets; print('demo:' + secrets.token_urlsafe(24) + ':decide')" > $@

demo: $(STAMP) $(DEMO_SECRETS)/jwt_secret $(DEMO_SECRETS)/api_clients
	$(BIN)/botmain up
	$(BIN)/botmain ingest --submit data/sample
	@echo
	$(BIN)/botmain mds start --wait
	@echo
	$(BIN)/botmain sweep --strategy sol_ema_cross --grid fast=5:55:2 slow=20:220:8 --run-id demo-sol-ema-cross
	@echo
	$(BIN)/botmain paper --strategy sol_ema_cross --start 2025-05-10 --end 2025-05-11 --trades 10
	@echo
	$(BIN)/botmain paper --strategy sol_funding_carry --trades 5
	@echo
	$(BIN)/botmain train-selector
	@echo
	$(BIN)/botmain serve
	@echo
	$(BIN)/botmain decide SOL-PERP buy 10
	$(BIN)/botmain decide SOL-PERP sell 2000 --horizon 72
	$(BIN)/botmain decide SOL-USDC buy 500 --horizon 1
	@echo
	$(BIN)/botmain status

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/compare_vectorbt.py
	$(BIN)/python bench/mds.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/pretrade_check.py
	$(BIN)/python bench/pipeline.py

down: $(STAMP)
	$(BIN)/botmain down

clean:
	rm -rf $(VENV) var .pytest_cache
