"""Ingest throughput into PostgreSQL: ours beside raw asyncpg COPY (two ways), same rows, same run.

Rows: the sample's SOLUSDT perp 1m bars and the store rows of its three L2 recordings
(top-of-book quotes, trades, 1 s book snapshots with 20 levels per side).

* ours: from the parsed series to committed rows, the way ``botmain ingest`` writes them:
  mapping to store columns, column-wise binary COPY encoding, the exactly-once
  ``StoreWriter`` (ledger lookup, COPY, ledger row, one transaction per batch);
* raw, tuples built: ``asyncpg.copy_records_to_table`` of the same rows, the clock
  running from the same parsed Arrow columns ours starts from, so it includes building
  the Python tuples (with tz-aware datetimes) that asyncpg needs: what a writer that used
  asyncpg's own encoder would pay. This is the comparison that says whether our encoder
  earns its keep;
* raw, tuples prebuilt: the same COPY with the tuples built before the clock starts, so
  the reference pays no conversion cost at all: the server-bound floor.

Both raw variants use one transaction per table.

Both write into freshly truncated tables of one embedded PostgreSQL 16 started for the
run with Botmain's default settings; each measurement is repeated and the best kept.
Also printed: our encoder alone on the same batches (no server: the CPU the figures
above hide), file parsing and the whole ``ingest`` (parse + lake + store), for context.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import numpy as np  # noqa: E402

from cluster.config import load_config  # noqa: E402
from cluster.store import binary_copy  # noqa: E402
from cluster.store.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402
from cluster.store.migrations import migrate  # noqa: E402
from cluster.store.reference import upsert_instruments, upsert_venues  # noqa: E402
from cluster.store.writer import StoreWriter  # noqa: E402
from jobs.ingest import to_store  # noqa: E402
from jobs.ingest.formats import read_file  # noqa: E402
from jobs.ingest.job import ingest  # noqa: E402
from jobs.ingest.naming import InstrumentResolver  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
FILES = [
    SAMPLE / "binance" / "futures" / "SOL_USDT_USDT-1m-futures.feather",
    SAMPLE / "hftbacktest" / "usdm" / "btcusdt_20240808.gz",
    SAMPLE / "hftbacktest" / "spot" / "btcusdt_20240808.gz",
    SAMPLE / "hftbacktest" / "hyperliquid" / "btcusd_20250126.gz",
]
TABLES = ("bars", "quotes", "market_trades", "book_snapshots")
REPEATS = 5
BATCH_ROWS = 100_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(config):
    resolver = InstrumentResolver(config)
    start = time.perf_counter()
    parsed = [(path, read_file(path, resolver)) for path in FILES]
    seconds = time.perf_counter() - start
    rows = sum(s.rows for _, p in parsed for s in p.series)
    return parsed, rows, seconds


def store_batches(parsed, ids):
    """Everything ours sends, as (series, table, rows, tag, instrument id, sha)."""
    out = []
    for path, p in parsed:
        for series in p.series:
            mapped = to_store.store_rows(
                series, int(to_store.BOOK_SNAPSHOT_INTERVAL_S * 1e9), to_store.BOOK_SNAPSHOT_DEPTH
            )
            if mapped is not None:
                table, rows, tag = mapped
                out.append((series, table, rows, tag, ids[series.instrument.key], path.name))
    return out


def as_records(plan):
    """The same rows as Python tuples with tz-aware datetimes, for copy_records_to_table.
    Returns ``{table: (columns, records)}``."""
    records: dict[str, tuple[list[str], list[tuple]]] = {}
    for series, table, rows, _, iid, _ in plan:
        columns = ["instrument_id"] + (["interval_s"] if table == "bars" else []) + rows.column_names
        values = []
        for name in rows.column_names:
            col = rows[name]
            if name == "ts":
                ns = col.to_numpy().astype("datetime64[ns]").astype(np.int64)
                values.append([dt.datetime.fromtimestamp(x // 1000 / 1e6, dt.timezone.utc) for x in ns.tolist()])
            else:
                values.append(col.to_pylist())
        n = rows.num_rows
        prefix = [[iid] * n] + ([[series.interval_s] * n] if table == "bars" else [])
        recs = list(zip(*prefix, *values))
        cols, existing = records.setdefault(table, (columns, []))
        existing.extend(recs)
    return records


async def truncate(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}, write_batches")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def ours(dsn, plan) -> dict[str, float]:
    await truncate(dsn)
    per_table: dict[str, float] = {t: 0.0 for t in TABLES}
    async with StoreWriter(dsn) as writer:
        await writer._connection()  # connect outside the clock, as the raw side does
        for series, table, rows, tag, iid, name in plan:
            start = time.perf_counter()
            for batch in to_store.batches(series, rows, table, tag, iid, name, BATCH_ROWS):
                await writer.write(batch)
            per_table[table] += time.perf_counter() - start
    return per_table


async def column_types(dsn) -> dict[str, dict[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT c.relname, a.attname, t.typname FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
               WHERE c.relname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped""",
            list(TABLES),
        )
    finally:
        await conn.close()
    types: dict[str, dict[str, str]] = {t: {} for t in TABLES}
    for r in rows:
        types[r["relname"]][r["attname"]] = r["typname"]
    return types


