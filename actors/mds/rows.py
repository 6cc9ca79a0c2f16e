"""Turning events into rows, in the MDS, cheaply and with every drop counted.

``RowBuffer.accept`` maps an event to one row tuple for its table (``COLUMNS`` order) and
queues it for each sink that wants it: PostgreSQL (``persist``) and the Parquet lake
(``record``; the lake recorder turns the same tuples into its own columns). ``take``
cuts what is queued, by sink and table, for the ``mds-store`` actor. Rows name their
instrument by key (``venue:SYMBOL``); the store actor maps keys to PostgreSQL ids, so the
MDS never touches the database. The buffer is bounded by ``max_pending_rows``: past it new
rows are dropped, counted per table under ``store_backlog`` and logged. Book snapshots
stored in PostgreSQL are thinned to one per instrument per ``book_interval_ms`` of event
time; the lake gets every one.

A replay's events came from a lake: they go to PostgreSQL as before, but to the lake only
if ``record.replay`` is set (and then into a lake of their own), so that a replay never
writes its source back into itself.
"""

from __future__ import annotations

import logging
from typing import Callable

import orjson

from cluster.config.models import PersistConfig, RecordConfig
from cluster.domain import Bar, FundingRate, L2Book, Quote, Trade
from cluster.events import ChainEvent, MarkPrice, NewsItem, PoolState, Signal, SwapQuote

log = logging.getLogger(__name__)

# The first column of every table but chain_events and news_items is the instrument key
# (strategy_signals' may be None); the store actor replaces it with the instrument's id.
COLUMNS: dict[str, tuple[str, ...]] = {
    "quotes": ("instrument_id", "ts", "seq", "bid", "bid_size", "ask", "ask_size"),
    "book_snapshots": ("instrument_id", "ts", "seq", "bid_px", "bid_sz", "ask_px", "ask_sz"),
    "market_trades": ("instrument_id", "ts", "trade_id", "price", "size", "side"),
    "funding_rates": ("instrument_id", "ts", "rate", "interval_s", "oracle_price", "mark_price"),
    "bars": ("instrument_id", "interval_s", "ts", "open", "high", "low", "close", "volume"),
    "mark_prices": ("instrument_id", "ts", "mark", "oracle"),
    "swap_quotes": ("instrument_id", "ts", "side", "size", "price", "price_impact", "route"),
    "pool_states": ("instrument_id", "ts", "pool_id", "price", "base_reserve", "quote_reserve", "fee_rate", "tvl_usd"),
    "chain_events": ("kind", "slot", "signature", "ts", "program", "payload"),
    "news_items": ("item_id", "source", "published_at", "title", "url", "summary", "instruments", "sentiment"),
    "strategy_signals": ("instrument_id", "strategy", "name", "ts", "value", "payload"),
}
KEYED_BY_INSTRUMENT = frozenset(COLUMNS) - {"chain_events", "news_items"}
TABLE_OF: dict[type, str] = {
    Quote: "quotes",
    L2Book: "book_snapshots",
    Trade: "market_trades",
    FundingRate: "funding_rates",
    Bar: "bars",
    MarkPrice: "mark_prices",
    SwapQuote: "swap_quotes",
    PoolState: "pool_states",
    ChainEvent: "chain_events",
    NewsItem: "news_items",
    Signal: "strategy_signals",
}

Rows = dict[str, list[tuple]]  # table -> rows


