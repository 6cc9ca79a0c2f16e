"""The Market Data Server's logic, driven directly (no Ray): consolidation across venues,
staleness, bars, batched fan-out with its drop accounting, and persistence into a real
PostgreSQL that can go away and come back."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from actors.mds.bars import BarBuilder
from actors.mds.fanout import Fanout, Subscription
from actors.mds.persistence import StorePersister, make_writer_factory
from actors.mds.rows import RowBuffer
from actors.mds.server import MarketDataServer
from cluster.config import load_config
from cluster.config.models import PersistConfig, RecordConfig
from cluster.domain import Bar, FundingRate, L2Book, Quote, Side, Trade
from cluster.events import BestPrice, ChainEvent, EventBatch, MarkPrice, NewsItem, PoolState, Signal, SwapQuote, VenueStatus
from tests.conftest import ROOT, free_port

S = 1_000_000_000
T0 = 1_723_161_600 * S  # 2024-08-09 00:00:00 UTC


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "configs")


def q(ts_s: float, key: str, bid: float, ask: float, size: float = 1.0, seq: int = 0) -> Quote:
    return Quote(T0 + int(ts_s * S), key, bid, size, ask, size, seq)


class Sink:
    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[EventBatch] = []
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self, batch: EventBatch) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("subscriber actor died")
        self.batches.append(batch)

    @property
    def events(self) -> list:
        return [e for b in self.batches for e in b.events]

    def of(self, cls) -> list:
        return [e for e in self.events if type(e) is cls]


async def _publish_and_drain(server: MarketDataServer, *batches: list, source: str = "test") -> None:
    for events in batches:
        server.publish(EventBatch(events, time.time_ns(), source))
    await server.fanout.drain()


def test_best_bid_and_ask_come_from_different_venues_and_name_them(config):
    async def go():
        server = MarketDataServer(config, "event")
        sink = Sink()
        server.subscribe("s", sink)
        await _publish_and_drain(
            server,
            [
                q(0.0, "binanceusdm:SOL-PERP", 150.00, 150.02, 5),
                q(0.1, "drift:SOL-PERP", 150.01, 150.05, 3),
                q(0.2, "hyperliquid:SOL-PERP", 149.99, 150.015, 7),
            ],
        )
        return server, sink

    server, sink = asyncio.run(go())
    best = server.best("SOL-PERP")
    assert (best.bid, best.bid_venue, best.bid_size) == (150.01, "drift", 3)
    assert (best.ask, best.ask_venue, best.ask_size) == (150.015, "hyperliquid", 7)
    assert best.ts_ns == T0 + int(0.2 * S)
    # each quote that moved the best produced one BestPrice, after the quote itself
    bests = sink.of(BestPrice)
    assert [(b.bid_venue, b.ask_venue) for b in bests] == [
        ("binanceusdm", "binanceusdm"),
        ("drift", "binanceusdm"),
        ("drift", "hyperliquid"),
    ]
    assert server.venue_tops("SOL-PERP")["drift"]["bid"] == 150.01


def test_a_book_sets_its_venue_top_and_an_older_book_does_not_override_a_newer_quote(config):
    server = MarketDataServer(config, "event")
    book = L2Book(T0 + S, "binanceusdm:BTC-PERP", ((60000.0, 2.0), (59999.0, 1.0)), ((60001.0, 1.5),), 7)
    server.publish(EventBatch([q(2.0, "binanceusdm:BTC-PERP", 60000.5, 60000.6)], time.time_ns(), "t"))
    server.publish(EventBatch([book], time.time_ns(), "t"))
    assert server.best("BTC-PERP").bid == 60000.5  # the book is older than the quote
    newer = L2Book(T0 + 3 * S, "binanceusdm:BTC-PERP", ((60002.0, 2.0),), ((60003.0, 1.5),), 8)
    server.publish(EventBatch([newer], time.time_ns(), "t"))
    best = server.best("BTC-PERP")
    assert (best.bid, best.bid_size, best.ask, best.ask_size) == (60002.0, 2.0, 60003.0, 1.5)
    assert server.view.books["binanceusdm:BTC-PERP"] is newer


def test_a_silent_venue_goes_stale_leaves_the_best_price_and_comes_back(config):
    """drift's limit is 10 s, binanceusdm's the default 10 s (venues.yaml); event clock."""

    async def go():
        server = MarketDataServer(config, "event")
        sink = Sink()
        server.subscribe("exec", sink, kinds=["best", "venue_status"])
        await _publish_and_drain(
            server,
            [q(0, "drift:SOL-PERP", 150.10, 150.12), q(0, "binanceusdm:SOL-PERP", 150.00, 150.20)],
            [q(5, "binanceusdm:SOL-PERP", 150.00, 150.20)],
        )
        assert server.best("SOL-PERP").bid_venue == "drift"
        # binanceusdm keeps talking; drift falls silent for more than 10 s of event time
        await _publish_and_drain(server, [q(10.5, "binanceusdm:SOL-PERP", 150.01, 150.21)])
        assert "drift" in server.staleness.stale
        stale_best = server.best("SOL-PERP")
        # drift speaks again
        await _publish_and_drain(server, [q(11, "drift:SOL-PERP", 150.11, 150.13)])
        return server, sink, stale_best

    server, sink, stale_best = asyncio.run(go())
    assert (stale_best.bid_venue, stale_best.ask_venue) == ("binanceusdm", "binanceusdm")
    assert stale_best.bid == 150.01
    statuses = sink.of(VenueStatus)
    assert [(s.venue, s.stale) for s in statuses] == [("drift", True), ("drift", False)]
    assert statuses[0].silent_s == pytest.approx(10.5)
    assert server.best("SOL-PERP").bid_venue == "drift"
    assert "drift" not in server.staleness.stale
    # the subscriber saw the switch away from drift and back
    venues = [(b.bid_venue, b.bid) for b in sink.of(BestPrice)]
    assert venues[-2:] == [("binanceusdm", 150.01), ("drift", 150.11)]  # back with its fresh quote only


def test_wall_clock_staleness_is_found_by_the_timer_with_no_new_events(config):
    async def go():
        cfg = config.market_data.mds.model_copy(update={"stale_check_interval_s": 0.05})
        md = config.market_data.model_copy(update={"mds": cfg})
        import dataclasses

        venues = config.venues.model_copy(
            update={"venues": {**config.venues.venues, "drift": config.venues.venues["drift"].model_copy(update={"stale_after_s": 0.2})}}
        )
        server = MarketDataServer(dataclasses.replace(config, market_data=md, venues=venues), "wall")
        sink = Sink()
        server.subscribe("exec", sink, kinds=["venue_status", "best"])
        server.start()
        try:
            server.publish(EventBatch([Quote(time.time_ns(), "drift:SOL-PERP", 1.0, 1.0, 1.1, 1.0)], time.time_ns(), "t"))
            await asyncio.sleep(0.5)
        finally:
            await server.stop()
        return sink

    sink = asyncio.run(go())
    statuses = sink.of(VenueStatus)
    assert [(s.venue, s.stale) for s in statuses] == [("drift", True)]
    assert statuses[0].silent_s > 0.2
    assert sink.of(BestPrice)[-1].bid is None  # the only venue left the best price


def test_bars_come_from_trades_or_from_quote_mids_when_an_interval_had_no_trade():
    builder = BarBuilder(60)
    key = "binance:BTC-USDT"
    out = []
    for ts, price, size in ((0, 100.0, 1.0), (10, 103.0, 0.5), (20, 99.0, 2.0), (59, 101.0, 1.0)):
        out.append(builder.on_trade(Trade(T0 + ts * S, key, price, size, Side.BUY, str(ts))))
    out.append(builder.on_quote(q(61, key, 101.0, 101.2)))  # closes the first bar
    out.append(builder.on_quote(q(90, key, 102.0, 102.2)))
    out.append(builder.on_quote(q(100, key, 100.0, 100.2)))
    closed = [b for b in out if b is not None]
    assert closed == [Bar(T0, key, 60, 100.0, 103.0, 99.0, 101.0, 4.5)]
    quote_bar = builder.close_due(T0 + 120 * S)
    assert quote_bar == [Bar(T0 + 60 * S, key, 60, 101.1, 102.1, 100.1, 100.1, 0.0)]
    assert builder.close_due(T0 + 10_000 * S) == []


def test_a_bar_the_mds_did_not_see_from_its_start_is_not_emitted():
    """Started (or restarted) mid-interval: that first bar lacks the interval's earlier
    trades, so it is skipped, not stored as if complete; the next one is whole."""
    builder = BarBuilder(60)
    key = "binance:BTC-USDT"
    out = [builder.on_trade(Trade(T0 + ts * S, key, 100.0 + ts, 1.0, Side.SELL, str(ts))) for ts in (30, 59, 60, 90)]
    out.append(builder.on_trade(Trade(T0 + 120 * S, key, 99.0, 1.0, Side.BUY, "120")))
    assert [b for b in out if b is not None] == [Bar(T0 + 60 * S, key, 60, 160.0, 190.0, 160.0, 190.0, 2.0)]
    assert builder.partial_skipped == 1
    other = "binanceusdm:BTC-PERP"
    assert builder.on_quote(q(75, other, 1.0, 1.2)) is None
    assert builder.close_due(T0 + 200 * S) == [Bar(T0 + 120 * S, key, 60, 99.0, 99.0, 99.0, 99.0, 1.0)]
    assert builder.partial_skipped == 2  # the other instrument's first bar began at 60 s, first seen at 75 s


def test_an_interval_is_emitted_once_even_when_an_event_for_it_comes_after_the_timer_closed_it():
    """The wall-clock timer closed the 60 s bar; a trade stamped inside it arrives later: it
    changes no bar, and no second bar of that interval is emitted (the store would keep
    whichever came first, the same instrument and time twice)."""
    builder = BarBuilder(60)
    key = "binance:BTC-USDT"
    assert builder.on_trade(Trade(T0 + 60 * S, key, 100.0, 1.0, Side.BUY, "a")) is None
    (closed,) = builder.close_due(T0 + 121 * S)
    assert closed == Bar(T0 + 60 * S, key, 60, 100.0, 100.0, 100.0, 100.0, 1.0)
    assert builder.on_trade(Trade(T0 + 100 * S, key, 105.0, 2.0, Side.BUY, "late")) is None
    assert builder.late_dropped == 1
    assert builder.on_trade(Trade(T0 + 130 * S, key, 101.0, 1.0, Side.BUY, "b")) is None
    assert builder.close_due(T0 + 200 * S) == [Bar(T0 + 120 * S, key, 60, 101.0, 101.0, 101.0, 101.0, 1.0)]


def test_a_replay_on_a_wall_clock_mds_builds_each_bar_once(config):
    """An MDS on the wall clock (live feeds) that also gets a replay: the replay's bars close
    on the replay's own event time, never on the wall-clock timer."""
    import dataclasses

    md = config.market_data.model_copy(update={"mds": config.market_data.mds.model_copy(update={"stale_check_interval_s": 0.02})})
    server = MarketDataServer(dataclasses.replace(config, market_data=md), "wall", None, None)

    async def go():
        server.start()
        key = "binance:BTC-USDT"
        for second in range(0, 181, 5):
            trade = Trade(T0 + second * S, key, 100.0 + second, 1.0, Side.BUY, str(second))
            server.publish(EventBatch([trade], time.time_ns(), "replay"))
            await asyncio.sleep(0.01)  # the timer runs between the batches
        await server.stop()

    asyncio.run(go())
    assert server.bars_built == 3  # 0-60, 60-120, 120-180: the bar at 180 is still open
    assert server.replay_bars.late_dropped == 0


