"""The Raydium feed against a fake API v3 on 127.0.0.1 (tests/fakes/raydium.py): pool state is
mapped to base/quote by mint address, the derived quote follows the documented rule, and each
failure ends in the promised outcome (session retried with Retry-After or backoff, a
recorded-and-skipped rejection, or a 'failed' feed naming the bad pool)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from pathlib import Path

import pytest

from actors.feeds.errors import FeedConfigError
from actors.feeds.raydium import SIZE_FRACTION_OF_RESERVE, RaydiumFeed
from cluster.config import BotmainConfig, load_config
from cluster.config.models import BackoffConfig, VenuesConfig
from cluster.domain import Quote
from cluster.events import PoolState
from tests.conftest import free_port
from tests.fakes.raydium import JUP, SOL_USDC_POOL, USDC, WSOL, FakeRaydium, pool_object
from tests.feed_harness import run_feed

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
JUP_USDC_POOL = "JUPpooL1111111111111111111111111111111111111"


@pytest.fixture(scope="module")
def config() -> BotmainConfig:
    """The shipped configuration plus JUP-USDC, listed on raydium only."""
    return with_instrument(
        load_config(CONFIGS),
        {
            "symbol": "JUP-USDC",
            "kind": "spot",
            "base": "JUP",
            "quote": "USDC",
            "listings": {
                "raydium": {"venue_symbol": "JUP-USDC", "base_mint": JUP, "quote_mint": USDC, "pool_id": JUP_USDC_POOL}
            },
        },
    )


def with_instrument(config: BotmainConfig, instrument: dict) -> BotmainConfig:
    venues = config.venues.model_dump(mode="json")
    venues["instruments"] = [i for i in venues["instruments"] if i["symbol"] != instrument["symbol"]] + [instrument]
    return dataclasses.replace(config, venues=VenuesConfig.model_validate(venues))


def sol_pool() -> dict:
    return pool_object(SOL_USDC_POOL, WSOL, USDC, 100_000.0, 15_000_000.0, 150.0, 0.0025, 30_000_000.0)


def jup_pool_quote_first() -> dict:
    """mintA is the quote (USDC): the API's price is JUP per USDC."""
    return pool_object(JUP_USDC_POOL, USDC, JUP, 400_000.0, 500_000.0, 1.25, 0.003, 800_000.0)


def make_fake(**kw) -> FakeRaydium:
    return FakeRaydium(
        pools={SOL_USDC_POOL: sol_pool(), JUP_USDC_POOL: jup_pool_quote_first()},
        prices={WSOL: "151.23", USDC: "0.9998", JUP: "0.81"},
        **kw,
    )


def make_feed(config: BotmainConfig, fake: FakeRaydium, **update) -> RaydiumFeed:
    settings = config.market_data.feeds.raydium.model_copy(
        update={
            "api_url": fake.api_url,
            "instruments": ["SOL-USDC"],
            "poll_interval_s": 0.05,
            "request_timeout_s": 0.5,
            "backoff": BackoffConfig(initial_s=0.05, max_s=0.2),
            **update,
        }
    )
    return RaydiumFeed(config, settings)


async def with_fake(fake: FakeRaydium, body):
    await fake.start(free_port())
    try:
        return await body()
    finally:
        await fake.stop()


def of(sink, cls, instrument: str | None = None) -> list:
    return [e for e in sink.events if isinstance(e, cls) and (instrument is None or e.instrument == instrument)]


# --- conversions ------------------------------------------------------------------------


def test_pool_state_derived_quote_and_usd_prices(config):
    fake = make_fake()

    async def body():
        feed = make_feed(config, fake)
        sink, health = await run_feed(feed, lambda s, h: len(of(s, Quote)) >= 1 and feed.usd_prices)
        return feed, sink, health

    feed, sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {}
    state = of(sink, PoolState)[0]
    assert (state.instrument, state.pool_id, state.price, state.base_reserve, state.quote_reserve) == (
        "raydium:SOL-USDC", SOL_USDC_POOL, 150.0, 100_000.0, 15_000_000.0
    )
    assert (state.fee_rate, state.tvl_usd) == (0.0025, 30_000_000.0)
    quote = of(sink, Quote)[0]
    assert quote.instrument == "raydium:SOL-USDC" and quote.ts_ns == state.ts_ns
    assert quote.bid == pytest.approx(149.625, rel=1e-15) and quote.ask == pytest.approx(150.375, rel=1e-15)
    assert quote.bid_size == quote.ask_size == pytest.approx(50.0, rel=1e-15)  # 0.0005 of 100,000 SOL
    # USD prices are kept for status only, as floats.
    assert feed.status()["usd_prices"] == {WSOL: 151.23, USDC: 0.9998}
    assert {type(e) for e in sink.events} == {PoolState, Quote}  # USD prices are not published
    pools_q = next(r.query for r in fake.requests if r.path == "/pools/info/ids")
    mints_q = next(r.query for r in fake.requests if r.path == "/mint/price")
    assert pools_q == {"ids": SOL_USDC_POOL} and mints_q == {"mints": f"{USDC},{WSOL}"}


