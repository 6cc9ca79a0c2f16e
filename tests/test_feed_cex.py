"""The cex feed against a fake Binance (tests/fakes/binance.py) on 127.0.0.1, through the real
ccxt binance/binanceusdm classes: conversion of books, trades, settled funding and mark prices,
trade and settlement deduplication across polls, and what each failure mode ends in.

One fake server serves the whole module (in its own thread and event loop, since each test
runs its feed with ``asyncio.run``). The exchanges keep ccxt's rate limiter, with a 1 ms
``rateLimit`` instead of Binance's 50 ms so that futures aggTrades (cost 20) and premiumIndex
(cost 10) do not cost a second and a half per poll.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from actors.feeds.cex import CexFeed
from actors.feeds.errors import FeedConfigError
from cluster.config import load_config
from cluster.config.models import BackoffConfig, CexFeedConfig
from cluster.domain import FundingRate, L2Book, Quote, Side, Trade
from cluster.events import MarkPrice
from tests.conftest import free_port
from tests.fakes.binance import SPOT, USDM, Failure, FakeBinance
from tests.feed_harness import run_feed

CONFIG = load_config(Path(__file__).resolve().parents[1] / "configs")
FAST = BackoffConfig(initial_s=0.05, max_s=0.2)
T0 = 1_700_000_000_000  # ms
H = 3_600_000  # ms


@pytest.fixture(scope="module")
def server():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = asyncio.run_coroutine_threadsafe(FakeBinance().start(free_port()), loop).result()
    yield fake
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@pytest.fixture
def fake(server: FakeBinance):
    server.reset()
    yield server
    server.reset()


def make_feed(fake: FakeBinance, **updates) -> CexFeed:
    settings = CexFeedConfig(
        enabled=True, venues=["binance"], instruments=["SOL-USDT"], poll_interval_s=0.05, backoff=FAST
    ).model_copy(update=updates)
    return CexFeed(
        CONFIG,
        settings,
        url_overrides={venue: fake.api_urls() for venue in settings.venues},
        # timeout_on_exit: ccxt sleeps 250 ms in close() for TLS teardown; there is no TLS here
        exchange_config={venue: {"rateLimit": 1, "timeout_on_exit": 0} for venue in settings.venues},
    )


def of(kind, events, instrument=None):
    return [e for e in events if isinstance(e, kind) and (instrument is None or e.instrument == instrument)]


# --- conversion -----------------------------------------------------------------------


def test_books_trades_and_funding_are_converted(fake: FakeBinance) -> None:
    fake.set_book(SPOT, "SOLUSDT", [("150.10", "2.500"), ("150.00", "10.000")], [("150.20", "3.125")], 4_001)
    fake.set_book(SPOT, "BTCUSDT", [("65000.01", "0.50000")], [("65000.02", "0.25000")], 4_002)
    fake.set_book(USDM, "SOLUSDT", [("150.05", "120")], [("150.06", "80"), ("150.10", "500")], 9_001, ts_ms=T0 + 5)
    fake.set_book(USDM, "BTCUSDT", [("64990.0", "1.500")], [("64990.1", "2.000")], 9_002, ts_ms=T0 + 6)
    sold = fake.add_trade(SPOT, "SOLUSDT", "150.10", "0.750", buyer_maker=True, ts_ms=T0)  # aggressor sold
    bought = fake.add_trade(SPOT, "SOLUSDT", "150.20", "1.250", buyer_maker=False, ts_ms=T0 + 1)  # aggressor bought
    perp = fake.add_trade(USDM, "SOLUSDT", "150.06", "12", buyer_maker=False, ts_ms=T0 + 2)
    fake.set_premium("SOLUSDT", "0.00012500", T0 + 3_600_000, mark="150.055", index="150.01", ts_ms=T0 + 7)
    fake.set_premium("BTCUSDT", "-0.00003000", T0 + 3_600_000, mark="64990.05", index="64995.5", ts_ms=T0 + 8)
    fake.add_settlement("SOLUSDT", "0.00010000", T0 - 8 * H + 3, mark="149.50000000")  # Binance stamps a few ms late
    fake.add_settlement("SOLUSDT", "-0.00002500", T0 + 1, mark="150.02000000")
    fake.add_settlement("BTCUSDT", "0.00005000", T0, mark="")  # older records have no mark price
    feed = make_feed(fake, venues=["binance", "binanceusdm"], instruments=None)
    started = time.time_ns()

    def done(c, h):
        return (
            len(of(L2Book, c.events)) >= 8
            and len(of(Trade, c.events)) >= 3
            and len(of(FundingRate, c.events)) >= 3
            and len(of(MarkPrice, c.events)) >= 2
        )

    collected, health = asyncio.run(run_feed(feed, done))
    events = collected.events

    assert health.errors == {} and health.state != "failed"
    assert feed.status()["venues"]["binance"]["markets"] == {"binance:SOL-USDT": "SOL/USDT", "binance:BTC-USDT": "BTC/USDT"}
    assert feed.status()["venues"]["binanceusdm"]["markets"] == {
        "binanceusdm:SOL-PERP": "SOL/USDT:USDT",
        "binanceusdm:BTC-PERP": "BTC/USDT:USDT",
    }
    # load_markets asked only for the market types the listings need, once per venue
    assert fake.count("/api/v3/exchangeInfo") == 1 and fake.count("/fapi/v1/exchangeInfo") == 1
    assert {r.query["limit"] for r in fake.requests if r.path.endswith("/depth")} == {"20"}

    spot = of(L2Book, events, "binance:SOL-USDT")[0]
    assert spot.bids == ((150.10, 2.5), (150.00, 10.0)) and spot.asks == ((150.20, 3.125),)
    assert spot.seq == 4_001
    assert started <= spot.ts_ns <= time.time_ns()  # spot depth has no timestamp: receipt time
    quote = of(Quote, events, "binance:SOL-USDT")[0]
    assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size, quote.seq) == (150.10, 2.5, 150.20, 3.125, 4_001)
    assert quote.ts_ns == spot.ts_ns

    perp_book = of(L2Book, events, "binanceusdm:SOL-PERP")[0]
    assert perp_book.bids == ((150.05, 120.0),) and perp_book.asks == ((150.06, 80.0), (150.10, 500.0))
    assert (perp_book.seq, perp_book.ts_ns) == (9_001, (T0 + 5) * 1_000_000)  # futures' "T"
    assert of(Quote, events, "binanceusdm:BTC-PERP")[0].bid == 64990.0

    spot_trades = of(Trade, events, "binance:SOL-USDT")
    assert spot_trades == [
        Trade(T0 * 1_000_000, "binance:SOL-USDT", 150.10, 0.75, Side.SELL, str(sold)),
        Trade((T0 + 1) * 1_000_000, "binance:SOL-USDT", 150.20, 1.25, Side.BUY, str(bought)),
    ]
    assert of(Trade, events, "binanceusdm:SOL-PERP") == [
        Trade((T0 + 2) * 1_000_000, "binanceusdm:SOL-PERP", 150.06, 12.0, Side.BUY, str(perp))
    ]

    # settled funding: one event per settlement, interval from their spacing (8 h for a lone one)
    assert of(FundingRate, events, "binanceusdm:SOL-PERP") == [
        FundingRate((T0 - 8 * H + 3) * 1_000_000, "binanceusdm:SOL-PERP", 0.0001, 8 * 3600, None, 149.5),
        FundingRate((T0 + 1) * 1_000_000, "binanceusdm:SOL-PERP", -0.000025, 8 * 3600, None, 150.02),
    ]
    assert of(FundingRate, events, "binanceusdm:BTC-PERP") == [
        FundingRate(T0 * 1_000_000, "binanceusdm:BTC-PERP", 0.00005, 8 * 3600, None, None)
    ]
    assert not of(FundingRate, events, "binance:SOL-USDT") and not of(MarkPrice, events, "binance:SOL-USDT")
    first = [r.query for r in fake.requests if r.path == "/fapi/v1/fundingRate"][0]
    assert first.get("limit") == "3" and "startTime" not in first  # the latest few, the first time

    # the live estimate: a mark price, and the rate in status(), never a FundingRate
    assert of(MarkPrice, events, "binanceusdm:SOL-PERP")[0] == MarkPrice(
        (T0 + 7) * 1_000_000, "binanceusdm:SOL-PERP", 150.055, 150.01
    )
    assert of(MarkPrice, events, "binanceusdm:BTC-PERP")[0] == MarkPrice(
        (T0 + 8) * 1_000_000, "binanceusdm:BTC-PERP", 64990.05, 64995.5
    )
    assert feed.status()["funding"]["binanceusdm:SOL-PERP"] == {
        "estimate": {"rate": 0.000125, "next_funding_ts_ns": (T0 + H) * 1_000_000, "ts_ns": (T0 + 7) * 1_000_000},
        "last_settlement_ts_ns": (T0 + 1) * 1_000_000,
    }


def perp_feed(fake: FakeBinance) -> CexFeed:
    return make_feed(fake, venues=["binanceusdm"], instruments=["SOL-PERP"], funding_interval_s=0.05)


def test_each_settlement_is_published_once_across_polls(fake: FakeBinance) -> None:
    for hours_ago in (32, 24, 16, 8, 0):
        fake.add_settlement("SOLUSDT", f"0.000{hours_ago + 10}000", T0 - hours_ago * H + hours_ago % 5, mark="150")
    fake.set_premium("SOLUSDT", "0.00010000", T0 + H, mark="150", index="150", ts_ms=T0)
    feed = perp_feed(fake)
    stage: dict = {}

    def done(c, h):
        polls = fake.count("/fapi/v1/fundingRate")
        if polls >= 4 and "added" not in stage:  # the venue moves SOL to 4 h funding
            fake.add_settlement("SOLUSDT", "-0.00001000", T0 + 4 * H + 2, mark="151")
            fake.add_settlement("SOLUSDT", "0.00002000", T0 + 8 * H, mark="152")
            stage["added"] = polls
        return "added" in stage and polls >= stage["added"] + 4

    collected, health = asyncio.run(run_feed(feed, done))
    assert health.errors == {}
    key = "binanceusdm:SOL-PERP"
    assert of(FundingRate, collected.events) == [  # the latest three, then the new two, each once
        FundingRate((T0 - 16 * H + 1) * 1_000_000, key, 0.00026, 8 * 3600, None, 150.0),
        FundingRate((T0 - 8 * H + 3) * 1_000_000, key, 0.00018, 8 * 3600, None, 150.0),
        FundingRate(T0 * 1_000_000, key, 0.0001, 8 * 3600, None, 150.0),
        FundingRate((T0 + 4 * H + 2) * 1_000_000, key, -0.00001, 4 * 3600, None, 151.0),
        FundingRate((T0 + 8 * H) * 1_000_000, key, 0.00002, 4 * 3600, None, 152.0),
    ]
    since = [r.query.get("startTime") for r in fake.requests if r.path == "/fapi/v1/fundingRate"]
    assert since[0] is None  # the latest few, then from the newest seen (a poll may fall between the two adds)
    assert {str(T0 + 1), str(T0 + 8 * H + 1)} <= set(since[1:]) <= {str(T0 + 1), str(T0 + 4 * H + 3), str(T0 + 8 * H + 1)}


def test_a_settlement_is_never_published_before_it_is_due(fake: FakeBinance) -> None:
    """Binance lists only past settlements, but clocks differ: one stamped after our now is
    held back, asked for again, and published once it is due."""
    due_ms = int(time.time() * 1000) + 800
    due_monotonic = time.monotonic() + 0.8
    fake.add_settlement("SOLUSDT", "0.00010000", due_ms - 4 * H, mark="150")
    fake.add_settlement("SOLUSDT", "0.00020000", due_ms, mark="151")
    fake.set_premium("SOLUSDT", "0.00010000", due_ms, mark="150", index="150", ts_ms=T0)
    feed = perp_feed(fake)
    collected, health = asyncio.run(run_feed(feed, lambda c, h: len(of(FundingRate, c.events)) >= 2))
    assert health.errors == {}
    past, due = of(FundingRate, collected.events)
    assert (past.ts_ns, past.interval_s) == ((due_ms - 4 * H) * 1_000_000, 8 * 3600)  # alone when first seen: 8 h
    assert (due.ts_ns, due.rate, due.interval_s) == (due_ms * 1_000_000, 0.0002, 4 * 3600)
    for batch in collected.batches:
        for event in of(FundingRate, batch.events):
            assert batch.emitted_ns >= event.ts_ns  # never ahead of the settlement
    asked = [r for r in fake.requests if r.path == "/fapi/v1/fundingRate"]
    assert asked[0].t < due_monotonic  # the first answer held the future settlement: it was held back
    assert [r.query.get("startTime") for r in asked[1:]] == [str(due_ms - 4 * H + 1)] * (len(asked) - 1)


def test_the_live_estimate_is_a_mark_price_and_a_status_not_a_funding_rate(fake: FakeBinance) -> None:
    fake.set_premium("SOLUSDT", "0.00012500", T0 + H, mark="150.10", index="150.00", ts_ms=T0)
    feed = perp_feed(fake)
    key = "binanceusdm:SOL-PERP"
    assert feed.status()["funding"] == {key: {"estimate": None, "last_settlement_ts_ns": None}}
    stage: dict = {}

    def done(c, h):
        polls = fake.count("/fapi/v1/premiumIndex")
        if polls >= 3 and "moved" not in stage:
            fake.set_premium("SOLUSDT", "-0.00002000", T0 + H, mark="151.20", index="151.00", ts_ms=T0 + 1_000)
            stage["moved"] = True
        return any(m.mark == 151.2 for m in of(MarkPrice, c.events)) and len(of(MarkPrice, c.events)) >= 5

    collected, health = asyncio.run(run_feed(feed, done))
    assert health.errors == {}
    marks = of(MarkPrice, collected.events)
    assert marks[0] == MarkPrice(T0 * 1_000_000, key, 150.1, 150.0)
    assert marks[-1] == MarkPrice((T0 + 1_000) * 1_000_000, key, 151.2, 151.0)
    assert len(marks) >= fake.count("/fapi/v1/premiumIndex") - 1  # one per poll (the last may be in flight)
    assert not of(FundingRate, collected.events)  # no settlement yet: the estimate is not one
    assert feed.status()["funding"][key] == {
        "estimate": {"rate": -0.00002, "next_funding_ts_ns": (T0 + H) * 1_000_000, "ts_ns": (T0 + 1_000) * 1_000_000},
        "last_settlement_ts_ns": None,
    }


# --- trades across polls --------------------------------------------------------------


def test_trades_are_deduplicated_across_polls(fake: FakeBinance) -> None:
    """Binance's startTime is inclusive, so each poll from the newest trade's time answers it
    again; new trades at that same millisecond must still come through, once."""
    ids = [fake.add_trade(SPOT, "SOLUSDT", "150.0", "1", True, T0), fake.add_trade(SPOT, "SOLUSDT", "150.1", "2", False, T0 + 10)]
    feed = make_feed(fake)
    polls_at = {}

    def aggtrades():
        return fake.count("/api/v3/aggTrades")

    def done(c, h):
        n = aggtrades()
        if n >= 2 and "second" not in polls_at:
            ids.append(fake.add_trade(SPOT, "SOLUSDT", "150.2", "3", True, T0 + 10))  # same ms as the newest seen
            ids.append(fake.add_trade(SPOT, "SOLUSDT", "150.3", "4", False, T0 + 20))
            polls_at["second"] = n
        if "second" in polls_at and n >= polls_at["second"] + 4 and "third" not in polls_at:
            ids.append(fake.add_trade(SPOT, "SOLUSDT", "150.4", "5", True, T0 + 30))
            polls_at["third"] = n
        return "third" in polls_at and n >= polls_at["third"] + 4

    collected, health = asyncio.run(run_feed(feed, done))
    trades = of(Trade, collected.events)
    assert [t.trade_id for t in trades] == [str(i) for i in ids]
    assert [t.size for t in trades] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert health.errors == {}
    polled = [r.query.get("startTime") for r in fake.requests if r.path == "/api/v3/aggTrades"]
    assert polled[0] is None  # the first poll takes the latest trades
    assert str(T0 + 10) in polled and str(T0 + 20) in polled  # then polls from the newest seen
    assert None in polled[1:]  # a poll with nothing new is followed by one for the latest trades


# --- failures -------------------------------------------------------------------------


def run_with_failure(fake: FakeBinance, failure: Failure, **updates):
    """Let a book through, inject ``failure``, and run until a book is published after the
    failure was counted;
    returns what was published, the health, and the feed's state at that moment."""
    fake.set_book(SPOT, "SOLUSDT", [("150.10", "1")], [("150.20", "1")], 1)
    feed = make_feed(fake, **updates)
    stage: dict = {}

    def done(c, h):
        books = of(L2Book, c.events)
        if books and "injected" not in stage:
            fake.script.append(failure)
            fake.set_book(SPOT, "SOLUSDT", [("150.30", "1")], [("150.40", "1")], 2)
            stage["injected"] = True
        if sum(h.errors.values()) and "error_seen_ns" not in stage:
            stage["error_seen_ns"] = time.time_ns()
        stage["state"] = h.state  # run_feed stops the runner afterwards: keep the state it ended in
        # spot books carry their receipt time: a later one was fetched after the failure
        return "error_seen_ns" in stage and any(b.seq == 2 and b.ts_ns > stage["error_seen_ns"] for b in books)

    collected, health = asyncio.run(run_feed(feed, done))
    stage["retries"] = feed.status()["venues"]["binance"]["retries"]
    return collected, health, stage


