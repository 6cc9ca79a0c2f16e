"""Turning events into store rows, in the MDS, cheaply and with every drop counted.

``RowBuffer.accept`` maps an event to a row tuple for its table (``COLUMNS`` order) and
queues it; ``take`` hands the queued rows over, by table, to whatever writes them (the
``mds-store`` actor). The buffer is bounded by ``max_pending_rows``: past it new rows are
dropped, counted per table under ``store_backlog`` and logged. Rows for instruments that
are not in venues.yaml (PostgreSQL has no id for them) are counted as ``unknown_instrument``.
Book snapshots are thinned to one per instrument per ``book_interval_ms`` of event time.
"""

from __future__ import annotations

import logging
from typing import Callable

import orjson

from cluster.config.models import PersistConfig
from cluster.domain import Bar, FundingRate, L2Book, Quote, Trade
from cluster.events import ChainEvent, NewsItem, Signal

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


class RowBuffer:
    def __init__(
        self,
        instrument_ids: dict[str, int],
        settings: PersistConfig,
        on_drop: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.instrument_ids = instrument_ids
        self.settings = settings
        self.rows: dict[str, list[tuple]] = {t: [] for t in settings.tables}
        self.dropped: dict[str, int] = {t: 0 for t in settings.tables}
        self.unknown_instruments: set[str] = set()
        self._on_drop = on_drop or (lambda table, reason, n: None)
        self._last_book_ns: dict[str, int] = {}
        self._book_gap_ns = int(settings.book_interval_ms * 1e6)
        self.pending = 0

    def accept(self, event) -> None:
        table = TABLE_OF.get(type(event))
        if table is None or table not in self.rows:
            return
        row = self._row(table, event)
        if row is None:
            return
        if self.pending >= self.settings.max_pending_rows:
            self._drop(table, "store_backlog", 1)
            return
        self.rows[table].append(row)
        self.pending += 1

    def take(self) -> dict[str, list[tuple]]:
        """Every queued row, by table; the buffer is empty afterwards."""
        out = {t: rows for t, rows in self.rows.items() if rows}
        if out:
            self.rows = {t: ([] if t in out else rows) for t, rows in self.rows.items()}
            self.pending = 0
        return out

    def put_back(self, taken: dict[str, list[tuple]]) -> None:
        """Rows that could not be handed over go back in front (up to the bound)."""
        for table, rows in taken.items():
            room = max(self.settings.max_pending_rows - self.pending, 0)
            keep = rows[:room]
            if len(rows) > room:
                self._drop(table, "store_backlog", len(rows) - room)
            self.rows[table] = keep + self.rows[table]
            self.pending += len(keep)

    def _drop(self, table: str, reason: str, n: int) -> None:
        before = self.dropped[table]
        self.dropped[table] += n
        self._on_drop(table, reason, n)
        if before == 0 or before // 10_000 != self.dropped[table] // 10_000:
            log.error("%s: %d rows dropped so far (%s)", table, self.dropped[table], reason)

    def _instrument_id(self, table: str, key: str | None) -> int | None | bool:
        if key is None:
            return None
        iid = self.instrument_ids.get(key)
        if iid is None:
            if key not in self.unknown_instruments:
                self.unknown_instruments.add(key)
                log.warning("%s: instrument %s is not in venues.yaml; its rows are not stored", table, key)
            self._drop(table, "unknown_instrument", 1)
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