def test_fanout_filters_and_batches_many_events_into_few_calls():
    async def go():
        fan = Fanout(batch_max=10_000, max_pending=1_000_000, interval_s=0.005)
        everything, sol_quotes, signals = Sink(delay_s=0.002), Sink(), Sink()
        fan.subscribe(Subscription("all", everything))
        fan.subscribe(Subscription("sol", sol_quotes, kinds=frozenset({"quote"}), symbols=frozenset({"SOL-PERP"})))
        fan.subscribe(Subscription("sig", signals, kinds=frozenset({"signal"}), signals=frozenset({"regime"})))
        for i in range(2000):
            key = "drift:SOL-PERP" if i % 2 else "binance:BTC-USDT"
            fan.add([q(i / 1000, key, 1.0, 1.1, seq=i)], time.time_ns())
            if i % 100 == 0:
                await asyncio.sleep(0.001)
        fan.add([Signal(T0, "a", "regime", 1.0), Signal(T0, "a", "other", 2.0)], time.time_ns())
        await fan.drain()
        return everything, sol_quotes, signals, fan

    everything, sol_quotes, signals, fan = asyncio.run(go())
    assert len(everything.events) == 2002
    assert len(everything.batches) < 400  # 2002 events, far fewer calls
    assert [e.seq for e in everything.events if type(e) is Quote] == list(range(2000))  # order kept
    assert len(sol_quotes.events) == 1000 and all(e.instrument == "drift:SOL-PERP" for e in sol_quotes.events)
    assert [s.name for s in signals.events] == ["regime"]
    assert all(b.emitted_ns <= time.time_ns() for b in everything.batches)