def gap_after(fake: FakeBinance, status: int) -> float:
    """Seconds between the failing request and the next one."""
    for i, r in enumerate(fake.requests):
        if r.status == status:
            return fake.requests[i + 1].t - r.t
    raise AssertionError(f"no HTTP {status} in {fake.requests}")


@pytest.mark.parametrize(
    "mode, path, status, kind, text",
    [
        ("429", None, 429, "rate_limited", "Retry-After 0.4s"),
        ("418", None, 418, "rate_limited", "Retry-After 0.4s"),
        ("429-bare", None, 429, "rate_limited", "no Retry-After"),
        ("500", None, 500, "unavailable", "ExchangeNotAvailable"),
        ("503", None, 503, "unavailable", "503"),
        ("503-json", None, 503, "unavailable", "Internal error"),
        ("malformed", "/api/v3/depth", 200, "malformed", "fetch_order_book SOL/USDT: body is not JSON"),
        ("malformed", "/api/v3/aggTrades", 200, "malformed", "fetch_trades SOL/USDT: body is not JSON"),
    ],
)
def test_failure_is_counted_retried_and_data_flows_again(fake, mode, path, status, kind, text) -> None:
    fake.retry_after = "0.4"
    collected, health, stage = run_with_failure(fake, Failure(mode, path))
    assert health.errors == {kind: 1}
    assert text in health.last_error
    # The venue waited and polled again on its own; the session (and other venues) went on.
    assert stage["retries"] == 1 and health.reconnects == 0 and stage["state"] == "connected"
    assert [b.seq for b in of(L2Book, collected.events)][-1] == 2
    assert all(t.price > 0 for t in of(Trade, collected.events))  # ccxt's parse of garbage never got out
    if status != 200:
        assert sum(1 for r in fake.requests if r.status == status) == 1  # ccxt did not retry on its own
        gap = gap_after(fake, status)
        if "Retry-After 0.4" in text:
            assert gap >= 0.4  # the venue's Retry-After, not the 0.05 s backoff
        else:
            assert gap < 0.3  # the backoff


