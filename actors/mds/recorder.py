"""Recording what the MDS sees into the Parquet lake, in the ingest's partitioning.

The ``mds-store`` actor hands the recorder the same row tuples it writes to PostgreSQL
(``actors.mds.rows``). The recorder buffers them, and every ``flush_interval_s`` (or once
``batch_rows`` wait) turns each table's rows into the lake kind's columns per instrument
and appends them as new segment files (``Lake.append``: the cost of the new rows only,
whatever the size of the day's partition). A partition with ``compact_segments`` segments
is folded into its ``part-0`` file; ``close`` folds every partition it touched. Writes run
on a worker thread, so the actor keeps answering while Parquet is encoded.

Lake kinds written (schemas in ``cluster.lake``): quotes -> ``quotes``, market_trades ->
``trades``, book_snapshots -> ``book_updates`` (each book as one snapshot message: one row
per level, ``is_snapshot`` true; a book's ``seq`` of 0, from a venue that numbers nothing,
becomes its timestamp so that snapshots stay distinct messages), funding_rates ->
``funding``, bars -> ``bars_<timeframe>``, mark_prices -> ``marks``, swap_quotes ->
``swap_quotes``, pool_states -> ``pool_states``.

Simplification: ``ts_recv`` is left empty. Events do not carry the time the feed received
them, so a recording has the venue's event times only (a replay of it cannot model the
feed's own latency).

A write that fails (a full disk) keeps its rows for the next flush; past
``max_pending_rows`` new rows are dropped, counted and logged. Like the persister, the
recorder counts rows given (``enqueued``) and done with (``resolved``) per table.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Callable

import numpy as np
import pyarrow as pa

from cluster.config.models import RecordConfig
from cluster.lake import TS, Lake

log = logging.getLogger(__name__)

KIND_OF_TABLE = {
    "quotes": "quotes",
    "market_trades": "trades",
    "book_snapshots": "book_updates",
    "funding_rates": "funding",
    "mark_prices": "marks",
    "swap_quotes": "swap_quotes",
    "pool_states": "pool_states",
    # bars: "bars_<timeframe>", from each row's interval
}
_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def timeframe(interval_s: int) -> str:
    """60 -> '1m', 3600 -> '1h', 90 -> '90s': the lake's ``bars_<timeframe>`` suffix."""
    for unit, seconds in _UNITS:
        if interval_s % seconds == 0:
            return f"{interval_s // seconds}{unit}"
    raise ValueError(f"bar interval {interval_s!r} s")


class LakeRecorder:
    def __init__(
        self,
        lake: Lake,
        settings: RecordConfig,
        max_pending_rows: int,
        on_drop: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.lake = lake
        self.settings = settings
        self.max_pending_rows = max_pending_rows
        self.buffer: dict[str, list[tuple]] = {t: [] for t in settings.tables}
        self.enqueued: dict[str, int] = {t: 0 for t in settings.tables}
        self.resolved: dict[str, int] = {t: 0 for t in settings.tables}
        self.written: dict[str, int] = {t: 0 for t in settings.tables}
        self.dropped: dict[str, int] = {t: 0 for t in settings.tables}
        self.touched: set[tuple[str, str, str, str]] = set()  # (kind, venue, symbol, date)
        self.last_error: str | None = None
        self._on_drop = on_drop or (lambda table, reason, n: None)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return sum(len(rows) for rows in self.buffer.values())

    def add(self, rows_by_table: dict[str, list[tuple]]) -> None:
        for table, rows in rows_by_table.items():
            if table not in self.buffer:
                continue
            self.enqueued[table] += len(rows)
            room = max(self.max_pending_rows - self.pending, 0)
            if len(rows) > room:
                lost = len(rows) - room
                self.dropped[table] += lost
                self.resolved[table] += lost
                self._on_drop(table, "lake_backlog", lost)
                log.error("lake recorder backlog at %d rows: dropped %d %s rows; last error: %s",
                          self.max_pending_rows, lost, table, self.last_error)
                rows = rows[:room]
            self.buffer[table].extend(rows)
        if self.pending >= self.settings.batch_rows:
            self._wake.set()

    async def run(self) -> None:
        """Flush forever; cancel to stop (``close`` first to write the tail)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.flush_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Append everything buffered; returns the rows written (0 if the write failed: the
        rows stay for the next flush)."""
        async with self._lock:
            taken = {t: rows for t, rows in self.buffer.items() if rows}
            if not taken:
                return 0
            self.buffer = {t: ([] if t in taken else rows) for t, rows in self.buffer.items()}
            try:
                await asyncio.to_thread(self._write, taken)
            except Exception as exc:
                for table, rows in taken.items():  # back in front, for the next flush
                    self.buffer[table] = rows + self.buffer[table]
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("recording into the lake at %s failed (%s); %d rows wait", self.lake.root, self.last_error, self.pending)
                return 0
            self.last_error = None
            n = 0
            for table, rows in taken.items():
                self.resolved[table] += len(rows)
                self.written[table] += len(rows)
                n += len(rows)
            return n

    def _write(self, taken: dict[str, list[tuple]]) -> None:
        for table, rows in taken.items():
            for (kind, key), columns in _series(table, rows).items():
                venue, _, symbol = key.partition(":")
                for date in self.lake.append(kind, venue, symbol, columns):
                    part = (kind, venue, symbol, date)
                    self.touched.add(part)
                    if self.lake.segments(*part) >= self.settings.compact_segments:
                        self.lake.compact(*part)

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Write what is buffered now; False if it could not be written within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pending:
            await self.flush()
            if self.pending and loop.time() > deadline:
                return False
            if self.pending:
                await asyncio.sleep(0.1)
        return True

    async def close(self, timeout_s: float = 30.0) -> bool:
        """Write the tail and fold every touched partition's segments into its part-0."""
        done = await self.drain(timeout_s)
        touched, self.touched = sorted(self.touched), set()
        await asyncio.to_thread(lambda: [self.lake.compact(*part) for part in touched])
        return done

    def status(self) -> dict:
        return {
            "lake": str(self.lake.root),
            "pending_rows": self.pending,
            "last_error": self.last_error,
            "tables": {t: {"written": self.written[t], "queued": len(self.buffer[t]), "dropped": self.dropped[t]} for t in self.buffer},
        }


def _series(table: str, rows: list[tuple]) -> dict[tuple[str, str], pa.Table]:
    """The rows of one store table as lake tables, per (lake kind, instrument key)."""
    by_key: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    if table == "bars":
        for r in rows:
            by_key[(f"bars_{timeframe(r[1])}", r[0])].append(r)
    else:
        kind = KIND_OF_TABLE[table]
        for r in rows:
            by_key[(kind, r[0])].append(r)
    return {k: _columns(table, group) for k, group in by_key.items()}


def _ts(values) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), pa.int64()).cast(TS)