def test_a_slow_subscriber_loses_its_oldest_events_counted_and_others_get_everything():
    drops: list[tuple[str, int]] = []

    async def go():
        fan = Fanout(batch_max=50, max_pending=100, interval_s=0.0, on_drop=lambda name, n: drops.append((name, n)))
        slow, fast = Sink(delay_s=0.05), Sink()
        fan.subscribe(Subscription("slow", slow))
        fan.subscribe(Subscription("fast", fast))
        for i in range(1000):
            fan.add([q(i, "drift:SOL-PERP", 1.0, 1.1, seq=i)], time.time_ns())
            if i % 50 == 0:
                await asyncio.sleep(0)
        await fan.drain(timeout_s=10)
        return slow, fast, fan

    slow, fast, fan = asyncio.run(go())
    assert len(fast.events) == 1000
    received = len(slow.events)
    dropped = fan.subscriptions["slow"].dropped
    assert dropped > 0 and received + dropped == 1000  # every event either delivered or counted
    assert sum(n for name, n in drops if name == "slow") == dropped
    seqs = [e.seq for e in slow.events]
    assert seqs == sorted(seqs) and seqs[-1] == 999  # the newest are kept, in order


def test_a_dead_subscriber_is_removed_after_three_failed_deliveries():
    async def go():
        fan = Fanout(batch_max=1, max_pending=1000, interval_s=0.0)
        dead, alive = Sink(fail=True), Sink()
        fan.subscribe(Subscription("dead", dead))
        fan.subscribe(Subscription("alive", alive))
        for i in range(10):
            fan.add([q(i, "drift:SOL-PERP", 1.0, 1.1, seq=i)], time.time_ns())
            await asyncio.sleep(0.01)
        await fan.drain()
        return fan, alive

    fan, alive = asyncio.run(go())
    assert "dead" not in fan.subscriptions
    assert len(alive.events) == 10


