"""The Jupiter feed against a fake quote API on 127.0.0.1 (tests/fakes/jupiter.py): raw amounts
become human prices exactly in both route-plan schemas, and every failure ends in the outcome
the adapter promises (a counted per-size rejection, a retry that honours Retry-After, or a
'failed' feed with a clear message)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from pathlib import Path

import pytest

from actors.feeds.errors import FeedConfigError
from actors.feeds.jupiter import JupiterFeed
from cluster.config import BotmainConfig, load_config
from cluster.config.models import BackoffConfig, VenuesConfig
from cluster.domain import Quote, Side
from cluster.events import SwapQuote
from tests.conftest import free_port
from tests.fakes.jupiter import USDC, WSOL, FakeJupiter
from tests.feed_harness import run_feed

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SOL = 10**9


@pytest.fixture(scope="module")
def config() -> BotmainConfig:
    return load_config(CONFIGS)


@pytest.fixture(autouse=True)
def _no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOTMAIN_JUPITER_API_KEY", raising=False)
    monkeypatch.delenv("BOTMAIN_JUPITER_API_KEY_FILE", raising=False)


def make_feed(config: BotmainConfig, fake: FakeJupiter, **update) -> JupiterFeed:
    settings = config.market_data.feeds.jupiter.model_copy(
        update={
            "base_url": fake.base_url,
            "instruments": ["SOL-USDC"],
            "sizes": [1.0, 10.0, 100.0],
            "poll_interval_s": 0.05,
            "request_timeout_s": 0.5,
            "backoff": BackoffConfig(initial_s=0.05, max_s=0.2),
            **update,
        }
    )
    return JupiterFeed(config, settings)


def swaps(sink) -> list[SwapQuote]:
    return [e for e in sink.events if isinstance(e, SwapQuote)]


def quotes(sink) -> list[Quote]:
    return [e for e in sink.events if isinstance(e, Quote)]


async def with_fake(fake: FakeJupiter, body):
    await fake.start(free_port())
    try:
        return await body()
    finally:
        await fake.stop()


def first_poll(sink) -> dict[tuple[Side, float], SwapQuote]:
    out: dict[tuple[Side, float], SwapQuote] = {}
    for q in swaps(sink):
        out.setdefault((q.side, q.size), q)
    return out


# --- conversions ------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["old", "new"])
def test_raw_amounts_become_exact_prices_in_both_schemas(config, schema):
    fake = FakeJupiter(schema=schema, labels=("Raydium CLMM", "Whirlpool"))

    async def body():
        feed = make_feed(config, fake)
        return await run_feed(feed, lambda s, h: len(quotes(s)) >= 1)

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {}
    # The fake answers in the schema asked for; the feed read both.
    step = fake.responses[0]["routePlan"][0]
    assert ("feeAmount" in step["swapInfo"]) == (schema == "old")
    assert (step["percent"], step.get("bps")) == ((100, None) if schema == "old" else (None, 10_000))

    got = first_poll(sink)
    assert set(got) == {(side, size) for side in Side for size in (1.0, 10.0, 100.0)}
    # Values worked out by hand from the fake's pool (10,000 SOL / 1,500,000 USDC, 25 bps):
    # sell 1 SOL -> 149610076 raw USDC (6 decimals); buy 100 SOL <- 15189488875 raw USDC.
    assert got[(Side.SELL, 1.0)].price == 149.610076
    assert got[(Side.BUY, 1.0)].price == 150.39098
    assert got[(Side.SELL, 10.0)].price == pytest.approx(149.4758977, rel=1e-15)
    assert got[(Side.BUY, 100.0)].price == pytest.approx(151.89488875, rel=1e-15)
    # Every quote: quote raw / 1e6 per base raw / 1e9, from the raw strings the fake sent.

    def base_amount(r: dict) -> int:
        return int(r["inAmount"] if r["swapMode"] == "ExactIn" else r["outAmount"])

    by_request = {(r["swapMode"], base_amount(r)): r for r in fake.responses}
    for (side, size), q in got.items():
        mode = "ExactIn" if side is Side.SELL else "ExactOut"
        raw = by_request[(mode, int(size * SOL))]
        base_raw, quote_raw = (raw["inAmount"], raw["outAmount"]) if side is Side.SELL else (raw["outAmount"], raw["inAmount"])
        assert q.price == pytest.approx((int(quote_raw) / 1e6) / (int(base_raw) / 1e9), rel=1e-15)
        assert q.price_impact == float(raw["priceImpactPct"])
        assert q.route == "Raydium CLMM>Whirlpool"
        assert q.instrument == "jupiter:SOL-USDC"
    # Impact and the spread between the sides grow with size.
    for side in Side:
        impacts = [got[(side, size)].price_impact for size in (1.0, 10.0, 100.0)]
        assert impacts == sorted(impacts) and impacts[0] < impacts[-1]
    sells = [got[(Side.SELL, s)].price for s in (1.0, 10.0, 100.0)]
    buys = [got[(Side.BUY, s)].price for s in (1.0, 10.0, 100.0)]
    assert sells == sorted(sells, reverse=True) and buys == sorted(buys)

    top = quotes(sink)[0]
    assert (top.instrument, top.bid, top.bid_size, top.ask, top.ask_size) == (
        "jupiter:SOL-USDC", 149.610076, 1.0, 150.39098, 1.0
    )


def test_requests_ask_exact_in_to_sell_and_exact_out_to_buy(config):
    fake = FakeJupiter()

    async def body():
        return await run_feed(make_feed(config, fake, sizes=[2.5]), lambda s, h: len(quotes(s)) >= 1)

    asyncio.run(with_fake(fake, body))
    sell, buy = fake.requests[0].query, fake.requests[1].query
    assert sell == {"inputMint": WSOL, "outputMint": USDC, "amount": "2500000000", "swapMode": "ExactIn", "slippageBps": "50"}
    assert buy == {"inputMint": USDC, "outputMint": WSOL, "amount": "2500000000", "swapMode": "ExactOut", "slippageBps": "50"}
    assert "x-api-key" not in {k.lower() for k in fake.requests[0].headers}


def test_api_key_is_sent_and_a_refused_key_fails_the_feed(config, monkeypatch):
    fake = FakeJupiter(api_key="k-123")
    monkeypatch.setenv("BOTMAIN_JUPITER_API_KEY", "k-123")

    async def good():
        feed = make_feed(config, fake)
        sink, health = await run_feed(feed, lambda s, h: len(quotes(s)) >= 1)
        return feed, sink, health

    feed, sink, health = asyncio.run(with_fake(fake, good))
    assert fake.requests[0].headers["x-api-key"] == "k-123"
    assert health.errors == {} and feed.status()["api_key"] is True

    fake = FakeJupiter(api_key="k-123")
    monkeypatch.setenv("BOTMAIN_JUPITER_API_KEY", "wrong")

    async def refused():
        return await run_feed(make_feed(config, fake), lambda s, h: h.state == "failed")

    sink, health = asyncio.run(with_fake(fake, refused))
    assert health.state == "failed" and health.errors == {"config": 1}
    assert "HTTP 401" in health.last_error and "BOTMAIN_JUPITER_API_KEY" in health.last_error
    assert len(fake.requests) == 1  # not retried
    assert sink.events == []


# --- failures ---------------------------------------------------------------------------


def test_no_route_for_one_size_is_counted_and_other_sizes_publish(config):
    fake = FakeJupiter(no_route_amounts={100 * SOL})

    async def body():
        return await run_feed(make_feed(config, fake), lambda s, h: len(quotes(s)) >= 2 and h.state == "connected")

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.reconnects == 0
    assert set(health.errors) == {"could_not_find_any_route"}
    assert health.errors["could_not_find_any_route"] >= 4  # both sides of size 100, two polls
    assert "Could not find any route" in health.last_error
    assert {q.size for q in swaps(sink)} == {1.0, 10.0}
    assert len({(q.side, q.size) for q in swaps(sink)}) == 4


def test_no_route_for_the_smallest_size_publishes_no_top_of_book(config):
    fake = FakeJupiter(no_route_amounts={1 * SOL})

    async def body():
        return await run_feed(make_feed(config, fake), lambda s, h: len(swaps(s)) >= 8)

    sink, health = asyncio.run(with_fake(fake, body))
    assert quotes(sink) == [] and {q.size for q in swaps(sink)} == {10.0, 100.0}
    assert health.errors["could_not_find_any_route"] >= 2 and health.reconnects == 0


def _recovered(fake: FakeJupiter):
    """Until a session after the scripted failure is connected and has produced a top of book
    (the harness stops the feed afterwards, so the state is checked here, while it runs)."""
    return lambda s, h: h.reconnects >= 1 and h.state == "connected" and len(quotes(s)) >= 1 and not fake.script


def _gap_after_failure(fake: FakeJupiter) -> float:
    failed = next(i for i, r in enumerate(fake.requests) if r.status != 200)
    return fake.requests[failed + 1].t - fake.requests[failed].t


def test_429_with_retry_after_waits_what_the_venue_asked(config):
    fake = FakeJupiter(script=deque(["429"]), retry_after="1")

    async def body():
        return await run_feed(make_feed(config, fake), _recovered(fake))

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {"rate_limited": 1} and health.reconnects == 1
    assert "Retry-After 1s" in health.last_error
    assert 0.95 <= _gap_after_failure(fake) < 1.5  # not the 0.05 s backoff
    assert quotes(sink)


def test_429_without_retry_after_backs_off(config):
    fake = FakeJupiter(script=deque(["429-bare"]))

    async def body():
        return await run_feed(make_feed(config, fake), _recovered(fake))

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {"rate_limited": 1} and "no Retry-After" in health.last_error
    assert 0.045 <= _gap_after_failure(fake) < 0.5  # the configured initial backoff, 0.05 s
    assert quotes(sink)


@pytest.mark.parametrize(
    "mode, kind, text",
    [
        ("500", "unavailable", "HTTP 500"),
        ("503", "unavailable", "HTTP 503"),
        ("slow", "timeout", "no answer within 0.3s"),
        ("malformed", "malformed", "not JSON"),
        ("shapeless", "malformed", "inAmount should be a positive integer string, got None"),
    ],
)
def test_session_ending_failures_retry_then_data_flows_again(config, mode, kind, text):
    fake = FakeJupiter(script=deque([mode]), slow_s=1.0)

    async def body():
        return await run_feed(make_feed(config, fake, request_timeout_s=0.3), _recovered(fake))

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {kind: 1} and health.reconnects == 1
    assert text in health.last_error
    assert len(swaps(sink)) >= 6 and quotes(sink)  # the whole first poll after the retry


# --- configuration ----------------------------------------------------------------------


def _with_instrument(config: BotmainConfig, instrument: dict) -> BotmainConfig:
    venues = config.venues.model_dump(mode="json")
    venues["instruments"].append(instrument)
    return dataclasses.replace(config, venues=VenuesConfig.model_validate(venues))


def test_unknown_mint_fails_the_feed_with_a_clear_message(config):
    odd_mint = "EKpQGSJtjMFqKZ9KQanSqYXRcF8fBopzLHYxdM65zcjm"
    config = _with_instrument(
        config,
        {
            "symbol": "WIF-USDC",
            "kind": "spot",
            "base": "WIF",
            "quote": "USDC",
            "listings": {"jupiter": {"venue_symbol": "WIF-USDC", "base_mint": odd_mint, "quote_mint": USDC}},
        },
    )
    fake = FakeJupiter()

    async def body():
        feed = make_feed(config, fake, instruments=["SOL-USDC", "WIF-USDC"])
        return await run_feed(feed, lambda s, h: h.state == "failed")

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.state == "failed" and health.errors == {"config": 1}
    assert f"jupiter:WIF-USDC: base_mint {odd_mint} is not a known mint" in health.last_error
    assert fake.requests == [] and sink.events == []


@pytest.mark.parametrize(
    "symbol, message",
    [
        ("DOGE-USDC", "feeds.jupiter.instruments[1]: 'DOGE-USDC' is not an instrument in venues.yaml"),
        ("SOL-USDT", "feeds.jupiter.instruments[1]: 'SOL-USDT' is not listed on jupiter in venues.yaml"),
        ("SOL-PERP", "'SOL-PERP' is a perp market"),
    ],
)
def test_instruments_not_quotable_on_jupiter_are_refused_at_construction(config, symbol, message):
    fake = FakeJupiter()  # never started: construction fails first
    with pytest.raises(FeedConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_feed(config, fake, instruments=["SOL-USDC", symbol])