def encode_only(plan, types) -> dict[str, float]:
    """Our encoder alone, on the same batches: the CPU the server-bound figures hide."""
    per_table: dict[str, float] = {t: 0.0 for t in TABLES}
    for series, table, rows, tag, iid, name in plan:
        batches = list(to_store.batches(series, rows, table, tag, iid, name, BATCH_ROWS))
        start = time.perf_counter()
        for batch in batches:
            binary_copy.encode([(c, types[table][c], v) for c, v in batch.columns.items()])
        per_table[table] += time.perf_counter() - start
    return per_table


async def raw(dsn, plan, prebuilt=None) -> dict[str, float]:
    """asyncpg's own COPY, table by table. With ``prebuilt`` (``as_records(plan)``) the
    tuples already exist; without it, building them is inside each table's clock."""
    await truncate(dsn)
    per_table: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        for table in TABLES:
            start = time.perf_counter()
            if prebuilt is None:
                columns, recs = as_records([p for p in plan if p[1] == table])[table]
            else:
                columns, recs = prebuilt[table]
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=recs, columns=columns)
            per_table[table] = time.perf_counter() - start
    finally:
        await conn.close()
    return per_table


async def main() -> None:
    config = load_config()
    parsed, parsed_rows, parse_s = parse(config)
    work = scratch_directory("botmain-bench-")
    server = EmbeddedPostgres(work / "pg", port=free_port(), database="bench")
    dsn = server.start()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            await upsert_venues(conn, [config.venue(v) for v in config.venues.venues])
            ids = await upsert_instruments(conn, [s.instrument for _, p in parsed for s in p.series])
        finally:
            await conn.close()
        plan = store_batches(parsed, ids)
        records = as_records(plan)
        counts = {t: len(records[t][1]) for t in TABLES}

        best_ours = {t: float("inf") for t in TABLES}
        best_built = {t: float("inf") for t in TABLES}
        best_raw = {t: float("inf") for t in TABLES}
        for _ in range(REPEATS):  # alternate, so no side owns a warmer server
            for t, s in (await raw(dsn, plan, records)).items():
                best_raw[t] = min(best_raw[t], s)
            for t, s in (await raw(dsn, plan)).items():
                best_built[t] = min(best_built[t], s)
            for t, s in (await ours(dsn, plan)).items():
                best_ours[t] = min(best_ours[t], s)
        types = await column_types(dsn)
        best_encode = {t: float("inf") for t in TABLES}
        for _ in range(REPEATS):
            for t, s in encode_only(plan, types).items():
                best_encode[t] = min(best_encode[t], s)

        # Whole ingest for context: parse + lake + store, into an empty database and lake.
        await truncate(dsn)
        import os

        os.environ["BOTMAIN_PG_DSN"] = dsn
        whole_cfg = load_config()
        object.__setattr__(whole_cfg.store.lake, "root", str(work / "lake"))
        start = time.perf_counter()
        report = await ingest(FILES, whole_cfg, progress=False)
        whole_s = time.perf_counter() - start
        whole_rows = sum(f.rows_read for f in report.files)
    finally:
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)

    figures: dict[str, float] = {}
    print("rows/s; raw = asyncpg copy_records_to_table, 'built' with the tuples built inside the clock, 'prebuilt' without")
    print(
        f"{'table':<16} {'rows':>9} {'ours':>11} {'raw built':>11} {'raw prebuilt':>13}"
        f" {'ours/built':>11} {'ours/prebuilt':>14}"
    )

    def line(name: str, rows: int, o: float, b: float, r: float, note: str = "") -> None:
        print(f"{name:<16} {rows:>9,} {o:>11,.0f} {b:>11,.0f} {r:>13,.0f} {o / b:>11.2f} {o / r:>14.2f}{note}")

    for t in TABLES:
        o, b, r = counts[t] / best_ours[t], counts[t] / best_built[t], counts[t] / best_raw[t]
        figures |= {
            f"{t}_rows": counts[t],
            f"{t}_ours_rows_per_s": round(o),
            f"{t}_raw_built_rows_per_s": round(b),
            f"{t}_raw_rows_per_s": round(r),
            f"{t}_ratio_built": round(o / b, 3),
            f"{t}_ratio": round(o / r, 3),
        }
        line(t, counts[t], o, b, r)
    total = sum(counts.values())
    o_total = total / sum(best_ours.values())
    b_total = total / sum(best_built.values())
    r_total = total / sum(best_raw.values())
    line("all", total, o_total, b_total, r_total, "   (target ours/prebuilt >= 0.80)")
    print()
    print("our encoder alone (no server), rows/s:  " + "  ".join(f"{t} {counts[t] / best_encode[t]:,.0f}" for t in TABLES))
    e_total = total / sum(best_encode.values())
    print(f"                                        all {e_total:,.0f}")
    figures |= {f"{t}_encode_rows_per_s": round(counts[t] / best_encode[t]) for t in TABLES}
    figures["encode_rows_per_s"] = round(e_total)
    print()
    print(f"parse {len(FILES)} files      {parsed_rows:>9,} rows read   {parsed_rows / parse_s:>12,.0f} rows/s")
    print(f"whole ingest       {whole_rows:>9,} rows read   {whole_rows / whole_s:>12,.0f} rows/s (parse + lake + store)")
    figures |= {
        "total_rows": total,
        "ours_rows_per_s": round(o_total),
        "raw_copy_built_rows_per_s": round(b_total),
        "raw_copy_rows_per_s": round(r_total),
        "ratio_built": round(o_total / b_total, 3),
        "ratio": round(o_total / r_total, 3),
        "parse_rows_per_s": round(parsed_rows / parse_s),
        "whole_ingest_rows_per_s": round(whole_rows / whole_s),
        "repeats": REPEATS,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