def test_an_unknown_event_kind_is_refused_by_name(config):
    server = MarketDataServer(config, "event")
    with pytest.raises(TypeError, match="str is not a market-data event"):
        server.publish(EventBatch(["not an event"], time.time_ns(), "bad"))
    with pytest.raises(ValueError, match="unknown event kind"):
        server.subscribe("x", Sink(), kinds=["quotes"])


# --- persistence into a real PostgreSQL ------------------------------------------------------


def _ids(dsn: str) -> dict[str, int]:
    from actors.mds.store_actor import _register_instruments

    return asyncio.run(_register_instruments(load_config(ROOT / "configs"), dsn))


def _count(dsn: str, table: str) -> int:
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(f"SELECT count(*) FROM {table}")
        finally:
            await conn.close()

    return asyncio.run(go())


def _every_kind(n: int = 3) -> list:
    events = []
    for i in range(n):
        events += [
            q(i, "binanceusdm:BTC-PERP", 60000.0 + i, 60000.5 + i, seq=i),
            Trade(T0 + i * S, "binanceusdm:BTC-PERP", 60000.2, 0.01, Side.SELL, f"t{i}"),
            L2Book(T0 + i * S, "binanceusdm:BTC-PERP", ((60000.0, 1.0),), ((60001.0, 2.0),), i),
            FundingRate(T0 + i * 3600 * S, "drift:SOL-PERP", 1e-5, 3600, 150.0, 150.1),
            Bar(T0 + i * 60 * S, "drift:SOL-PERP", 60, 1.0, 2.0, 0.5, 1.5, 10.0),
            MarkPrice(T0 + i * S, "drift:SOL-PERP", 150.2, 150.1),
            SwapQuote(T0 + i * S, "jupiter:SOL-USDC", Side.BUY, 10.0, 150.3, 0.0004, "whirlpool"),
            PoolState(T0 + i * S, "raydium:SOL-USDC", "pool1", 150.25, 1e5, 1.5e7, 0.0025, 3e7),
            ChainEvent(T0 + i * S, "slot", 300_000_000 + i, payload={"parent": 299_999_999 + i}),
            NewsItem(T0 + i * S, f"news{i}", "fake", f"SOL rallies {i}", instruments=("SOL-PERP",), sentiment=1.0),
            Signal(T0 + i * S, "carry", "regime", float(i), "drift:SOL-PERP", {"why": "test"}),
        ]
    return events