def _columns(table: str, rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows))
    n = len(rows)
    if table == "quotes":
        _, ts, seq, bid, bsz, ask, asz = cols
        return pa.table({"ts": _ts(ts), "ts_recv": pa.nulls(n, TS), "seq": pa.array(seq, pa.int64()),
                         "bid": bid, "bid_size": bsz, "ask": ask, "ask_size": asz})
    if table == "market_trades":
        _, ts, trade_id, price, size, side = cols
        return pa.table({"ts": _ts(ts), "ts_recv": pa.nulls(n, TS), "trade_id": pa.array(trade_id, pa.string()),
                         "price": price, "size": size, "side": pa.array(side, pa.string())})
    if table == "funding_rates":
        _, ts, rate, interval, oracle, mark = cols
        return pa.table({"ts": _ts(ts), "rate": rate, "interval_s": pa.array(interval, pa.int32()),
                         "oracle_price": pa.array(oracle, pa.float64()), "mark_price": pa.array(mark, pa.float64())})
    if table == "bars":
        _, _, ts, o, h, lo, c, v = cols
        return pa.table({"ts": _ts(ts), "open": o, "high": h, "low": lo, "close": c, "volume": v})
    if table == "mark_prices":
        _, ts, mark, oracle = cols
        return pa.table({"ts": _ts(ts), "mark": pa.array(mark, pa.float64()), "oracle": pa.array(oracle, pa.float64())})
    if table == "swap_quotes":
        _, ts, side, size, price, impact, route = cols
        return pa.table({"ts": _ts(ts), "side": pa.array(side, pa.string()), "size": size, "price": price,
                         "price_impact": impact, "route": pa.array(route, pa.string())})
    if table == "pool_states":
        _, ts, pool_id, price, base, quote, fee, tvl = cols
        return pa.table({"ts": _ts(ts), "pool_id": pa.array(pool_id, pa.string()), "price": price, "base_reserve": base,
                         "quote_reserve": quote, "fee_rate": fee, "tvl_usd": pa.array(tvl, pa.float64())})
    if table == "book_snapshots":
        ts, seq, is_bid, price, size = [], [], [], [], []
        for _, t, s, bid_px, bid_sz, ask_px, ask_sz in rows:
            message = s or t  # a venue that numbers nothing: the time keeps snapshots apart
            for side_is_bid, pxs, szs in ((True, bid_px, bid_sz), (False, ask_px, ask_sz)):
                ts.extend([t] * len(pxs))
                seq.extend([message] * len(pxs))
                is_bid.extend([side_is_bid] * len(pxs))
                price.extend(pxs)
                size.extend(szs)
        m = len(ts)
        return pa.table({"ts": _ts(ts), "ts_recv": pa.nulls(m, TS), "seq": pa.array(seq, pa.int64()),
                         "is_snapshot": pa.array([True] * m), "is_bid": pa.array(is_bid, pa.bool_()),
                         "price": pa.array(price, pa.float64()), "size": pa.array(size, pa.float64())})
    raise ValueError(f"{table} is not recorded in the lake")