def test_malformed_market_list_is_retried_not_cached(fake: FakeBinance) -> None:
    """ccxt turns a non-JSON exchangeInfo into an empty market list and caches it; the feed
    must report it as malformed and load the markets again, not fail on a missing symbol."""
    fake.script.append(Failure("malformed", "/api/v3/exchangeInfo"))
    fake.set_book(SPOT, "SOLUSDT", [("150.10", "1")], [("150.20", "1")], 1)
    feed = make_feed(fake)
    collected, health = asyncio.run(run_feed(feed, lambda c, h: of(L2Book, c.events)))
    assert health.errors == {"malformed": 1} and "load_markets: body is not JSON" in health.last_error
    assert feed.status()["venues"]["binance"]["retries"] == 1 and fake.count("/api/v3/exchangeInfo") == 2


@pytest.mark.parametrize(
    "mode, path, kind, text, reconnects",
    [
        ("malformed", "/fapi/v1/fundingRate", "malformed", "fetch_funding_rate_history SOL/USDT:USDT: body is not JSON", 1),
        ("malformed", "/fapi/v1/premiumIndex", "malformed", "fetch_funding_rate SOL/USDT:USDT: body is not JSON", 1),
        ("rejected", "/fapi/v1/fundingRate", "rejected", "Not all sent parameters were read", 0),
        ("503", "/fapi/v1/fundingRate", "unavailable", "fetch_funding_rate_history", 1),
    ],
)
def test_a_failed_funding_request_publishes_nothing_and_nothing_twice(fake, mode, path, kind, text, reconnects) -> None:
    fake.script.append(Failure(mode, path))
    fake.add_settlement("SOLUSDT", "0.00010000", T0, mark="150")
    fake.set_premium("SOLUSDT", "0.00010000", T0 + H, mark="150", index="150", ts_ms=T0)
    feed = perp_feed(fake)

    def done(c, h):
        return of(FundingRate, c.events) and of(MarkPrice, c.events) and fake.count("/fapi/v1/fundingRate") >= 4

    collected, health = asyncio.run(run_feed(feed, done))
    assert health.errors == {kind: 1} and text in health.last_error
    assert feed.status()["venues"]["binanceusdm"]["retries"] == reconnects and health.state != "failed"
    assert of(FundingRate, collected.events) == [
        FundingRate(T0 * 1_000_000, "binanceusdm:SOL-PERP", 0.0001, 8 * 3600, None, 150.0)
    ]
    assert {(m.mark, m.oracle) for m in of(MarkPrice, collected.events)} == {(150.0, 150.0)}


