"""Ray jobs: ingest, backtest sweeps, model training. Each runs on its own or as a Ray job."""
