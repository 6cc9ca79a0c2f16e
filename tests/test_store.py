"""The shared store against a real PostgreSQL: migrations, the exactly-once writer
(including a server restart in the middle of writing) and the reference-data upserts.
The binary COPY encoder has its own tests in test_binary_copy.py."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from cluster.config.models import ReconnectConfig
from cluster.domain import Instrument, MarketKind, Venue, VenueKind
from cluster.store.embedded import EmbeddedPostgres
from cluster.store.migrations import Migration, MigrationError, available, migrate, pending
from cluster.store.reference import PairSummary, upsert_instruments, upsert_trading_pairs, upsert_venues
from cluster.store.writer import Batch, BatchRejected, StoreUnavailable, StoreWriter

from tests.conftest import free_port

REQUIRED_TABLES = {
    "trading_pairs", "trade_logs", "venues", "instruments", "bars", "funding_rates", "quotes",
    "market_trades", "book_snapshots", "orders", "fills", "positions", "strategy_signals",
    "news_items", "chain_events", "backtest_runs", "backtest_results", "equity_curves",
    "model_registry", "metric_snapshots", "write_batches", "schema_migrations",
    "trading_runs", "order_events", "funding_payments", "risk_events", "equity_snapshots",
}  # fmt: skip

T0 = 1_746_372_780_000_000_000  # 2025-05-04 15:33 UTC, in ns


def run(coro):
    return asyncio.run(coro)


async def _fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _instrument_id(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await upsert_venues(conn, [Venue("binanceusdm", VenueKind.CEX)])
        ids = await upsert_instruments(
            conn, [Instrument("binanceusdm", "SOL-PERP", MarketKind.PERP, "SOL", "USD", "SOLUSDT", 0.01, 0.01, 0.01)]
        )
        return ids["binanceusdm:SOL-PERP"]
    finally:
        await conn.close()


def bars(iid: int, n: int, start: int = 0) -> dict:
    ts = T0 + (np.arange(start, start + n, dtype=np.int64) * 60_000_000_000)
    px = 100.0 + np.arange(start, start + n) * 0.01
    return {
        "instrument_id": np.full(n, iid, np.int32),
        "interval_s": np.full(n, 60, np.int32),
        "ts": ts,
        "open": px,
        "high": px + 0.05,
        "low": px - 0.05,
        "close": px + 0.01,
        "volume": np.full(n, 10.0),
    }


# --- migrations -----------------------------------------------------------------------


def test_migrations_create_every_table_and_reapplying_is_a_no_op(empty_dsn):
    async def go():
        conn = await asyncpg.connect(empty_dsn)
        try:
            first = await migrate(conn)
            second = await migrate(conn)
            tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
            recorded = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
            left = await pending(conn)
            return first, second, tables, recorded, left
        finally:
            await conn.close()

    first, second, tables, recorded, left = run(go())
    assert [m.version for m in first] == [m.version for m in available()]
    assert second == [] and left == []
    assert REQUIRED_TABLES <= tables
    assert [r["version"] for r in recorded] == [m.version for m in available()]


def test_concurrent_migrators_apply_each_migration_once(empty_dsn):
    async def go():
        conns = [await asyncpg.connect(empty_dsn) for _ in range(3)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
            return results, count
        finally:
            for c in conns:
                await c.close()

    results, count = run(go())
    assert sum(len(r) for r in results) == len(available()) == count


def test_an_edited_applied_migration_is_refused(empty_dsn, tmp_path: Path):
    for m in available():
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)

    async def go():
        conn = await asyncpg.connect(empty_dsn)
        try:
            await migrate(conn, tmp_path)
            first = available(tmp_path)[0]
            path = tmp_path / f"{first.version:04d}_{first.name}.sql"
            path.write_text(first.sql + "\n-- edited\n")
            with pytest.raises(MigrationError, match="changed after it was applied"):
                await migrate(conn, tmp_path)
        finally:
            await conn.close()

    run(go())


def test_a_failing_migration_leaves_nothing_behind(empty_dsn, tmp_path: Path):
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE b (x int); SELECT * FROM no_such_table;")

    async def go():
        conn = await asyncpg.connect(empty_dsn)
        try:
            with pytest.raises(asyncpg.UndefinedTableError):
                await migrate(conn, tmp_path)
            versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
            b_exists = await conn.fetchval("SELECT to_regclass('b') IS NOT NULL")
            return versions, b_exists
        finally:
            await conn.close()

    versions, b_exists = run(go())
    assert versions == [1]
    assert not b_exists


def test_time_series_primary_keys_serve_instrument_time_range_scans(dsn):
    rows = run(
        _fetch(
            dsn,
            """
            SELECT c.relname AS tbl, array_agg(a.attname ORDER BY k.ord) AS cols
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
            WHERE i.indisprimary AND c.relname = ANY($1)
            GROUP BY c.relname
            """,
            ["bars", "funding_rates", "quotes", "market_trades", "book_snapshots"],
        )
    )
    keys = {r["tbl"]: list(r["cols"]) for r in rows}
    assert keys["bars"] == ["instrument_id", "interval_s", "ts"]
    for table in ("funding_rates", "quotes", "market_trades", "book_snapshots"):
        assert keys[table][:2] == ["instrument_id", "ts"], table


def test_migration_files_are_numbered_and_named():
    names = [f"{m.version:04d}_{m.name}" for m in available()]
    assert names == sorted(names)
    assert isinstance(available()[0], Migration)


# --- the writer -------------------------------------------------------------------------


def test_batch_is_stored_once_even_when_resent(dsn):
    iid = run(_instrument_id(dsn))

    async def go():
        async with StoreWriter(dsn) as writer:
            first = await writer.write(Batch("bars", bars(iid, 1000), "file-a/0"))
            again = await writer.write(Batch("bars", bars(iid, 1000), "file-a/0"))
            other_id = await writer.write(Batch("bars", bars(iid, 1000), "file-b/0"))
            overlap = await writer.write(Batch("bars", bars(iid, 1000, start=500), "file-c/0"))
        count = (await _fetch(dsn, "SELECT count(*) AS n FROM bars"))[0]["n"]
        ledger = (await _fetch(dsn, "SELECT count(*) AS n FROM write_batches"))[0]["n"]
        return first, again, other_id, overlap, count, ledger

    first, again, other_id, overlap, count, ledger = run(go())
    assert (first.inserted, first.already_stored) == (1000, False)
    assert (again.inserted, again.already_stored) == (0, True)
    assert (other_id.inserted, other_id.already_stored) == (0, False)  # same rows, merged: no duplicates
    assert overlap.inserted == 500
    assert count == 1500
    assert ledger == 3


def test_stored_values_match_what_was_sent(dsn):
    iid = run(_instrument_id(dsn))
    cols = bars(iid, 3)

    async def go():
        async with StoreWriter(dsn) as writer:
            await writer.write(Batch("bars", cols, "vals"))
        return await _fetch(dsn, "SELECT extract(epoch from ts) AS e, open, high, low, close, volume FROM bars ORDER BY ts")

    rows = run(go())
    assert [float(r["e"]) for r in rows] == [t / 1e9 for t in cols["ts"]]
    assert [r["close"] for r in rows] == cols["close"].tolist()


def test_a_batch_with_one_bad_row_stores_nothing(dsn):
    iid = run(_instrument_id(dsn))
    cols = bars(iid, 100)
    cols["close"] = np.where(np.arange(100) == 99, np.nan, cols["close"])  # NULL into NOT NULL

    async def go():
        async with StoreWriter(dsn) as writer:
            with pytest.raises(BatchRejected, match="bars"):
                await writer.write(Batch("bars", cols, "bad"))
        return (await _fetch(dsn, "SELECT (SELECT count(*) FROM bars) AS b, (SELECT count(*) FROM write_batches) AS w"))[0]

    row = run(go())
    assert (row["b"], row["w"]) == (0, 0)


def test_unknown_column_and_table_are_named(dsn):
    iid = run(_instrument_id(dsn))

    async def go():
        async with StoreWriter(dsn) as writer:
            with pytest.raises(BatchRejected, match="no such column.*colse"):
                await writer.write(Batch("bars", {**bars(iid, 2), "colse": [1.0, 2.0]}, "x"))
            with pytest.raises(BatchRejected, match="no table named 'barz'"):
                await writer.write(Batch("barz", bars(iid, 2), "y"))

    run(go())


def test_writer_gives_up_cleanly_when_the_store_never_comes_back():
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"

    async def go():
        writer = StoreWriter(dead, ReconnectConfig(deadline_s=0.5, initial_backoff_s=0.05, max_backoff_s=0.1))
        with pytest.raises(StoreUnavailable, match="not stored and can be re-sent"):
            await writer.write(Batch("bars", bars(1, 3), "z"))
        assert writer.reconnects >= 2

    run(go())


@pytest.fixture
def own_server(server_dir: Path) -> EmbeddedPostgres:
    """A server of its own, so that restarting it disturbs no other test."""
    server = EmbeddedPostgres(server_dir / "pg", port=free_port(), database="restart", settings={"fsync": "off"})
    server.start()
    yield server
    server.destroy()


def test_writer_survives_a_server_crash_mid_ingest_with_every_row_once(own_server: EmbeddedPostgres):
    """Crash PostgreSQL (pg_ctl -m immediate) while batches are in flight, restart it;
    the writer reconnects and every row is stored exactly once."""
    dsn = own_server.dsn
    conn_setup = run(_migrate_and_instrument(dsn))
    iid = conn_setup
    n_batches, rows_per_batch = 60, 2_000
    crash_after = 10
    crashed = threading.Event()

    def crash_and_restart() -> None:
        own_server.stop("immediate")
        time.sleep(0.3)
        own_server.start()

    def after_commit(result) -> None:
        if not crashed.is_set() and after_commit.count >= crash_after:
            crashed.set()
            threading.Thread(target=crash_and_restart, daemon=True).start()
            time.sleep(0.05)  # let the crash land while the next batch is being sent
        after_commit.count += 1

    after_commit.count = 0

    async def go():
        writer = StoreWriter(
            dsn, ReconnectConfig(deadline_s=60, initial_backoff_s=0.05, max_backoff_s=0.5), after_commit=after_commit
        )
        async with writer:
            for i in range(n_batches):
                await writer.write(Batch("bars", bars(iid, rows_per_batch, start=i * rows_per_batch), f"crash/{i}"))
        return writer.reconnects

    reconnects = run(go())
    rows = run(_fetch(dsn, "SELECT count(*) AS n, count(DISTINCT ts) AS d FROM bars"))[0]
    ledger = run(_fetch(dsn, "SELECT count(*) AS n FROM write_batches"))[0]["n"]
    assert crashed.is_set()
    assert reconnects >= 1
    assert rows["n"] == rows["d"] == n_batches * rows_per_batch
    assert ledger == n_batches


async def _migrate_and_instrument(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return await _instrument_id(dsn)


# --- reference data ---------------------------------------------------------------------


def test_reference_upserts_are_idempotent_and_keep_known_sizes(dsn):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            venue = Venue("drift", VenueKind.PERP_DEX, -0.000025, 0.00035)
            await upsert_venues(conn, [venue])
            await upsert_venues(conn, [venue])
            full = Instrument("drift", "SOL-PERP", MarketKind.PERP, "SOL", "USD", "SOL-PERP", 0.0001, 0.01, 0.01)
            bare = Instrument("drift", "SOL-PERP", MarketKind.PERP, "SOL", "USD", "SOL-PERP")
            first = await upsert_instruments(conn, [full])
            second = await upsert_instruments(conn, [bare])
            row = await conn.fetchrow("SELECT tick_size, lot_size FROM instruments WHERE venue='drift'")
            key = "drift:SOL-PERP"
            await upsert_trading_pairs(conn, [PairSummary(key, first[key], 150.5, None, 1.2e-7)])
            await upsert_trading_pairs(conn, [PairSummary(key, first[key], 151.0, 1234.5, None)])
            pair = await conn.fetchrow("SELECT last_price, volume, funding_rate FROM trading_pairs WHERE pair=$1", key)
            counts = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM venues) v, (SELECT count(*) FROM instruments) i, (SELECT count(*) FROM trading_pairs) p"
            )
            return first, second, row, pair, counts
        finally:
            await conn.close()

    first, second, row, pair, counts = run(go())
    assert first == second
    assert (row["tick_size"], row["lot_size"]) == (0.0001, 0.01)
    assert float(pair["last_price"]) == 151.0 and float(pair["volume"]) == 1234.5
    assert float(pair["funding_rate"]) == pytest.approx(1.2e-7)  # 12 decimals: not rounded to zero
    assert (counts["v"], counts["i"], counts["p"]) == (1, 1, 1)