def test_a_slow_answer_is_a_timeout(fake: FakeBinance) -> None:
    fake.slow_s = 0.5
    collected, health, stage = run_with_failure(fake, Failure("slow", path="/api/v3/depth"), request_timeout_s=0.2)
    assert health.errors == {"timeout": 1}
    assert "RequestTimeout" in health.last_error and "fetch_order_book SOL/USDT" in health.last_error
    assert stage["retries"] == 1 and stage["state"] == "connected"
    time.sleep(fake.slow_s)  # let the abandoned answer finish before the next test resets the fake


def test_a_rejected_request_is_recorded_and_the_poll_carries_on(fake: FakeBinance) -> None:
    collected, health, stage = run_with_failure(fake, Failure("rejected", path="/api/v3/aggTrades"))
    assert health.errors == {"rejected": 1}
    assert "Not all sent parameters were read" in health.last_error
    assert stage["retries"] == 0 and stage["state"] == "connected"  # the poll went on


def test_invalid_symbol_from_the_venue_stops_the_feed(fake: FakeBinance) -> None:
    collected, health = run_with_failure_until_stopped(fake, Failure("bad-symbol"))
    assert health.state == "failed"
    assert health.errors == {"config": 1}
    assert "BadSymbol" in health.last_error and "Invalid symbol." in health.last_error
    assert health.reconnects == 0