PERSISTED = ("quotes", "market_trades", "book_snapshots", "funding_rates", "bars", "mark_prices", "swap_quotes",
             "pool_states", "chain_events", "news_items", "strategy_signals")
NO_LAKE = RecordConfig(enabled=False)


def _rows(events: list, settings: PersistConfig, record: RecordConfig = NO_LAKE) -> dict:
    buffer = RowBuffer(settings, record)
    for e in events:
        buffer.accept(e)
    return buffer.take()


def test_every_persisted_kind_lands_once_even_when_sent_twice(dsn: str):
    ids = _ids(dsn)
    settings = PersistConfig(book_interval_ms=0)

    async def go():
        persister = StorePersister(make_writer_factory(dsn, settings), settings, ids)
        writer = make_writer_factory(dsn, settings)()
        persister.add(_rows(_every_kind(), settings)["pg"])
        first = await persister.flush(writer)
        persister.add(_rows(_every_kind(), settings)["pg"])  # a replay of data already stored
        second = await persister.flush(writer)
        await writer.close()
        return persister, first, second

    persister, first, second = asyncio.run(go())
    assert first == second == 3 * len(PERSISTED)
    for table in PERSISTED:
        assert _count(dsn, table) == 3, table
    assert persister.pending == 0
    assert all(t.dropped == 0 for t in persister.tables.values())
    assert persister.resolved == persister.enqueued and persister.enqueued["quotes"] == 6


def test_a_dead_store_queues_then_drops_counted_and_recovers_exactly_once(dsn: str):
    """PostgreSQL unreachable: the failed batch is kept for a retry with the same id, rows
    past max_pending are counted as drops, and when the store is back everything queued
    lands exactly once."""
    ids = _ids(dsn)
    settings = PersistConfig(max_pending_rows=10, retry_deadline_s=0.2, book_interval_ms=0)
    dead_dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    drops: list[tuple[str, str, int]] = []

    async def go():
        persister = StorePersister(make_writer_factory(dead_dsn, settings), settings, ids, on_drop=lambda *a: drops.append(a))
        quotes = [q(i, "binanceusdm:BTC-PERP", 1.0 + i, 2.0 + i, seq=i) for i in range(15)]
        persister.add(_rows(quotes[:8], settings)["pg"])
        dead = make_writer_factory(dead_dsn, settings)()
        stored_while_dead = await persister.flush(dead)
        await dead.close()
        status = persister.add(_rows(quotes[8:], settings)["pg"])  # 8 queued for retry + 2 fit, 5 dropped
        resolved_while_dead = dict(persister.resolved)
        alive = make_writer_factory(dsn, settings)()
        stored = await persister.flush(alive)
        await alive.close()
        return persister, stored_while_dead, stored, status, resolved_while_dead

    persister, stored_while_dead, stored, status, resolved_while_dead = asyncio.run(go())
    assert stored_while_dead == 0
    assert status["store_ok"] is False and "unreachable" in status["last_error"]
    assert status["tables"]["quotes"]["dropped"] == 5 and status["pending_rows"] == 10
    assert resolved_while_dead["quotes"] == 5  # the drops are settled (counted), the rest is not
    assert stored == 10 and _count(dsn, "quotes") == 10
    assert drops == [("quotes", "store_backlog", 5)]
    assert persister.pending == 0 and persister.store_ok
    assert persister.resolved["quotes"] == persister.enqueued["quotes"] == 15


