"""Storing what the MDS sees, off the hot path, with batched binary COPY.

``accept`` turns an event into a row in a per-table column buffer and returns at once; a
background task (``run``) COPYs each table's buffer as one exactly-once batch every
``flush_interval_s`` or sooner when ``batch_rows`` wait. So a slow or failed PostgreSQL never
blocks market data: while a write is in progress or the store is away, rows accumulate.
A write that fails (the store is unreachable past ``retry_deadline_s``) goes back to the
front of its queue and is tried again with the same batch id, so it lands exactly once
when the store returns. Only past ``max_pending_rows`` queued rows are new rows dropped,
counted per table under ``dropped`` and logged; nothing accepted is lost silently.

Rows for instruments that PostgreSQL does not know (not in venues.yaml) are counted as
``unknown_instrument`` drops. Book snapshots are thinned to one per instrument per
``book_interval_ms`` of event time; replaying data that is already stored adds nothing
(the tables' natural keys de-duplicate).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import orjson

from cluster.config.models import PersistConfig, ReconnectConfig
from cluster.domain import Bar, FundingRate, L2Book, Quote, Trade
from cluster.events import ChainEvent, NewsItem, Signal
from cluster.store.writer import Batch, BatchRejected, StoreUnavailable, StoreWriter

log = logging.getLogger(__name__)

COLUMNS: dict[str, tuple[str, ...]] = {
    "quotes": ("instrument_id", "ts", "seq", "bid", "bid_size", "ask", "ask_size"),
    "book_snapshots": ("instrument_id", "ts", "seq", "bid_px", "bid_sz", "ask_px", "ask_sz"),
    "market_trades": ("instrument_id", "ts", "trade_id", "price", "size", "side"),
    "funding_rates": ("instrument_id", "ts", "rate", "interval_s", "oracle_price", "mark_price"),
    "bars": ("instrument_id", "interval_s", "ts", "open", "high", "low", "close", "volume"),
    "chain_events": ("kind", "slot", "signature", "ts", "program", "payload"),
    "news_items": ("item_id", "source", "published_at", "title", "url", "summary", "instruments", "sentiment"),
    "strategy_signals": ("strategy", "name", "ts", "instrument_id", "value", "payload"),
}
TABLE_OF: dict[type, str] = {
    Quote: "quotes",
    L2Book: "book_snapshots",
    Trade: "market_trades",
    FundingRate: "funding_rates",
    Bar: "bars",
    ChainEvent: "chain_events",
    NewsItem: "news_items",
    Signal: "strategy_signals",
}


@dataclass
class TableQueue:
    rows: deque = field(default_factory=deque)  # tuples in COLUMNS order
    retry: Batch | None = None  # a batch whose write failed: re-sent first, same id
    written: int = 0
    dropped: int = 0


class StorePersister:
    def __init__(
        self,
        writer_factory: Callable[[], StoreWriter],
        instrument_ids: dict[str, int],
        settings: PersistConfig,
        on_drop: Callable[[str, str, int], None] | None = None,
        on_written: Callable[[str, int], None] | None = None,
    ) -> None:
        self._writer_factory = writer_factory
        self.instrument_ids = instrument_ids
        self.settings = settings
        self.tables = {t: TableQueue() for t in settings.tables}
        self._on_drop = on_drop or (lambda table, reason, n: None)
        self._on_written = on_written or (lambda table, n: None)
        self._last_book_ns: dict[str, int] = {}
        self._book_gap_ns = int(settings.book_interval_ms * 1e6)
        self._wake = asyncio.Event()
        self.unknown_instruments: set[str] = set()
        self.last_error: str | None = None
        self.store_ok = True
        self.writes = 0
        self.failed_writes = 0
        self._queued = 0  # rows in the tables' queues and retry batches

    @property
    def pending(self) -> int:
        return self._queued

    def accept(self, event) -> None:
        table = TABLE_OF.get(type(event))
        if table is None:
            return
        queue = self.tables.get(table)
        if queue is None:
            return
        row = self._row(table, event)
        if row is None:
            return
        if self._queued >= self.settings.max_pending_rows:
            queue.dropped += 1
            self._on_drop(table, "store_backlog", 1)
            if queue.dropped == 1 or queue.dropped % 10_000 == 0:
                log.error(
                    "store backlog at %d rows: dropping new %s rows (%d so far); last error: %s",
                    self.settings.max_pending_rows, table, queue.dropped, self.last_error,
                )
            return
        queue.rows.append(row)
        self._queued += 1
        if len(queue.rows) >= self.settings.batch_rows:
            self._wake.set()

    def _instrument_id(self, table: str, key: str | None) -> int | None | bool:
        if key is None:
            return None
        iid = self.instrument_ids.get(key)
        if iid is None:
            if key not in self.unknown_instruments:
                self.unknown_instruments.add(key)
                log.warning("%s: instrument %s is not in venues.yaml; its rows are not stored", table, key)
            self.tables[table].dropped += 1
            self._on_drop(table, "unknown_instrument", 1)
            return False
        return iid

    def _row(self, table: str, e) -> tuple | None:
        if table == "chain_events":
            return (e.kind, e.slot, e.signature, e.ts_ns, e.program, orjson.dumps(e.payload).decode())
        if table == "news_items":
            return (e.item_id, e.source, e.ts_ns, e.title, e.url, e.summary, list(e.instruments), e.sentiment)
        if table == "strategy_signals":
            iid = self._instrument_id(table, e.instrument)
            if iid is False:
                return None
            return (e.strategy, e.name, e.ts_ns, iid, e.value, orjson.dumps(e.payload).decode())
        iid = self._instrument_id(table, e.instrument)
        if iid is False:
            return None
        if table == "quotes":
            return (iid, e.ts_ns, e.seq, e.bid, e.bid_size, e.ask, e.ask_size)
        if table == "market_trades":
            return (iid, e.ts_ns, e.trade_id, e.price, e.size, e.side.value)
        if table == "funding_rates":
            return (iid, e.ts_ns, e.rate, e.interval_s, e.oracle_price, e.mark_price)
        if table == "bars":
            return (iid, e.interval_s, e.ts_ns, e.open, e.high, e.low, e.close, e.volume)
        if table == "book_snapshots":
            last = self._last_book_ns.get(e.instrument)
            if last is not None and 0 <= e.ts_ns - last < self._book_gap_ns:
                return None  # thinned, by design (book_interval_ms), not a drop
            self._last_book_ns[e.instrument] = e.ts_ns
            return (
                iid,
                e.ts_ns,
                e.seq,
                [p for p, _ in e.bids],
                [s for _, s in e.bids],
                [p for p, _ in e.asks],
                [s for _, s in e.asks],
            )
        return None

    async def run(self) -> None:
        """Flush forever; cancel to stop (``flush`` once more first to store the tail)."""
        writer = self._writer_factory()
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.flush_interval_s)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                await self.flush(writer)
        finally:
            await writer.close()

    async def flush(self, writer: StoreWriter) -> int:
        """Write every table's queued rows (in batches of ``batch_rows``); returns rows stored."""
        stored = 0
        for table, queue in self.tables.items():
            while queue.retry is not None or queue.rows:
                batch = queue.retry or self._take(table, queue)
                queue.retry = None
                try:
                    await writer.write(batch)
                except StoreUnavailable as exc:
                    queue.retry = batch  # same batch id: if it did commit, the ledger makes this a no-op
                    self._failed(f"{table}: {exc}")
                    return stored
                except BatchRejected as exc:
                    self._queued -= len(batch)
                    queue.dropped += len(batch)
                    self._on_drop(table, "rejected", len(batch))
                    self._failed(f"{table}: {exc}")
                    log.error("store refused a %s batch of %d rows: %s", table, len(batch), exc)
                    continue
                except Exception as exc:  # anything else: keep the batch, try again next round
                    queue.retry = batch
                    self._failed(f"{table}: {type(exc).__name__}: {exc}")
                    return stored
                self._queued -= len(batch)
                self.store_ok = True
                self.writes += 1
                queue.written += len(batch)
                stored += len(batch)
                self._on_written(table, len(batch))
        return stored

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Ask the background task to write now and wait until nothing is queued; False if
        rows are still queued after ``timeout_s`` (the store is away)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._queued > 0:
            self._wake.set()
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _failed(self, message: str) -> None:
        self.store_ok = False
        self.failed_writes += 1
        self.last_error = message
        log.warning("store write failed, will retry: %s", message)

    def _take(self, table: str, queue: TableQueue) -> Batch:
        n = min(len(queue.rows), self.settings.batch_rows)
        rows = [queue.rows.popleft() for _ in range(n)]
        names = COLUMNS[table]
        columns = {name: [r[i] for r in rows] for i, name in enumerate(names)}
        return Batch(table, columns, f"mds:{table}:{uuid.uuid4().hex}")

    def status(self) -> dict:
        return {
            "store_ok": self.store_ok,
            "pending_rows": self.pending,
            "writes": self.writes,
            "failed_writes": self.failed_writes,
            "last_error": self.last_error,
            "tables": {t: {"written": q.written, "queued": len(q.rows), "dropped": q.dropped} for t, q in self.tables.items()},
        }


def make_writer_factory(dsn: str, settings: PersistConfig) -> Callable[[], StoreWriter]:
    """StoreWriters that give up on one write after ``retry_deadline_s`` (the batch is then
    re-queued), so a long outage never parks the flusher inside one write."""
    reconnect = ReconnectConfig(
        deadline_s=settings.retry_deadline_s,
        initial_backoff_s=min(0.1, settings.retry_deadline_s),
        max_backoff_s=min(2.0, settings.retry_deadline_s),
    )
    return lambda: StoreWriter(dsn, reconnect, command_timeout=60.0)