def run_with_failure_until_stopped(fake: FakeBinance, failure: Failure, **updates):
    fake.script.append(failure)
    feed = make_feed(fake, **updates)
    return asyncio.run(run_feed(feed, lambda c, h: h.state == "failed"))


def test_a_listing_the_exchange_does_not_have_stops_the_feed(fake: FakeBinance) -> None:
    btc = fake.spot_symbols.pop("BTCUSDT")
    try:
        feed = make_feed(fake, instruments=["SOL-USDT", "BTC-USDT"])
        collected, health = asyncio.run(run_feed(feed, lambda c, h: h.state == "failed"))
    finally:
        fake.spot_symbols["BTCUSDT"] = btc
    assert health.errors == {"config": 1}
    assert "binance:BTC-USDT" in health.last_error and "'BTCUSDT'" in health.last_error
    assert collected.events == []


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"venues": ["nosuch"]}, "unknown venue 'nosuch'"),
        ({"venues": ["drift"]}, "'drift' is a perp_dex venue, not cex"),
        ({"instruments": ["ETH-USDT"]}, "unknown instrument 'ETH-USDT'"),
        ({"instruments": ["SOL-PERP"]}, "'SOL-PERP' is not listed on any of binance"),
    ],
)
def test_bad_settings_are_refused_at_construction(updates, message) -> None:
    settings = CexFeedConfig(venues=["binance"]).model_copy(update=updates)
    with pytest.raises(FeedConfigError, match=message):
        CexFeed(CONFIG, settings)


