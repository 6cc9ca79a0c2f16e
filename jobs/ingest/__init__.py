"""Ingest: recorded market data files -> the Parquet lake and PostgreSQL.

``python -m jobs.ingest PATH...`` (or ``botmain ingest``) reads freqtrade Feather
candles/funding/trades, the Drift funding CSV export, and raw Binance / Hyperliquid L2
stream recordings; see ``jobs/ingest/formats``.
"""