def test_the_mds_buffer_never_blocks_and_counts_what_it_cannot_hold(config):
    settings = PersistConfig(max_pending_rows=5)
    buffer = RowBuffer(settings, NO_LAKE)
    started = time.perf_counter()
    for i in range(8):
        buffer.accept(q(i, "binanceusdm:BTC-PERP", 1.0, 2.0, seq=i))
    assert time.perf_counter() - started < 0.05
    assert buffer.pending == 5 and buffer.dropped["quotes"] == 3
    taken = buffer.take()
    assert [r[2] for r in taken["pg"]["quotes"]] == [0, 1, 2, 3, 4] and buffer.pending == 0
    assert taken["lake"] == {}


def test_rows_go_to_the_lake_too_but_a_replay_is_not_recorded_back_into_a_lake():
    buffer = RowBuffer(PersistConfig(), RecordConfig())
    buffer.accept(q(0, "drift:SOL-PERP", 1.0, 2.0))
    buffer.accept(q(1, "binance:BTC-USDT", 1.0, 2.0), replayed=True)
    buffer.accept(ChainEvent(T0, "slot", 1))  # PostgreSQL only
    taken = buffer.take()
    assert [r[0] for r in taken["pg"]["quotes"]] == ["drift:SOL-PERP", "binance:BTC-USDT"]
    assert [r[0] for r in taken["lake"]["quotes"]] == ["drift:SOL-PERP"]
    assert "chain_events" in taken["pg"] and "chain_events" not in taken["lake"]
    assert buffer.pending == 0
    replaying = RowBuffer(PersistConfig(), RecordConfig(replay=True, lake_root="elsewhere"))
    replaying.accept(q(1, "binance:BTC-USDT", 1.0, 2.0), replayed=True)
    assert len(replaying.take()["lake"]["quotes"]) == 1


class LocalStore:
    """The ``mds-store`` actor's protocol, in process: a persister and its writer task.
    ``delay_s`` slows every hand-over; ``restart`` forgets everything queued, as a store
    actor whose process died would."""

    def __init__(self, dsn: str, ids: dict[str, int], settings: PersistConfig, delay_s: float = 0.0) -> None:
        self.dsn, self.ids, self.settings, self.delay_s = dsn, ids, settings, delay_s
        self.restart()

    def restart(self) -> None:
        import uuid

        if getattr(self, "task", None) is not None:
            self.task.cancel()
        self.incarnation = uuid.uuid4().hex
        self.persister = StorePersister(make_writer_factory(self.dsn, self.settings), self.settings, self.ids)
        self.task = asyncio.ensure_future(self.persister.run())

    def _status(self) -> dict:
        return {**self.persister.status(), "incarnation": self.incarnation, "resolved": {"pg": dict(self.persister.resolved)}}

    async def add(self, handover_id: int, payload: bytes) -> dict:
        import pickle

        await asyncio.sleep(self.delay_s)
        self.persister.add(pickle.loads(payload).get("pg", {}))
        return {**self._status(), "ticket": {"pg": dict(self.persister.enqueued)}}

    async def status(self) -> dict:
        return self._status()

    async def drain(self, timeout_s):
        return await self.persister.drain(timeout_s)


def _server(config, settings: PersistConfig, store) -> MarketDataServer:
    import dataclasses

    mds = config.market_data.mds.model_copy(update={"persist": settings, "record": NO_LAKE})
    md = config.market_data.model_copy(update={"mds": mds})
    return MarketDataServer(dataclasses.replace(config, market_data=md), "event", RowBuffer(settings, NO_LAKE), store)