def test_url_overrides_must_name_ccxt_apis() -> None:
    with pytest.raises(FeedConfigError, match=r"url_overrides.binance: spot not in ccxt binance urls\['api'\]"):
        CexFeed(CONFIG, CexFeedConfig(venues=["binance"]), url_overrides={"binance": {"spot": "http://x"}})


def test_one_failing_exchange_degrades_only_its_own_venue(fake: FakeBinance) -> None:
    """Two exchanges, each behind its own fake server: while binance answers 503 (or times
    out) to every request, binanceusdm keeps publishing; when binance is back, so are its
    books."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    failing = asyncio.run_coroutine_threadsafe(FakeBinance().start(free_port()), loop).result()
    try:
        failing.set_book(SPOT, "SOLUSDT", [("150.10", "1")], [("150.20", "1")], 1)
        failing.script.extend(Failure("503") for _ in range(6))
        failing.script.extend(Failure("slow") for _ in range(2))
        failing.slow_s = 0.4
        fake.set_book(USDM, "SOLUSDT", [("150.05", "1")], [("150.06", "1")], 7)
        fake.set_premium("SOLUSDT", "0.00010000", T0 + H, mark="150", index="150", ts_ms=T0)
        fake.add_settlement("SOLUSDT", "0.00010000", T0, mark="150")
        settings = CexFeedConfig(enabled=True, venues=["binance", "binanceusdm"], instruments=["SOL-USDT", "SOL-PERP"],
                                 poll_interval_s=0.05, backoff=FAST, request_timeout_s=0.2, funding_interval_s=60)
        feed = CexFeed(
            CONFIG,
            settings,
            url_overrides={"binance": failing.api_urls(), "binanceusdm": fake.api_urls()},
            exchange_config={v: {"rateLimit": 1, "timeout_on_exit": 0} for v in settings.venues},
        )
        seen: dict = {}

        def done(c, h):
            books = of(L2Book, c.events)
            perp = [b for b in books if b.instrument == "binanceusdm:SOL-PERP"]
            spot = [b for b in books if b.instrument == "binance:SOL-USDT"]
            if not spot and len(perp) >= 5 and "during" not in seen:
                seen["during"] = (len(perp), dict(feed.status()["venues"]["binance"]))
            return "during" in seen and len(spot) >= 2

        collected, health = asyncio.run(run_feed(feed, done, timeout_s=20))
        perp_books, (during_perp, binance_during) = of(L2Book, collected.events), seen["during"]
        assert during_perp >= 5  # the healthy venue published all the while
        assert binance_during["state"] == "retrying" and binance_during["retries"] >= 1
        assert "unavailable" in binance_during["last_error"] or "timeout" in binance_during["last_error"]
        assert health.errors.get("unavailable", 0) == 6 and health.errors.get("timeout", 0) == 2
        assert health.reconnects == 0  # the feed's session never ended
        assert feed.status()["venues"]["binance"]["state"] == "ok"
        assert feed.status()["venues"]["binanceusdm"]["retries"] == 0
        assert any(b.instrument == "binance:SOL-USDT" for b in perp_books)
    finally:
        asyncio.run_coroutine_threadsafe(failing.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
