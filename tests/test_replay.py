"""The replay feed on the sample's real recordings: event order, speed control, and the
consolidated best price at known timestamps (computed independently from the lake)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pyarrow as pa
import pytest

from actors.feeds.base import FeedRunner
from actors.feeds.replay import ReplayFeed
from actors.mds.server import MarketDataServer
from cluster.domain import L2Book, Quote, Trade
from cluster.events import BestPrice, EventBatch
from cluster.lake import Lake
from cluster.book_snapshots import sample_snapshots
from tests.conftest import with_replay
from tests.feed_harness import run_feed

USDM = "binanceusdm:BTC-PERP"
SPOT = "binance:BTC-USDT"
HL = "hyperliquid:BTC-PERP"


def _ns(value: str) -> int:
    return int(np.datetime64(value, "ns").astype(np.int64))


def _replay(config, **settings) -> ReplayFeed:
    config = with_replay(config, **settings)
    return ReplayFeed(config, config.market_data.feeds.replay)


def test_replay_plays_every_recorded_event_once_in_event_time_order(replay_config):
    feed = _replay(replay_config, instruments=[USDM, SPOT], kinds=["quotes", "trades", "books"])
    sink, health = asyncio.run(run_feed(feed, lambda s, h: False, timeout_s=120))
    events = sink.events
    assert health.errors == {}
    ts = np.array([e.ts_ns for e in events])
    assert (np.diff(ts) >= 0).all(), "events out of event-time order"
    lake = Lake(replay_config.lake_root)
    for key in (USDM, SPOT):
        venue, symbol = key.split(":")
        quotes = [e for e in events if type(e) is Quote and e.instrument == key]
        trades = [e for e in events if type(e) is Trade and e.instrument == key]
        books = [e for e in events if type(e) is L2Book and e.instrument == key]
        assert len(quotes) == lake.read("quotes", venue, symbol).num_rows
        assert len(trades) == lake.read("trades", venue, symbol).num_rows
        snaps = sample_snapshots(lake.read("book_updates", venue, symbol), 1_000_000_000, 20)
        assert len(books) == snaps.num_rows
        assert all(len(b.bids) <= 20 and len(b.asks) <= 20 for b in books)
    # every batch went out no earlier than its events existed: emitted times never decrease
    emitted = [b.emitted_ns for b in sink.batches]
    assert emitted == sorted(emitted)
    assert feed.status()["position"] == feed.status()["total"] == len(events)


@pytest.mark.parametrize("speed", [10.0, 40.0])
def test_speed_sets_how_much_wall_time_a_second_of_market_time_takes(replay_config, speed):
    """20 s of recorded time (2024-08-08 23:56:00-23:56:20) at ``speed``: 20/speed seconds,
    and no event is published before its time has come."""
    feed = _replay(
        replay_config, instruments=[USDM], kinds=["quotes", "trades"], speed=speed,
        start="2024-08-08T23:56:00", end="2024-08-08T23:56:20",
    )
    started = time.monotonic()
    sink, health = asyncio.run(run_feed(feed, lambda s, h: False, timeout_s=30))
    elapsed = time.monotonic() - started
    events = sink.events
    span_s = (events[-1].ts_ns - events[0].ts_ns) / 1e9
    assert 19.0 < span_s <= 20.0
    assert span_s / speed * 0.95 < elapsed < span_s / speed + 1.5  # + lake read and start-up
    wall0 = sink.batches[0].emitted_ns
    first_ts = events[0].ts_ns
    for batch in sink.batches:
        due_s = (batch.events[0].ts_ns - first_ts) / 1e9 / speed
        assert (batch.emitted_ns - wall0) / 1e9 >= due_s - 0.02  # never early (20 ms timer slack)
    # paced batches are small: a fraction of a second of market time each
    assert len(sink.batches) > span_s / speed / 0.1


def test_max_speed_is_much_faster_than_real_time(replay_config):
    feed = _replay(replay_config, instruments=[USDM], kinds=["quotes", "trades"], speed="max",
                   start="2024-08-08T23:56:00", end="2024-08-08T23:58:00")
    started = time.monotonic()
    sink, _ = asyncio.run(run_feed(feed, lambda s, h: False, timeout_s=60))
    elapsed = time.monotonic() - started
    assert len(sink.events) > 10_000
    assert elapsed < 120 / 20  # two minutes of market time in well under 6 s


def _expected_top(lake: Lake, key: str, at_ns: int) -> tuple[float, float, float, float]:
    """The venue's top at ``at_ns`` from the lake alone: the newer of its last recorded quote
    and its last 1 s book snapshot at or before ``at_ns`` (a snapshot wins a tie, as in the
    replay's order)."""
    venue, symbol = key.split(":")
    quotes = lake.read("quotes", venue, symbol).to_pandas()
    quotes = quotes[quotes["ts"].astype("int64") <= at_ns]
    snaps = sample_snapshots(lake.read("book_updates", venue, symbol), 1_000_000_000, 20).to_pandas()
    snaps = snaps[snaps["ts"].astype("int64") <= at_ns]
    q = quotes.iloc[-1] if len(quotes) else None
    s = snaps.iloc[-1] if len(snaps) else None
    if s is not None and (q is None or s["ts"] >= q["ts"]):
        return s["bid_px"][0], s["bid_sz"][0], s["ask_px"][0], s["ask_sz"][0]
    return q["bid"], q["bid_size"], q["ask"], q["ask_size"]


def _best_prices_through_the_mds(config, instruments, until_ns: int | None = None) -> tuple[list[BestPrice], MarketDataServer]:
    config = with_replay(config, instruments=instruments, kinds=["quotes", "books"])
    server = MarketDataServer(config, "event")
    seen: list[BestPrice] = []

    async def deliver(batch: EventBatch) -> None:
        seen.extend(e for e in batch.events if type(e) is BestPrice)

    async def go():
        server.subscribe("exec", deliver, kinds=["best"], symbols=["BTC-PERP"])

        async def publish(batch: EventBatch) -> None:
            server.publish(batch)

        await FeedRunner(ReplayFeed(config, config.market_data.feeds.replay), publish).run()
        await server.fanout.drain()

    asyncio.run(go())
    return seen, server


@pytest.mark.parametrize("at", ["2024-08-08T23:55:00", "2024-08-08T23:57:30.250", "2024-08-08T23:59:59"])
def test_consolidated_best_price_at_known_timestamps_of_the_recording(replay_config, at):
    at_ns = _ns(at)
    seen, _ = _best_prices_through_the_mds(replay_config, [USDM])
    before = [b for b in seen if b.ts_ns <= at_ns]
    assert before, "no best price by then"
    best = before[-1]
    bid, bid_size, ask, ask_size = _expected_top(Lake(replay_config.lake_root), USDM, at_ns)
    assert (best.bid, best.bid_size, best.ask, best.ask_size) == (bid, bid_size, ask, ask_size)
    assert best.bid_venue == best.ask_venue == "binanceusdm"
    assert best.bid < best.ask


def test_the_known_best_price_at_23_57_30(replay_config):
    """The same check with the values written out (read once from the recording)."""
    seen, _ = _best_prices_through_the_mds(replay_config, [USDM])
    best = [b for b in seen if b.ts_ns <= _ns("2024-08-08T23:57:30.250")][-1]
    expected = _expected_top(Lake(replay_config.lake_root), USDM, _ns("2024-08-08T23:57:30.250"))
    assert (best.bid, best.ask) == (expected[0], expected[2])
    assert 60_000 < best.bid < 62_000 and best.ask - best.bid < 1.0  # BTC near 61k, a one-tick spread


def test_a_venue_whose_recording_ended_is_stale_and_the_best_comes_from_the_live_one(replay_config):
    """Both BTC-PERP recordings through one MDS: once the replay reaches Hyperliquid's
    2025-01-26 window, Binance USD-M (last heard 2024-08-08) is stale and excluded."""
    seen, server = _best_prices_through_the_mds(replay_config, [USDM, HL])
    at_ns = _ns("2025-01-26T19:14:20")
    best = [b for b in seen if b.ts_ns <= at_ns][-1]
    bid, _, ask, _ = _expected_top(Lake(replay_config.lake_root), HL, at_ns)
    assert (best.bid_venue, best.ask_venue) == ("hyperliquid", "hyperliquid")
    assert (best.bid, best.ask) == (bid, ask)
    assert "binanceusdm" in server.staleness.stale and "hyperliquid" not in server.staleness.stale
    # while both were in their own windows, binanceusdm was the best source in 2024
    early = [b for b in seen if b.ts_ns <= _ns("2024-08-08T23:59:00")][-1]
    assert early.bid_venue == "binanceusdm"


def test_nothing_to_replay_is_a_clear_failure_not_a_crash(replay_config):
    feed = _replay(replay_config, instruments=[USDM], start="2030-01-01")
    sink, health = asyncio.run(run_feed(feed, lambda s, h: h.state == "failed", timeout_s=30))
    assert health.state == "failed"
    assert "nothing to replay" in health.last_error and "from 2030-01-01" in health.last_error
    assert sink.events == []


def test_rate_publishes_evenly_whatever_the_recorded_times(replay_config):
    """Load-test pacing: 3,000 recorded events at 2,000 events/s take 1.5 s, never early."""
    feed = _replay(replay_config, instruments=[USDM], kinds=["quotes"], rate=2000.0,
                   start="2024-08-08T23:56:00", end="2024-08-08T23:59:00")
    feed.load = _first(feed.load, 3000)
    started = time.monotonic()
    sink, health = asyncio.run(run_feed(feed, lambda s, h: False, timeout_s=30))
    elapsed = time.monotonic() - started
    assert len(sink.events) == 3000 and health.errors == {}
    assert 1.4 < elapsed < 1.5 + 1.0
    wall0 = sink.batches[0].emitted_ns
    sent = 0
    for batch in sink.batches:
        assert (batch.emitted_ns - wall0) / 1e9 >= sent / 2000.0 - 0.02  # never ahead of the rate
        sent += len(batch)


def _first(load, n: int):
    """``ReplayFeed.load`` cut to its first ``n`` events."""

    def cut():
        ts, which, row, series = load()
        return ts[:n], which[:n], row[:n], series

    return cut