def test_pool_whose_mint_a_is_the_quote_is_inverted_and_reserves_swapped(config):
    fake = make_fake()

    async def body():
        feed = make_feed(config, fake, instruments=["SOL-USDC", "JUP-USDC"])
        return await run_feed(feed, lambda s, h: len(of(s, Quote, "raydium:JUP-USDC")) >= 1)

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {}
    assert fake.requests[0].query == {"ids": f"{SOL_USDC_POOL},{JUP_USDC_POOL}"}  # one request for both
    state = of(sink, PoolState, "raydium:JUP-USDC")[0]
    assert state.price == pytest.approx(0.8, rel=1e-15)  # 1 / 1.25 JUP per USDC
    assert (state.base_reserve, state.quote_reserve, state.fee_rate) == (500_000.0, 400_000.0, 0.003)
    quote = of(sink, Quote, "raydium:JUP-USDC")[0]
    assert quote.bid == pytest.approx(0.8 * 0.997, rel=1e-15) and quote.ask == pytest.approx(0.8 * 1.003, rel=1e-15)
    assert quote.bid_size == pytest.approx(250.0, rel=1e-15)


def test_derived_size_moves_a_constant_product_pool_by_a_tenth_of_a_percent():
    """The documented reason for SIZE_FRACTION_OF_RESERVE: selling dx into x*y=k takes the
    price from y/x to (x/(x+dx))^2 * y/x."""
    x, y = 100_000.0, 15_000_000.0
    dx = x * SIZE_FRACTION_OF_RESERVE
    after = (x * y / (x + dx)) / (x + dx)
    assert 1 - after / (y / x) == pytest.approx(0.001, rel=1e-3)


# --- rejections -------------------------------------------------------------------------


def test_known_pool_turning_null_is_recorded_while_other_pools_publish(config):
    fake = make_fake()

    def until(sink, health):
        if of(sink, PoolState, "raydium:SOL-USDC"):
            fake.null_pools.add(SOL_USDC_POOL)  # seen once: now the API forgets it
        return health.errors.get("pool_missing", 0) >= 2 and len(of(sink, PoolState, "raydium:JUP-USDC")) >= 3

    async def body():
        return await run_feed(make_feed(config, fake, instruments=["SOL-USDC", "JUP-USDC"]), until)

    sink, health = asyncio.run(with_fake(fake, body))
    assert set(health.errors) == {"pool_missing"} and health.reconnects == 0
    assert f"pool {SOL_USDC_POOL} missing" in health.last_error
    assert len(of(sink, PoolState, "raydium:SOL-USDC")) < len(of(sink, PoolState, "raydium:JUP-USDC"))


def test_pools_success_false_ends_the_session_then_data_flows_again(config):
    fake = make_fake(script=deque([("/pools/info/ids", "reject:ROUTE_NOT_FOUND")]))

    async def body():
        return await run_feed(make_feed(config, fake), lambda s, h: h.state == "connected" and of(s, Quote))

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {"route_not_found": 1} and health.reconnects == 1
    assert health.last_error == "route_not_found: raydium /pools/info/ids: ROUTE_NOT_FOUND"
    assert fake.requests[0].path == fake.requests[1].path == "/pools/info/ids"  # retried, prices not asked


def test_mint_price_success_false_is_recorded_and_pools_still_publish(config):
    fake = make_fake(script=deque([("/mint/price", "reject:ROUTE_NOT_FOUND")]))

    async def body():
        feed = make_feed(config, fake)
        sink, health = await run_feed(feed, lambda s, h: len(of(s, PoolState)) >= 2 and feed.usd_prices)
        return feed, sink, health

    feed, sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {"route_not_found": 1} and health.reconnects == 0
    assert "raydium /mint/price: ROUTE_NOT_FOUND" in health.last_error
    assert [r.path for r in fake.requests[:3]] == ["/pools/info/ids", "/mint/price", "/pools/info/ids"]
    assert feed.status()["usd_prices"][WSOL] == 151.23  # the next poll's prices arrived


def test_mint_without_a_price_is_left_out_of_status(config):
    fake = make_fake()
    fake.prices[USDC] = None

    async def body():
        feed = make_feed(config, fake)
        await run_feed(feed, lambda s, h: bool(feed.usd_prices))
        return feed

    feed = asyncio.run(with_fake(fake, body))
    assert feed.status()["usd_prices"] == {WSOL: 151.23}


def test_unreadable_mint_price_is_recorded_and_pools_still_publish(config):
    fake = make_fake()
    fake.prices[WSOL] = "n/a"

    async def body():
        return await run_feed(make_feed(config, fake), lambda s, h: h.errors.get("malformed", 0) >= 2)

    sink, health = asyncio.run(with_fake(fake, body))
    assert set(health.errors) == {"malformed"} and health.reconnects == 0
    assert f"price of {WSOL} is not a number: 'n/a'" in health.last_error
    assert len(of(sink, PoolState)) >= 2