def test_the_mds_hands_rows_to_a_slow_store_without_slowing_publish(config, dsn: str):
    """The MDS with a store link that takes 300 ms per hand-over: publishing stays fast,
    rows wait in the MDS's buffer and all land once the store catches up."""
    settings = PersistConfig(flush_interval_s=0.05, book_interval_ms=0)
    ids = _ids(dsn)

    async def go():
        store = LocalStore(dsn, ids, settings, delay_s=0.3)
        server = _server(config, settings, store)
        server.start()
        worst = 0.0
        for i in range(200):
            t = time.perf_counter()
            server.publish(EventBatch([q(i, "binanceusdm:BTC-PERP", 1.0 + i, 2.0 + i, seq=i)], time.time_ns(), "t"))
            worst = max(worst, time.perf_counter() - t)
            await asyncio.sleep(0.002)
        assert await server.flush_store(10)
        report = server.store_report()
        await server.stop()
        store.task.cancel()
        return worst, report

    worst, report = asyncio.run(go())
    assert worst < 0.01
    assert report["tables"]["quotes"]["written"] == 200 and report["pending_rows"] == 0
    assert _count(dsn, "quotes") == 200


def test_a_feed_learns_which_of_its_batches_are_stored_and_a_restarted_store_gets_them_again(config, dsn: str):
    """Each answer to a feed's batch names its last batch whose rows are in the store; a store
    that restarts (losing its queue) is sent again every hand-over it had not stored, and
    every row lands once."""
    from actors.stream import Origin

    settings = PersistConfig(flush_interval_s=30, book_interval_ms=0)  # the store writes only when asked
    ids = _ids(dsn)

    async def go():
        store = LocalStore(dsn, ids, settings)
        server = _server(config, settings, store)
        answers = []
        for seq in range(1, 6):
            origin = Origin("feed:x", b"KEY", "127.0.0.1", seq)
            batch = EventBatch([q(seq * 10 + k, "binanceusdm:BTC-PERP", 1.0, 2.0, seq=k) for k in range(4)], time.time_ns(), "x")
            answers.append(server.publish(batch, origin))
            await server.forward_rows()  # one hand-over per batch
        assert answers == [0, 0, 0, 0, 0] and len(server.outbox.kept) == 5  # nothing written yet
        store.restart()  # the store actor died with 5 hand-overs queued
        await server.outbox.sync()  # a new incarnation answers: everything kept goes again
        assert server.outbox.resent >= 4
        assert await server.flush_store(10)
        durable = server.publish(EventBatch([], time.time_ns(), "x"), Origin("feed:x", b"KEY", "127.0.0.1", 6))
        await server.forward_rows()  # the empty batch made no rows: safe at the next cut
        store.task.cancel()
        return durable, server.durability.durable_seq(b"KEY"), server.store_report()

    durable, after_cut, report = asyncio.run(go())
    assert durable == 5 and after_cut == 6  # every batch is stored, the empty one too
    assert _count(dsn, "quotes") == 20 and report["pending_rows"] == 0


def test_rows_for_an_instrument_not_in_venues_yaml_are_counted_not_stored(dsn: str):
    settings = PersistConfig()
    persister = StorePersister(make_writer_factory(dsn, settings), settings, {"drift:SOL-PERP": 1})
    persister.add(_rows([q(0, "kraken:SOL-PERP", 1.0, 2.0), q(0, "drift:SOL-PERP", 1.0, 2.0)], settings)["pg"])
    assert persister.unknown_instruments == {"kraken:SOL-PERP"}
    assert persister.tables["quotes"].dropped == 1 and persister.pending == 1
    assert persister.resolved["quotes"] == 1  # the unknown one is settled: counted, not stored


def test_book_snapshots_are_thinned_to_one_per_interval():
    buffer = RowBuffer(PersistConfig(book_interval_ms=1000), NO_LAKE)
    for ms in (0, 200, 999, 1000, 1500, 2100):
        buffer.accept(L2Book(T0 + ms * 1_000_000, "binance:BTC-USDT", ((1.0, 1.0),), ((2.0, 1.0),)))
    assert [r[1] - T0 for r in buffer.pg["book_snapshots"]] == [0, 1_000_000_000, 2_100_000_000]
