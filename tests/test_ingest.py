"""The ingest job end to end: sample files -> lake + PostgreSQL, idempotent, refusing bad
files without storing any of them, and finishing exactly once across a server crash."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import threading
import time
from pathlib import Path

import asyncpg
import pyarrow.dataset as ds
import pytest

from cluster.config import load_config
from cluster.lake import Lake
from cluster.store.embedded import EmbeddedPostgres
from jobs.ingest.job import ingest

from tests.conftest import SAMPLE, free_port, write_config_dir

# Rows each sample file puts in PostgreSQL (book snapshots: one per second of the recording).
EXPECTED_STORE = {
    "bars": 43_200,
    "funding_rates": 7_080 + 8_467,
    "quotes": 66_089 + 28_040 + 45,
    "market_trades": 21_313 + 9_757 + 64,
}


def counts(dsn: str, tables) -> dict[str, int]:
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
        finally:
            await conn.close()

    return asyncio.run(go())


def test_ingesting_the_sample_fills_lake_and_store_and_rerunning_adds_nothing(config, dsn):
    report = asyncio.run(ingest([SAMPLE], config, progress=False))
    assert not report.refused, report.render()
    assert len(report.files) == 6
    stored = counts(dsn, [*EXPECTED_STORE, "book_snapshots", "trading_pairs", "instruments"])
    for table, rows in EXPECTED_STORE.items():
        assert stored[table] == rows, table
    # ~6 minutes of Binance books per market at 1 s, plus Hyperliquid's 26 s
    assert 600 < stored["book_snapshots"] < 800
    assert stored["instruments"] == stored["trading_pairs"] == 6

    lake_rows = {(s.kind, s.venue, s.instrument): s.rows for s in Lake(config.lake_root).summary()}
    assert lake_rows[("bars_1m", "binanceusdm", "SOL-PERP")] == 43_200
    assert lake_rows[("funding", "drift", "SOL-PERP")] == 8_467
    assert lake_rows[("book_updates", "binanceusdm", "BTC-PERP")] == 445_262
    assert sum(f.lake_new for f in report.files) == sum(lake_rows.values())

    again = asyncio.run(ingest([SAMPLE], config, progress=False))
    assert sum(f.lake_new for f in again.files) == 0
    assert sum(f.store_new for f in again.files) == 0
    assert counts(dsn, EXPECTED_STORE) == EXPECTED_STORE


def test_trading_pairs_hold_latest_price_volume_and_funding(config, dsn):
    asyncio.run(ingest([SAMPLE / "binance", SAMPLE / "drift"], config, progress=False))

    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return {r["pair"]: r for r in await conn.fetch("SELECT * FROM trading_pairs")}
        finally:
            await conn.close()

    pairs = asyncio.run(go())
    sol = pairs["binanceusdm:SOL-PERP"]
    assert float(sol["last_price"]) == 162.20  # close of the last 1m bar, 2025-06-03 15:32
    assert float(sol["volume"]) > 0 and sol["funding_rate"] is None
    drift = pairs["drift:SOL-PERP"]
    # last Drift row: fundingRate / oraclePriceTwap, hourly
    assert float(drift["funding_rate"]) == pytest.approx(-0.000012101912, abs=1e-12)


def test_the_lake_is_readable_by_plain_arrow_with_hive_partitions(config):
    asyncio.run(ingest([SAMPLE / "drift"], config, progress=False))
    dataset = ds.dataset(config.lake_root, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=(ds.field("kind") == "funding") & (ds.field("instrument") == "BTC-PERP"))
    assert table.num_rows == 7_080
    assert {"kind", "venue", "instrument", "date"} <= set(table.column_names)


def test_a_bad_file_is_refused_by_name_and_nothing_of_it_is_stored(config, dsn, tmp_path: Path):
    folder = tmp_path / "incoming"
    (folder / "drift").mkdir(parents=True)
    shutil.copy(SAMPLE / "drift" / "SOL-PERP.csv", folder / "drift" / "SOL-PERP.csv")
    good_rows = (SAMPLE / "drift" / "SOL-PERP.csv").read_text().splitlines()
    broken = good_rows[:5000] + ["1762300000,oops,0,0,0,0,0"] + good_rows[5000:]
    (folder / "drift" / "BTC-PERP.csv").write_text("\n".join(broken) + "\n")
    raw = (SAMPLE / "hftbacktest" / "hyperliquid" / "btcusd_20250126.gz").read_bytes()
    (folder / "btcusd_truncated.gz").write_bytes(raw[: len(raw) // 2])

    report = asyncio.run(ingest([folder], config, progress=False))
    refused = {Path(f.path).name: f.error for f in report.refused}
    assert set(refused) == {"BTC-PERP.csv", "btcusd_truncated.gz"}
    assert "fundingRate" in refused["BTC-PERP.csv"] or "oops" in refused["BTC-PERP.csv"]
    assert "gzip" in refused["btcusd_truncated.gz"]
    assert "REFUSED" in report.render()

    stored = counts(dsn, ["funding_rates", "quotes", "market_trades"])
    assert stored == {"funding_rates": 8_467, "quotes": 0, "market_trades": 0}
    kinds = {(s.kind, s.instrument) for s in Lake(config.lake_root).summary()}
    assert kinds == {("funding", "SOL-PERP")}


def test_an_unknown_venue_override_is_refused_before_anything_runs(config):
    with pytest.raises(KeyError, match="not configured in venues.yaml"):
        asyncio.run(ingest([SAMPLE / "drift"], config, venue="ftx", progress=False))


def test_ingest_finishes_exactly_once_when_postgres_crashes_midway(tmp_path: Path, server_dir: Path, monkeypatch):
    """Embedded store (no BOTMAIN_PG_DSN), tiny batches, and a crash + restart of the
    server partway through: every row ends up stored exactly once."""
    server = EmbeddedPostgres(server_dir / "pg", port=free_port(), database="ingest_crash", settings={"fsync": "off"})
    directory = write_config_dir(
        tmp_path / "configs",
        store={
            "postgres": {
                "embedded": {
                    "data_dir": str(server.data_dir),
                    "password_file": str(server.password_file),
                    "port": server.port,
                    "database": server.database,
                },
                "copy_batch_rows": 1_000,
                "reconnect": {"deadline_s": 60, "initial_backoff_s": 0.05, "max_backoff_s": 0.5},
            },
            "lake": {"root": str(tmp_path / "lake")},
        },
    )
    monkeypatch.delenv("BOTMAIN_PG_DSN", raising=False)
    config = load_config(directory)
    server.start()
    stop = threading.Event()

    def crasher() -> None:
        """Wait until bar batches are flowing, then crash the server and bring it back."""
        async def batches_committed() -> int:
            conn = await asyncpg.connect(server.dsn)
            try:
                if not await conn.fetchval("SELECT to_regclass('write_batches') IS NOT NULL"):
                    return 0
                return await conn.fetchval("SELECT count(*) FROM write_batches")
            finally:
                await conn.close()

        while not stop.is_set():
            try:
                if asyncio.run(batches_committed()) >= 8:
                    break
            except (OSError, asyncpg.PostgresError):
                pass
            time.sleep(0.01)
        server.stop("immediate")
        time.sleep(0.3)
        server.start()
        crashed.set()

    crashed = threading.Event()
    thread = threading.Thread(target=crasher, daemon=True)
    thread.start()
    try:
        report = asyncio.run(ingest([SAMPLE / "binance"], config, progress=False))
    finally:
        stop.set()
        thread.join(timeout=30)
    try:
        assert crashed.is_set()
        assert not report.refused
        stored = counts(server.dsn, ["bars", "write_batches"])
        assert stored == {"bars": 43_200, "write_batches": 44}
    finally:
        server.destroy()


def test_gzip_sample_files_are_intact():
    for path in (SAMPLE / "hftbacktest").rglob("*.gz"):
        with gzip.open(path, "rt") as handle:
            assert handle.readline().split(" ", 1)[0].isdigit()


def _freqtrade_candles(table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather

    path.parent.mkdir(parents=True, exist_ok=True)
    feather.write_feather(pa.table({c: table[c] for c in ("date", "open", "high", "low", "close", "volume")}), path)


def test_hyperliquid_freqtrade_files_resolve_to_the_listed_instruments(config, dsn, tmp_path: Path):
    """Hyperliquid data in freqtrade's layout (``hyperliquid/futures/BTC_USDC_USDC-...``).
    No permissively licensed Hyperliquid freqtrade file is published (docs: data/sample/
    PROVENANCE.md), so the files are written in that layout from the sample's own rows: the
    names and the folder are what is under test, not the prices."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.feather as feather

    incoming = tmp_path / "user_data" / "data"
    futures = incoming / "hyperliquid" / "futures"
    candles = feather.read_table(SAMPLE / "binance" / "futures" / "SOL_USDT_USDT-1m-futures.feather")
    _freqtrade_candles(candles.slice(0, 300), futures / "SOL_USDC_USDC-1m-futures.feather")
    _freqtrade_candles(candles.slice(300, 120), futures / "HYPE_USDC_USDC-1m-futures.feather")  # not listed
    backwards = candles.slice(0, 50).take(pa.array(np.arange(49, -1, -1)))
    _freqtrade_candles(backwards, futures / "ETH_USDC_USDC-1m-futures.feather")  # not listed, and refused
    # freqtrade's funding file: one row per settlement, the rate (a fraction) in `open`
    drift = pacsv.read_csv(SAMPLE / "drift" / "BTC-PERP.csv").slice(0, 48)
    rate = pc.divide(drift["fundingRate"], drift["oraclePriceTwap"])
    date = pc.cast(pc.multiply(drift["ts"], 1000), pa.timestamp("ms", tz="UTC"))
    zeros = pa.array(np.zeros(drift.num_rows))
    funding = pa.table({"date": date, "open": rate, "high": rate, "low": rate, "close": rate, "volume": zeros})
    _freqtrade_candles(funding, futures / "BTC_USDC_USDC-1h-funding_rate.feather")
    # Binance's USDC-margined BTC perp is not listed, and its derived symbol is the listed BTCUSDT's
    _freqtrade_candles(candles.slice(0, 60), incoming / "binance" / "futures" / "BTC_USDC_USDC-1m-futures.feather")

    report = asyncio.run(ingest([incoming], config, progress=False))
    refused = {Path(f.path).name: f.error for f in report.refused}
    assert set(refused) == {"ETH_USDC_USDC-1m-futures.feather", "BTC_USDC_USDC-1m-futures.feather"}, report.render()
    assert "not strictly increasing" in refused["ETH_USDC_USDC-1m-futures.feather"]
    assert "'BTCUSDT'" in refused["BTC_USDC_USDC-1m-futures.feather"]
    stored = {inst for f in report.files if not f.error for _, inst, _ in f.series}
    assert stored == {"hyperliquid:SOL-PERP", "hyperliquid:HYPE-PERP", "hyperliquid:BTC-PERP"}
    # only what was stored and is not listed is reported as not listed
    assert report.unlisted_instruments == ["hyperliquid:HYPE-PERP"]
    unlisted_line = next(line for line in report.render().splitlines() if line.startswith("instruments not listed"))
    assert unlisted_line.endswith(": hyperliquid:HYPE-PERP")

    async def rows():
        conn = await asyncpg.connect(dsn)
        try:
            return {f"{r['venue']}:{r['symbol']}": r for r in await conn.fetch("SELECT * FROM instruments")}
        finally:
            await conn.close()

    instruments = asyncio.run(rows())
    assert set(instruments) == stored
    assert instruments["hyperliquid:SOL-PERP"]["venue_symbol"] == "SOL"  # as venues.yaml lists it
    assert float(instruments["hyperliquid:SOL-PERP"]["tick_size"]) == 0.001
    assert instruments["hyperliquid:BTC-PERP"]["venue_symbol"] == "BTC"
    assert instruments["hyperliquid:HYPE-PERP"]["tick_size"] is None
    lake = {(s.kind, s.venue, s.instrument): s.rows for s in Lake(config.lake_root).summary()}
    assert lake == {("bars_1m", "hyperliquid", "SOL-PERP"): 300, ("bars_1m", "hyperliquid", "HYPE-PERP"): 120,
                    ("funding", "hyperliquid", "BTC-PERP"): 48}  # fmt: skip