class RowBuffer:
    def __init__(
        self,
        persist: PersistConfig,
        record: RecordConfig,
        on_drop: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.settings = persist
        self.pg_tables = frozenset(persist.tables) if persist.enabled else frozenset()
        self.lake_tables = frozenset(record.tables) if record.enabled else frozenset()
        self.record_replay = record.replay
        tables = self.pg_tables | self.lake_tables
        self.pg: Rows = {t: [] for t in self.pg_tables}
        self.lake: Rows = {t: [] for t in self.lake_tables}
        self.dropped: dict[str, int] = {t: 0 for t in tables}
        self.thinned = 0  # books left out of PostgreSQL by design (book_interval_ms): not drops
        self._on_drop = on_drop or (lambda table, reason, n: None)
        self._last_book_ns: dict[str, int] = {}
        self._book_gap_ns = int(persist.book_interval_ms * 1e6)
        self.pending = 0  # rows queued, counted once per sink

    @property
    def enabled(self) -> bool:
        return bool(self.pg_tables or self.lake_tables)

    def accept(self, event, replayed: bool = False) -> None:
        table = TABLE_OF.get(type(event))
        if table is None:
            return
        to_pg = table in self.pg_tables
        to_lake = table in self.lake_tables and (self.record_replay or not replayed)
        if to_pg and table == "book_snapshots" and self._thinned(event):
            to_pg = False  # by design (book_interval_ms), not a drop; the lake keeps every book
            self.thinned += 1
        if not (to_pg or to_lake):
            return
        row = self._row(table, event)
        n = to_pg + to_lake
        if self.pending + n > self.settings.max_pending_rows:
            self._drop(table, "store_backlog", n)
            return
        if to_pg:
            self.pg[table].append(row)
        if to_lake:
            self.lake[table].append(row)
        self.pending += n

    def take(self) -> dict[str, Rows]:
        """Every queued row, by sink (``pg``, ``lake``) and table; the buffer is empty after."""
        out = {
            "pg": {t: rows for t, rows in self.pg.items() if rows},
            "lake": {t: rows for t, rows in self.lake.items() if rows},
        }
        if self.pending:
            self.pg = {t: [] for t in self.pg_tables}
            self.lake = {t: [] for t in self.lake_tables}
            self.pending = 0
        return out

    def _drop(self, table: str, reason: str, n: int) -> None:
        before = self.dropped[table]
        self.dropped[table] += n
        self._on_drop(table, reason, n)
        if before == 0 or before // 10_000 != self.dropped[table] // 10_000:
            log.error("%s: %d rows dropped so far (%s)", table, self.dropped[table], reason)

    def _thinned(self, book) -> bool:
        """At most one stored book per instrument per ``book_interval_ms`` of event time."""
        last = self._last_book_ns.get(book.instrument)
        if last is not None and 0 <= book.ts_ns - last < self._book_gap_ns:
            return True
        self._last_book_ns[book.instrument] = book.ts_ns
        return False

    def _row(self, table: str, e) -> tuple:
        if table == "quotes":
            return (e.instrument, e.ts_ns, e.seq, e.bid, e.bid_size, e.ask, e.ask_size)
        if table == "market_trades":
            return (e.instrument, e.ts_ns, e.trade_id, e.price, e.size, e.side.value)
        if table == "book_snapshots":
            return (
                e.instrument,
                e.ts_ns,
                e.seq,
                [p for p, _ in e.bids],
                [s for _, s in e.bids],
                [p for p, _ in e.asks],
                [s for _, s in e.asks],
            )
        if table == "funding_rates":
            return (e.instrument, e.ts_ns, e.rate, e.interval_s, e.oracle_price, e.mark_price)
        if table == "bars":
            return (e.instrument, e.interval_s, e.ts_ns, e.open, e.high, e.low, e.close, e.volume)
        if table == "mark_prices":
            return (e.instrument, e.ts_ns, e.mark, e.oracle)
        if table == "swap_quotes":
            return (e.instrument, e.ts_ns, e.side.value, e.size, e.price, e.price_impact, e.route)
        if table == "pool_states":
            return (e.instrument, e.ts_ns, e.pool_id, e.price, e.base_reserve, e.quote_reserve, e.fee_rate, e.tvl_usd)
        if table == "chain_events":
            return (e.kind, e.slot, e.signature, e.ts_ns, e.program, orjson.dumps(e.payload).decode())
        if table == "news_items":
            return (e.item_id, e.source, e.ts_ns, e.title, e.url, e.summary, list(e.instruments), e.sentiment)
        if table == "strategy_signals":
            return (e.instrument, e.strategy, e.name, e.ts_ns, e.value, orjson.dumps(e.payload).decode())
        raise ValueError(f"no row for table {table}")