# --- session-ending failures ------------------------------------------------------------


def _recovered(fake: FakeRaydium):
    """Until the scripted failure has happened and a later session published a quote (the
    harness stops the feed afterwards, so the state is checked here, while it runs)."""
    return lambda s, h: h.reconnects >= 1 and h.state == "connected" and of(s, Quote) and not fake.script


def _gap_after_failure(fake: FakeRaydium) -> float:
    failed = next(i for i, r in enumerate(fake.requests) if r.status != 200)
    return fake.requests[failed + 1].t - fake.requests[failed].t


def test_429_with_retry_after_waits_what_the_venue_asked(config):
    fake = make_fake(script=deque([("*", "429")]), retry_after="1")

    async def body():
        return await run_feed(make_feed(config, fake), _recovered(fake))

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {"rate_limited": 1} and health.reconnects == 1
    assert "Retry-After 1s" in health.last_error
    assert 0.95 <= _gap_after_failure(fake) < 1.5  # not the 0.05 s backoff


def test_429_without_retry_after_backs_off(config):
    fake = make_fake(script=deque([("*", "429-bare")]))

    async def body():
        return await run_feed(make_feed(config, fake), _recovered(fake))

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {"rate_limited": 1} and "no Retry-After" in health.last_error
    assert 0.045 <= _gap_after_failure(fake) < 0.5  # the configured initial backoff, 0.05 s


@pytest.mark.parametrize(
    "path, mode, kind, text",
    [
        ("/pools/info/ids", "500", "unavailable", "HTTP 500"),
        ("/pools/info/ids", "503", "unavailable", "HTTP 503"),
        ("/pools/info/ids", "slow", "timeout", "no answer within 0.3s"),
        ("/pools/info/ids", "malformed", "malformed", "not JSON"),
        ("/mint/price", "503", "unavailable", "raydium /mint/price: HTTP 503"),
        ("/mint/price", "malformed", "malformed", "raydium /mint/price: body is not JSON"),
    ],
)
def test_transport_failures_end_the_session_then_data_flows_again(config, path, mode, kind, text):
    fake = make_fake(script=deque([(path, mode)]), slow_s=1.0)

    async def body():
        return await run_feed(make_feed(config, fake, request_timeout_s=0.3), _recovered(fake))

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {kind: 1} and health.reconnects == 1
    assert text in health.last_error


# --- configuration ----------------------------------------------------------------------


def test_never_seen_null_pool_fails_the_feed_naming_the_pool(config):
    fake = make_fake()
    fake.null_pools.add(JUP_USDC_POOL)

    async def body():
        return await run_feed(make_feed(config, fake, instruments=["SOL-USDC", "JUP-USDC"]), lambda s, h: h.state == "failed")

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.state == "failed" and health.errors == {"config": 1}
    assert f"raydium:JUP-USDC: pool {JUP_USDC_POOL} is unknown to the Raydium API" in health.last_error
    assert len(fake.requests) == 1  # not retried


def test_pool_of_other_mints_fails_the_feed(config):
    fake = make_fake()
    fake.pools[SOL_USDC_POOL] = pool_object(SOL_USDC_POOL, JUP, USDC, 1.0, 1.0, 1.0, 0.0025, 2.0)

    async def body():
        return await run_feed(make_feed(config, fake), lambda s, h: h.state == "failed")

    sink, health = asyncio.run(with_fake(fake, body))
    assert health.errors == {"config": 1}
    assert f"pool {SOL_USDC_POOL} trades {JUP}/{USDC}, not the listing's base_mint {WSOL}" in health.last_error


@pytest.mark.parametrize(
    "symbol, message",
    [
        ("DOGE-USDC", r"feeds.raydium.instruments\[1\]: 'DOGE-USDC' is not an instrument in venues.yaml"),
        ("SOL-USDT", r"feeds.raydium.instruments\[1\]: 'SOL-USDT' is not listed on raydium in venues.yaml"),
        ("BTC-PERP", r"'BTC-PERP' is a perp market"),
    ],
)
def test_instruments_not_on_raydium_are_refused_at_construction(config, symbol, message):
    with pytest.raises(FeedConfigError, match=message):
        make_feed(config, make_fake(), instruments=["SOL-USDC", symbol])


def test_listing_without_pool_id_is_refused_at_construction(config):
    config = with_instrument(
        config,
        {
            "symbol": "JUP-USDC",
            "kind": "spot",
            "base": "JUP",
            "quote": "USDC",
            "listings": {"raydium": {"venue_symbol": "JUP-USDC", "base_mint": JUP, "quote_mint": USDC}},
        },
    )
    with pytest.raises(FeedConfigError, match="listing raydium:JUP-USDC needs pool_id"):
        make_feed(config, make_fake(), instruments=["JUP-USDC"])
