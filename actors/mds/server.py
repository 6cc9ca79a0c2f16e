"""The Market Data Server's logic: one place every feed publishes to.

For each batch a feed publishes, in order: update the consolidated view (per-venue tops,
books, funding, marks; the best bid and ask across venues that are not stale), build bars,
note which venues spoke, queue rows for the store and the lake, and queue the events plus
what they derived (best-price changes, finished bars, venue status changes) for every
subscriber that wants them. Nothing in ``publish`` waits for a subscriber or for the store.

Every ``HANDOVER_S`` the queued rows go to the store as one hand-over, kept until the store
has them (``actors.mds.outbox``); ``publish`` answers a feed's batch with the last of its
batches whose rows are stored, so the feed knows what it may forget.

This class is plain asyncio so it can be driven directly in tests; ``actors.mds.actor``
hosts it as the named Ray actor ``mds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from actors.latency import LatencyRecorder
from actors.mds.bars import BarBuilder
from actors.mds.consolidated import ConsolidatedView
from actors.mds.fanout import Fanout, Subscription
from actors.mds.metrics import NullMetrics
from actors.mds.outbox import Durability, Outbox, StoreLink
from actors.mds.rows import RowBuffer
from actors.mds.staleness import StalenessTracker
from cluster.config import BotmainConfig
from cluster.domain import Bar, FundingRate, L2Book, Quote, Trade
from actors.stream import Origin
from cluster.events import KIND_OF, EventBatch, MarkPrice, Signal, VenueStatus

log = logging.getLogger(__name__)

HANDOVER_S = 0.1  # rows go to the store writer this often (it batches them into COPYs)


@dataclass
class SourceStats:
    events: int = 0
    batches: int = 0
    last_recv_ns: int = 0
    pipeline_lag_s: float = 0.0  # receive - production of the batch's oldest event
    event_age_s: float = 0.0  # receive - the newest event's own timestamp
    rate: float = 0.0  # events/s over the last second
    _window_events: int = 0
    lag: LatencyRecorder = field(default_factory=lambda: LatencyRecorder(20_000))


class MarketDataServer:
    def __init__(
        self,
        config: BotmainConfig,
        clock: str,
        rows: RowBuffer | None = None,
        store: StoreLink | None = None,
        metrics: NullMetrics | None = None,
    ) -> None:
        md = config.market_data.mds
        self.settings = md
        self.view = ConsolidatedView()
        self.bars = BarBuilder(md.bar_interval_s)
        # A replay's bars close on its own events' time only: the wall-clock timer of an MDS
        # that also serves live feeds would close them as soon as they opened.
        self.replay_bars = BarBuilder(md.bar_interval_s)
        self.bars_built = 0  # bars the MDS made from trades and quotes (stored beside the ones it was sent)
        self.staleness = StalenessTracker({name: v.stale_after_s for name, v in config.venues.venues.items()}, clock)
        self.metrics = metrics or NullMetrics()
        self.fanout = Fanout(
            md.fanout_batch_max, md.subscriber_max_pending, md.fanout_interval_ms / 1000.0, on_drop=self._subscriber_drop
        )
        self.rows = rows
        self.store = store
        self.durability = Durability()
        self.outbox = (
            Outbox(store, self.durability, md.persist.max_pending_rows, on_drop=self._store_drop)
            if rows is not None and store is not None
            else None
        )
        self.sources: dict[str, SourceStats] = {}
        self.started_ns = time.time_ns()
        self.loop_lag = LatencyRecorder(10_000)
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._tick()))
        self._tasks.append(loop.create_task(self._watch_loop()))
        if self.outbox is not None:
            self._tasks.append(loop.create_task(self._forward_rows()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()

    # --- the hot path -------------------------------------------------------------------

    def publish(self, batch: EventBatch, origin: Origin | None = None) -> int:
        """Take a feed's batch. With ``origin`` (a batch over a stream): returns the last of
        that stream's batches whose rows are stored; without: the events accepted."""
        recv_ns = time.time_ns()
        events = batch.events
        if origin is not None:
            self.durability.handled_batch(origin.key, origin.seq, origin.peer, batch.cursor)
        if not events:
            return self._answer(origin, 0)
        derived: list = []
        kinds: dict[str, int] = {}
        rows = self.rows if self.rows is not None and self.rows.enabled else None
        replayed = batch.source == "replay"
        staleness = self.staleness
        event_clock = staleness.clock == "event"
        for e in events:
            t = type(e)
            kind = KIND_OF.get(t)
            if kind is None:
                raise TypeError(f"{batch.source}: {t.__name__} is not a market-data event")
            kinds[kind] = kinds.get(kind, 0) + 1
            instrument = getattr(e, "instrument", None)
            if instrument is not None and t is not Signal:
                # Venue state first, so this event's best price already excludes (or again
                # includes) the right venues.
                if event_clock and e.ts_ns > staleness.horizon:
                    derived.extend(self._went_stale(staleness.check(e.ts_ns)))
                back = staleness.seen(instrument.partition(":")[0], e.ts_ns if event_clock else recv_ns)
                if back is not None:
                    derived.extend(self._came_back(back))
            if t is Quote:
                best = self.view.on_quote(e)
                if best is not None:
                    derived.append(best)
                self._bar_closed((self.replay_bars if replayed else self.bars).on_quote(e), derived, replayed)
            elif t is Trade:
                self._bar_closed((self.replay_bars if replayed else self.bars).on_trade(e), derived, replayed)
            elif t is L2Book:
                best = self.view.on_book(e)
                if best is not None:
                    derived.append(best)
            elif t is FundingRate:
                self.view.on_funding(e)
            elif t is MarkPrice:
                self.view.on_mark(e)
            if rows is not None:
                rows.accept(e, replayed)
        self.fanout.add(events + derived if derived else events, batch.emitted_ns)
        self._account(batch, recv_ns, kinds)
        return self._answer(origin, len(events))

    def _answer(self, origin: Origin | None, accepted: int) -> int:
        if origin is None:
            return accepted
        if self.outbox is None:  # nothing is stored: a handled batch is done with
            self.durability.confirm(self.durability.cut())
        return self.durability.durable_seq(origin.key)

    def publish_signal(self, signal: Signal) -> None:
        self.publish(EventBatch([signal], time.time_ns(), f"signal:{signal.strategy}"))

    def _account(self, batch: EventBatch, recv_ns: int, kinds: dict[str, int]) -> None:
        source = batch.source or "unknown"
        stats = self.sources.get(source)
        if stats is None:
            stats = self.sources[source] = SourceStats()
        stats.events += len(batch)
        stats._window_events += len(batch)
        stats.batches += 1
        stats.last_recv_ns = recv_ns
        stats.pipeline_lag_s = (recv_ns - batch.emitted_ns) / 1e9
        stats.lag.record(recv_ns - batch.emitted_ns, len(batch), recv_ns)
        newest = getattr(batch.events[-1], "ts_ns", 0)
        stats.event_age_s = (recv_ns - newest) / 1e9 if newest else 0.0
        for kind, n in kinds.items():
            self.metrics.events(source, kind, n)

    def _bar_closed(self, bar: Bar | None, derived: list, replayed: bool = False) -> None:
        """A finished bar goes to the subscribers (with the batch) and to the store; built
        from a replay's events, it is recorded in the lake only as a replay's own are."""
        if bar is None:
            return
        derived.append(bar)
        self.bars_built += 1
        if self.rows is not None:
            self.rows.accept(bar, replayed)

    def _went_stale(self, changes: list[VenueStatus]) -> list:
        out: list = []
        for change in changes:
            out.append(change)
            out.extend(self.view.set_stale(change.venue, True, change.ts_ns))
            log.warning("venue %s is STALE (silent %.1fs)", change.venue, change.silent_s)
        return out

    def _came_back(self, change: VenueStatus) -> list:
        log.info("venue %s is back after %.1fs", change.venue, change.silent_s)
        return [change, *self.view.set_stale(change.venue, False, change.ts_ns)]

    def _subscriber_drop(self, name: str, n: int) -> None:
        self.metrics.dropped("subscriber", name, "slow_subscriber", n)

    def _store_drop(self, table: str, reason: str, n: int) -> None:
        self.metrics.dropped("store", table, reason, n)

    async def _tick(self) -> None:
        """Once per interval: staleness on the wall clock, bars of quiet markets, rates, gauges."""
        interval = self.settings.stale_check_interval_s
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            elapsed, last = now - last, now
            if self.staleness.clock == "wall":
                derived = self._went_stale(self.staleness.check())
                for bar in self.bars.close_due(time.time_ns()):
                    self._bar_closed(bar, derived)
                if derived:
                    self.fanout.add(derived, time.time_ns())
            for source, stats in self.sources.items():
                stats.rate = stats._window_events / elapsed
                stats._window_events = 0
                self.metrics.rate(source, stats.rate)
                self.metrics.pipeline_lag(source, stats.pipeline_lag_s)
                self.metrics.event_age(source, stats.event_age_s)
            silent = self.staleness.silent_s()
            for venue, s in silent.items():
                self.metrics.venue(venue, venue in self.staleness.stale, s)
            if self.outbox is not None:
                self.metrics.store_pending(self.rows.pending + self.outbox.pending_rows)
            for sub in self.fanout.subscriptions.values():
                self.metrics.subscriber_pending(sub.name, len(sub.pending))

    async def _forward_rows(self) -> None:
        """Hand the buffered rows to the store every ``HANDOVER_S``, one call at a time: while
        the store is slow, rows wait (bounded, drops counted). Small, frequent hand-overs
        keep each one's serialisation to a millisecond or two of the MDS's loop."""
        while True:
            await asyncio.sleep(HANDOVER_S)
            await self.forward_rows()

    async def forward_rows(self) -> None:
        await self.outbox.hand_over(self.rows.take(), self.durability.cut())

    async def flush_store(self, timeout_s: float = 30.0) -> bool:
        """Hand everything over now and wait until it is stored (tests, shutdown); False if
        the store did not have it all within ``timeout_s``."""
        if self.outbox is None:
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            await self.forward_rows()
            if not self.outbox.kept and self.rows.pending == 0:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self.store.drain(min(left, 5.0))  # the writer writes what it holds now
            await self.outbox.sync()
        await self.outbox.sync(refresh=True)  # the report shows the store as it is now
        return True

    def store_report(self) -> dict | None:
        if self.outbox is None:
            return None
        status = self.outbox.status or {}
        report = {
            "store_ok": status.get("store_ok", True) and self.outbox.last_error is None,
            "pending_rows": status.get("pending_rows", 0) + self.rows.pending + self.outbox.pending_rows,
            "writes": status.get("writes", 0),
            "failed_writes": status.get("failed_writes", 0),
            "last_error": self.outbox.last_error or status.get("last_error"),
            "resent_handovers": self.outbox.resent,
            # Why rows written differ from events in, besides drops: books PostgreSQL does not
            # keep (one per instrument per book_interval_ms), and bars the MDS built itself.
            "books_thinned": self.rows.thinned,
            "book_interval_ms": self.rows.settings.book_interval_ms,
            "bars_built": self.bars_built,
        }
        tables = {t: dict(v) for t, v in status.get("tables", {}).items()}
        for source in (self.rows.dropped, self.outbox.dropped):
            for table, n in source.items():
                if n:
                    entry = tables.setdefault(table, {"written": 0, "queued": 0, "dropped": 0})
                    entry["dropped"] += n
        report["tables"] = tables
        if "lake" in status:
            report["lake"] = status["lake"]
        return report

    async def _watch_loop(self) -> None:
        """How late a 10 ms timer fires: the time any call waits before the MDS can run it."""
        while True:
            start = time.perf_counter_ns()
            await asyncio.sleep(0.01)
            self.loop_lag.record(time.perf_counter_ns() - start - 10_000_000, 1)

    # --- subscribers and queries ----------------------------------------------------------

    def subscribe(
        self,
        name: str,
        deliver,
        kinds: list[str] | None = None,
        symbols: list[str] | None = None,
        signals: list[str] | None = None,
    ) -> dict:
        """Add (or replace) a subscriber; returns the current consolidated best prices so it
        starts from the present state rather than waiting for the next change."""
        sub = Subscription(
            name,
            deliver,
            frozenset(kinds) if kinds else None,
            frozenset(symbols) if symbols else None,
            frozenset(signals) if signals else None,
        )
        self.fanout.subscribe(sub)
        log.info("subscriber %s: kinds=%s symbols=%s", name, kinds, symbols)
        return {s: b for s, b in self.view.best.items() if sub.symbols is None or s in sub.symbols}

    def unsubscribe(self, name: str) -> bool:
        return self.fanout.unsubscribe(name)

    def best(self, symbol: str):
        return self.view.best.get(symbol)

    def venue_tops(self, symbol: str) -> dict:
        return {
            venue: {"ts_ns": t.ts_ns, "bid": t.bid, "bid_size": t.bid_size, "ask": t.ask, "ask_size": t.ask_size}
            for venue, t in self.view.tops.get(symbol, {}).items()
        }

    def market_snapshot(self, base: str | None = None) -> dict:
        """The latest state per venue-instrument (optionally of one base asset): top of book,
        settled funding, mark and oracle, and which venues are stale, on the MDS's clock.
        What the venue selector reads live."""
        def wanted(symbol: str) -> bool:
            return base is None or symbol.split("-", 1)[0] == base

        tops = {
            f"{venue}:{symbol}": {"ts_ns": t.ts_ns, "bid": t.bid, "ask": t.ask}
            for symbol, by_venue in self.view.tops.items() if wanted(symbol)
            for venue, t in by_venue.items()
        }
        funding = {
            k: {"ts_ns": f.ts_ns, "rate": f.rate, "interval_s": f.interval_s, "oracle": f.oracle_price, "mark": f.mark_price}
            for k, f in self.view.funding.items() if wanted(k.split(":", 1)[1])
        }
        marks = {k: {"ts_ns": m.ts_ns, "mark": m.mark, "oracle": m.oracle} for k, m in self.view.marks.items() if wanted(k.split(":", 1)[1])}
        now = self.staleness.event_now if self.staleness.clock == "event" and self.staleness.event_now else time.time_ns()
        return {"now_ns": now, "clock": self.staleness.clock, "stale_venues": sorted(self.staleness.stale),
                "tops": tops, "funding": funding, "marks": marks}

    def status(self) -> dict:
        silent = self.staleness.silent_s()
        return {
            "clock": self.staleness.clock,
            "uptime_s": (time.time_ns() - self.started_ns) / 1e9,
            "event_time_ns": self.staleness.event_now,
            "loop_lag": self.loop_lag.percentiles(),
            "sources": {
                name: {
                    "events": s.events,
                    "batches": s.batches,
                    "events_per_s": s.rate,
                    "pipeline_lag_s": s.pipeline_lag_s,
                    "pipeline_lag": s.lag.percentiles(),
                    "event_age_s": s.event_age_s,
                }
                for name, s in self.sources.items()
            },
            "venues": {
                v: {"stale": v in self.staleness.stale, "silent_s": silent[v]} for v in sorted(silent)
            },
            "best": {
                s: {"bid": b.bid, "bid_venue": b.bid_venue, "ask": b.ask, "ask_venue": b.ask_venue, "ts_ns": b.ts_ns}
                for s, b in sorted(self.view.best.items())
            },
            "funding": {k: {"rate": f.rate, "interval_s": f.interval_s, "ts_ns": f.ts_ns} for k, f in sorted(self.view.funding.items())},
            "subscribers": [s.status() for s in self.fanout.subscriptions.values()],
            "store": self.store_report(),
        }
