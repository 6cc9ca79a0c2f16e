"""The Drift feed against a local DLOB server (tests/fakes/drift_dlob.py) and, for funding,
real driftpy ``PerpMarketAccount`` objects handed over by an injected chain reader (decoding
accounts needs real account bytes, so the chain read itself is only run against a dead RPC).

Each failure mode of the DLOB server ends in an asserted outcome: the error counted under
its kind, the wait the runner chose (Retry-After or backoff) and good data flowing again."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import typing
from pathlib import Path

import pytest
from driftpy.addresses import get_perp_market_public_key
from driftpy.constants.config import DRIFT_PROGRAM_ID
from driftpy.constants.perp_markets import mainnet_perp_market_configs
from driftpy.types import (
    AMM,
    ContractTier,
    ContractType,
    HistoricalOracleData,
    InsuranceClaim,
    MarketStatus,
    PerpMarketAccount,
    PoolBalance,
)

from actors.feeds.drift import DriftFeed, DriftMarket, events_from_l2, funding_from_perp_market
from actors.feeds.errors import FeedConfigError, RateLimited
from cluster.config import load_config
from cluster.config.models import BackoffConfig, DriftFeedConfig, InstrumentConfig, ListingConfig
from cluster.domain import FundingRate, L2Book, MarketKind, Quote
from cluster.events import MarkPrice
from tests.conftest import free_port
from tests.fakes.drift_dlob import FakeDlobServer
from tests.feed_harness import run_feed

ROOT = Path(__file__).resolve().parents[1]
SOL = "drift:SOL-PERP"
BTC = "drift:BTC-PERP"
CONFIG = load_config(ROOT / "configs")


# --- real driftpy accounts ----------------------------------------------------------------


def _dataclass(cls, **values):
    """A driftpy account dataclass: the given fields, every other int 0 and bool False
    (fields of any other type must be given, so nothing is silently made up)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = values.pop(f.name)
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        elif hints[f.name] is int:
            kwargs[f.name] = 0
        elif hints[f.name] is bool:
            kwargs[f.name] = False
        else:
            raise TypeError(f"{cls.__name__}.{f.name} ({hints[f.name]}) must be given")
    if values:
        raise TypeError(f"{cls.__name__} has no fields {sorted(values)}")
    return cls(**kwargs)


def perp_market(
    index: int,
    *,
    last_funding_rate: int,
    last_funding_oracle_twap: int,
    last_funding_rate_ts: int,
    last_mark_price_twap: int,
    last_oracle_price_twap: int,
    funding_period: int = 3600,
) -> PerpMarketAccount:
    """A mainnet perp market account as driftpy decodes it, with the funding fields set."""
    cfg = next(c for c in mainnet_perp_market_configs if c.market_index == index)
    amm = _dataclass(
        AMM,
        oracle=cfg.oracle,
        oracle_source=cfg.oracle_source,
        historical_oracle_data=_dataclass(
            HistoricalOracleData, last_oracle_price=last_oracle_price_twap, last_oracle_price_twap=last_oracle_price_twap
        ),
        fee_pool=_dataclass(PoolBalance),
        last_funding_rate=last_funding_rate,
        last_funding_rate_long=last_funding_rate,
        last_funding_rate_short=last_funding_rate,
        last_funding_oracle_twap=last_funding_oracle_twap,
        last_funding_rate_ts=last_funding_rate_ts,
        last_mark_price_twap=last_mark_price_twap,
        funding_period=funding_period,
        order_tick_size=100,
        order_step_size=10_000_000,
    )
    return _dataclass(
        PerpMarketAccount,
        pubkey=get_perp_market_public_key(DRIFT_PROGRAM_ID, index),
        amm=amm,
        pnl_pool=_dataclass(PoolBalance),
        name=list(cfg.symbol.encode().ljust(32)),
        insurance_claim=_dataclass(InsuranceClaim),
        status=MarketStatus.Active(),
        contract_type=ContractType.Perpetual(),
        contract_tier=ContractTier.A(),
        market_index=index,
    )


class AccountsOnHand:
    """A chain reader that hands over the accounts it holds (the feed's injection point), or
    raises ``error`` while one is set, recording when it was read and how often closed."""

    def __init__(self, accounts: dict[int, PerpMarketAccount]) -> None:
        self.accounts = accounts
        self.error: Exception | None = None
        self.read_at: list[tuple[float, bool]] = []  # (monotonic time, failed)
        self.closes = 0

    @property
    def reads(self) -> int:
        return len(self.read_at)

    async def read(self) -> dict[int, PerpMarketAccount]:
        self.read_at.append((time.monotonic(), self.error is not None))
        if self.error is not None:
            raise self.error
        return dict(self.accounts)

    async def close(self) -> None:
        self.closes += 1


def sol_account(ts: int = 1_717_200_000, rate: int = 1_234_567) -> PerpMarketAccount:
    return perp_market(
        0,
        last_funding_rate=rate,
        last_funding_oracle_twap=150_000_000,
        last_funding_rate_ts=ts,
        last_mark_price_twap=150_180_000,
        last_oracle_price_twap=150_050_000,
    )


def btc_account(ts: int = 1_717_200_000) -> PerpMarketAccount:
    return perp_market(
        1,
        last_funding_rate=-3_200_000_000,  # shorts pay $3.20 per BTC per hour
        last_funding_oracle_twap=64_000_000_000,
        last_funding_rate_ts=ts,
        last_mark_price_twap=63_990_000_000,
        last_oracle_price_twap=64_000_000_000,
    )


def accounts() -> dict[int, PerpMarketAccount]:
    return {0: sol_account(), 1: btc_account()}


# --- running the feed ---------------------------------------------------------------------


def settings(server: FakeDlobServer, **update) -> DriftFeedConfig:
    base = DriftFeedConfig(
        enabled=True,
        dlob_url=server.url,
        markets=["SOL-PERP", "BTC-PERP"],
        poll_interval_s=0.05,
        book_depth=20,
        request_timeout_s=0.5,
        flush_interval_ms=1,
    )
    return base.model_copy(update={"backoff": BackoffConfig(initial_s=0.05, max_s=0.2), **update})


def of(collected, cls, instrument: str | None = None) -> list:
    return [e for e in collected.events if isinstance(e, cls) and (instrument is None or e.instrument == instrument)]


def served_in_order(server: FakeDlobServer) -> list:
    return sorted(server.requests, key=lambda r: r.at)


async def with_server(body, server: FakeDlobServer | None = None):
    server = server or FakeDlobServer()
    await server.start(free_port())
    try:
        return await body(server)
    finally:
        await server.stop()


def failure_then_recovery(server: FakeDlobServer, mode: str, kind: str, times: int = 1):
    """An ``until`` that lets books flow, then makes the next ``times`` requests fail with
    ``mode``, and holds once ``kind`` was counted ``times`` and a SOL book served after the
    failure arrived."""
    state: dict = {}

    def until(collected, health) -> bool:
        books = of(collected, L2Book, SOL)
        if "slot" not in state:
            if books:
                state["slot"] = server.markets["SOL-PERP"].slot
                server.fail_next(mode, times)
            return False
        recovered = [b for b in books if b.seq > state["slot"] + (times if mode == "slow" else 0)]
        return health.errors.get(kind, 0) >= times and bool(recovered)

    return until


def first_failure_and_next(server: FakeDlobServer, status: int):
    ordered = served_in_order(server)
    i = next(i for i, r in enumerate(ordered) if r.status == status)
    return ordered[i], ordered[i + 1]


@pytest.fixture(autouse=True)
def _no_rpc_secret(monkeypatch):
    monkeypatch.delenv("BOTMAIN_SOLANA_RPC_URL", raising=False)
    monkeypatch.delenv("BOTMAIN_SOLANA_RPC_URL_FILE", raising=False)


# --- normal flow --------------------------------------------------------------------------


def test_books_quotes_marks_and_funding_are_converted_exactly():
    async def body(server):
        reader = AccountsOnHand(accounts())
        feed = DriftFeed(CONFIG, settings(server), chain_reader=reader)
        feed.funding_poll_s = 0.05

        def until(c, h):
            return all(len(of(c, cls, key)) >= 2 for cls in (L2Book, Quote, MarkPrice) for key in (SOL, BTC)) and len(
                of(c, FundingRate)
            ) == 2 and reader.reads >= 3

        collected, health = await run_feed(feed, until)
        return collected, health, feed, reader

    server = FakeDlobServer()
    collected, health, feed, reader = asyncio.run(with_server(body, server))

    assert health.state == "stopped" and health.errors == {} and health.reconnects == 0
    first = server.served(200, "SOL-PERP")[0]
    assert first.query == {"marketName": "SOL-PERP", "depth": "20", "includeVamm": "true", "includeOracle": "true"}

    book = of(collected, L2Book, SOL)[0]
    sent = first.body
    assert book.ts_ns == sent["ts"] * 1_000_000 and book.seq == sent["slot"]
    # integer strings in 1e6 / 1e9 become human units exactly (the nearest doubles)
    assert book.bids == ((150.123456, 2.5), (150.1, 10.0), (150.0, 125.0))
    assert book.asks == ((150.2, 1.75), (150.25, 8.0), (150.4, 60.0))

    quote = of(collected, Quote, SOL)[0]
    assert (quote.ts_ns, quote.seq) == (book.ts_ns, book.seq)
    assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == (150.123456, 2.5, 150.2, 1.75)
    mark = of(collected, MarkPrice, SOL)[0]
    assert mark.ts_ns == book.ts_ns
    assert mark.mark == (150.123456 + 150.2) / 2 and mark.oracle == 150.16

    btc_book = of(collected, L2Book, BTC)[0]
    assert btc_book.bids[0] == (64000.1, 0.15) and btc_book.asks[0] == (64001.5, 0.12)
    assert of(collected, MarkPrice, BTC)[0].oracle == 64000.8

    # funding: published once per settlement although the chain was read several times
    funding = {f.instrument: f for f in of(collected, FundingRate)}
    assert reader.reads >= 3 and len(of(collected, FundingRate)) == 2
    sol = funding[SOL]
    assert sol.ts_ns == 1_717_200_000 * 1_000_000_000 and sol.interval_s == 3600
    assert sol.rate == pytest.approx(1_234_567 / 1e9 / 150.0, rel=1e-12)
    assert (sol.oracle_price, sol.mark_price) == (150.0, 150.18)
    assert funding[BTC].rate == pytest.approx(-3.2 / 64_000.0, rel=1e-12)
    assert feed.status()["chain"] == "ok"
    assert reader.closes == 1  # released when the feed stopped
    assert feed.status()["last_funding_ts_ns"] == {SOL: sol.ts_ns, BTC: funding[BTC].ts_ns}


def test_a_new_settlement_is_published_and_an_unchanged_one_is_not():
    async def body(server):
        reader = AccountsOnHand(accounts())
        feed = DriftFeed(CONFIG, settings(server), chain_reader=reader)
        feed.funding_poll_s = 0.05
        settled = {}

        def until(c, h):
            if not settled and len(of(c, FundingRate)) == 2:
                settled["reads"] = reader.reads
                reader.accounts[0] = sol_account(ts=1_717_203_600, rate=-987_654)  # the next hour settles
            return bool(settled) and len(of(c, FundingRate, SOL)) >= 2 and reader.reads >= settled["reads"] + 3

        return await run_feed(feed, until)

    collected, health = asyncio.run(with_server(body))
    sol = of(collected, FundingRate, SOL)
    assert [f.ts_ns // 1_000_000_000 for f in sol] == [1_717_200_000, 1_717_203_600]
    assert sol[1].rate == pytest.approx(-987_654 / 1e9 / 150.0, rel=1e-12)
    assert len(of(collected, FundingRate, BTC)) == 1
    assert health.errors == {}


# --- funding formula ----------------------------------------------------------------------


def test_funding_is_the_rate_over_the_oracle_twap_not_the_raw_rate():
    """Drift's last_funding_rate is $ per SOL per hour in 1e9. At SOL ~$150, 1_234_567 is
    $0.001234567 per SOL, a fraction of 8.23e-6 of notional an hour (0.0008 %/h); reading it
    as /1e9 alone claims 0.12 %/h, 150 times too much (a 10 %/day carry that is not there)."""
    account = sol_account(rate=1_234_567)
    funding = funding_from_perp_market(SOL, account)

    naive = 1_234_567 / 1e9
    correct = 1_234_567 / 1e9 / (150_000_000 / 1e6)
    assert funding.rate == pytest.approx(correct, rel=1e-12)
    assert funding.rate == pytest.approx(8.230446666e-6, rel=1e-9)
    assert naive / funding.rate == pytest.approx(150.0, rel=1e-12)
    assert funding.hourly_rate == pytest.approx(correct, rel=1e-12)  # funding_period is an hour
    # what a $15,000 long (100 SOL) pays for the hour: $0.1234567, not $18.52
    assert 100 * 150.0 * funding.rate == pytest.approx(0.1234567, rel=1e-9)
    assert (funding.ts_ns, funding.interval_s) == (1_717_200_000_000_000_000, 3600)
    assert (funding.oracle_price, funding.mark_price) == (150.0, 150.18)


def test_funding_falls_back_to_the_oracle_twap_history_and_skips_unfunded_markets():
    older = perp_market(
        0,
        last_funding_rate=1_234_567,
        last_funding_oracle_twap=0,  # accounts from before the field existed
        last_funding_rate_ts=1_717_200_000,
        last_mark_price_twap=150_180_000,
        last_oracle_price_twap=150_050_000,
        funding_period=1800,
    )
    funding = funding_from_perp_market(SOL, older)
    assert funding.rate == pytest.approx(1_234_567 / 1e9 / 150.05, rel=1e-12)
    assert funding.oracle_price == 150.05 and funding.interval_s == 1800
    assert funding.hourly_rate == pytest.approx(2 * funding.rate)

    never = perp_market(
        0,
        last_funding_rate=0,
        last_funding_oracle_twap=0,
        last_funding_rate_ts=0,
        last_mark_price_twap=0,
        last_oracle_price_twap=150_050_000,
    )
    assert funding_from_perp_market(SOL, never) is None


# --- the DLOB's documented alternatives ----------------------------------------------------


def test_human_decimal_strings_from_the_docs_are_taken_as_they_are():
    market = DriftMarket("SOL-PERP", "SOL-PERP", 0, SOL)
    payload = {
        "bids": [{"price": "150.123456", "size": "2.5", "sources": {"dlob": "2.5"}}],
        "asks": [{"price": "150.2", "size": "0", "sources": {}}, {"price": "150.25", "size": "1.75", "sources": {}}],
        "marketName": "SOL-PERP",
        "marketIndex": 0,
        "oracle": 150_160_000,  # the older integer field, no oracleData
    }
    book, quote, mark = events_from_l2(payload, market, received_ns=1_700_000_000_123_456_789)
    assert book.bids == ((150.123456, 2.5),) and book.asks == ((150.25, 1.75),)  # zero-size level dropped
    assert book.ts_ns == quote.ts_ns == 1_700_000_000_123_456_789  # no ts: the time of receipt
    assert (quote.ask, quote.ask_size) == (150.25, 1.75)
    assert mark.oracle == 150.16


def test_a_crossed_snapshot_is_skipped_and_counted_while_the_other_market_flows():
    async def body(server):
        feed = DriftFeed(CONFIG, settings(server), chain_reader=AccountsOnHand(accounts()))
        feed.funding_poll_s = 60

        def until(c, h):
            return h.errors.get("crossed_book", 0) >= 2 and len(of(c, L2Book, BTC)) >= 2

        return await run_feed(feed, until)

    server = FakeDlobServer()
    server.markets["SOL-PERP"].bids.insert(0, ("150300000", "1000000000"))  # above the best ask
    collected, health = asyncio.run(with_server(body, server))
    assert of(collected, L2Book, SOL) == [] and of(collected, Quote, SOL) == []
    assert "crossed" in health.last_error and health.reconnects == 0 and health.state == "stopped"


# --- failure modes ------------------------------------------------------------------------


def run_failure(mode: str, kind: str, times: int = 1, server: FakeDlobServer | None = None, **update):
    async def body(server):
        feed = DriftFeed(CONFIG, settings(server, **update), chain_reader=AccountsOnHand(accounts()))
        feed.funding_poll_s = 60
        return await run_feed(feed, failure_then_recovery(server, mode, kind, times))

    server = server or FakeDlobServer()
    collected, health = asyncio.run(with_server(body, server))
    return server, collected, health


def test_rate_limit_with_retry_after_waits_what_the_venue_asked():
    server, collected, health = run_failure("rate_limited", "rate_limited")
    assert health.errors == {"rate_limited": 1} and health.reconnects == 1
    assert "Retry-After 1s" in health.last_error
    limited, retry = first_failure_and_next(server, 429)
    assert retry.at - limited.at >= 1.0  # no earlier than Retry-After: 1
    assert retry.status == 200


def test_rate_limit_without_retry_after_backs_off():
    server, collected, health = run_failure("rate_limited_bare", "rate_limited", times=2)
    assert health.errors == {"rate_limited": 2} and health.reconnects == 2
    assert "no Retry-After" in health.last_error
    ordered = served_in_order(server)
    limited = [i for i, r in enumerate(ordered) if r.status == 429]
    first_gap = ordered[limited[0] + 1].at - ordered[limited[0]].at
    second_gap = ordered[limited[1] + 1].at - ordered[limited[1]].at
    assert first_gap >= 0.05 and second_gap >= 0.1  # backoff 0.05 s, doubled after a failed session
    assert ordered[limited[1] + 1].status == 200


@pytest.mark.parametrize("mode,status", [("error_503", 503), ("error_500", 500)])
def test_server_errors_count_as_unavailable_and_are_retried(mode, status):
    server, collected, health = run_failure(mode, "unavailable")
    assert health.errors == {"unavailable": 1} and health.reconnects == 1
    assert f"HTTP {status}" in health.last_error
    failed, retry = first_failure_and_next(server, status)
    assert retry.at - failed.at >= 0.05 and retry.status == 200


def test_a_slow_server_times_out_and_is_retried():
    server = FakeDlobServer(slow_s=1.0)
    server, collected, health = run_failure("slow", "timeout", server=server, request_timeout_s=0.2)
    assert health.errors == {"timeout": 1} and health.reconnects == 1
    assert "no answer within 0.2s" in health.last_error


def test_a_body_that_is_not_json_counts_as_malformed_and_is_retried():
    server, collected, health = run_failure("malformed", "malformed")
    assert health.errors == {"malformed": 1} and health.reconnects == 1
    assert "not JSON" in health.last_error


def test_a_market_the_server_does_not_know_is_rejected_and_the_others_carry_on():
    async def body(server):
        feed = DriftFeed(CONFIG, settings(server), chain_reader=AccountsOnHand(accounts()))
        feed.funding_poll_s = 60
        state: dict = {}

        def until(c, h):
            if "delisted" not in state and of(c, L2Book, BTC):
                state["delisted"] = server.markets.pop("BTC-PERP")
                state["sol_slot"] = server.markets["SOL-PERP"].slot
            elif "relisted" not in state and h.errors.get("rejected", 0) >= 2:
                state["last_error"] = h.last_error
                state["sol_during"] = [b for b in of(c, L2Book, SOL) if b.seq > state["sol_slot"]]
                state["relisted"] = state["delisted"].slot
                server.markets["BTC-PERP"] = state["delisted"]
            elif "relisted" in state:
                return any(b.seq > state["relisted"] for b in of(c, L2Book, BTC))
            return False

        collected, health = await run_feed(feed, until)
        return collected, health, state

    collected, health, state = asyncio.run(with_server(body))
    assert "HTTP 400: Bad Request: unrecognized marketName" in state["last_error"]
    assert "DLOB /l2 BTC-PERP" in state["last_error"]
    assert state["sol_during"], "SOL books kept flowing while BTC was refused"
    assert health.errors["rejected"] >= 2 and set(health.errors) == {"rejected"}
    assert health.reconnects == 0  # a refused market does not end the session


# --- the chain ------------------------------------------------------------------------------


def test_a_dead_rpc_is_counted_and_the_books_keep_flowing(monkeypatch):
    """The real DriftChainReader (driftpy) against a port nobody listens on, named by the
    BOTMAIN_SOLANA_RPC_URL secret (which wins over settings.rpc_url)."""
    dead = f"http://127.0.0.1:{free_port()}/?api-key=not-for-logs"
    monkeypatch.setenv("BOTMAIN_SOLANA_RPC_URL", dead)

    async def body(server):
        feed = DriftFeed(CONFIG, settings(server, rpc_url="https://example.invalid"))
        feed.funding_poll_s = 0.05
        assert feed.rpc_url == dead

        def until(c, h):
            return h.errors.get("unavailable", 0) >= 2 and len(of(c, L2Book, SOL)) >= 5

        collected, health = await run_feed(feed, until, timeout_s=15)
        return collected, health, feed

    collected, health, feed = asyncio.run(with_server(body))
    assert of(collected, FundingRate) == []
    assert health.reconnects == 0 and set(health.errors) == {"unavailable"}
    assert health.last_error.startswith("unavailable: solana rpc http://127.0.0.1:")
    assert "not-for-logs" not in health.last_error and "not-for-logs" not in str(feed.status())
    assert feed.status()["chain"].startswith("unavailable: solana rpc")


def test_a_rate_limited_rpc_waits_its_retry_after_and_funding_resumes():
    async def body(server):
        reader = AccountsOnHand(accounts())
        reader.error = RateLimited("solana rpc http://rpc.test: HTTP 429 rate limited", retry_after=0.3)
        feed = DriftFeed(CONFIG, settings(server), chain_reader=reader)
        feed.funding_poll_s = 0.05

        def until(c, h):
            if h.errors.get("rate_limited"):
                reader.error = None
            return len(of(c, FundingRate)) == 2

        collected, health = await run_feed(feed, until)
        return collected, health, reader

    collected, health, reader = asyncio.run(with_server(body))
    assert health.errors == {"rate_limited": 1} and health.reconnects == 0
    (limited_at, failed), (retried_at, retry_failed) = reader.read_at[:2]
    assert failed and not retry_failed
    assert retried_at - limited_at >= 0.3  # not asked again before the RPC's Retry-After
    assert len(of(collected, FundingRate)) == 2 and of(collected, L2Book, SOL)


# --- configuration --------------------------------------------------------------------------


def _config_with(*instruments: InstrumentConfig):
    venues = CONFIG.venues.model_copy(update={"instruments": [*CONFIG.venues.instruments, *instruments]})
    return dataclasses.replace(CONFIG, venues=venues)


@pytest.mark.parametrize(
    "config,market,message",
    [
        (CONFIG, "DOGE-PERP", "feeds.drift.markets[1]: 'DOGE-PERP' is not an instrument in venues.yaml"),
        (CONFIG, "SOL-USDT", "feeds.drift.markets[1]: 'SOL-USDT' is a spot market; the drift feed reads perp markets"),
        (
            _config_with(
                InstrumentConfig(
                    symbol="JUP-PERP", kind=MarketKind.PERP, base="JUP", quote="USD",
                    listings={"drift": ListingConfig(venue_symbol="JUP-PERP")},
                )
            ),
            "JUP-PERP",
            "feeds.drift.markets[1]: venues.yaml listing drift:JUP-PERP needs market_index",
        ),
        (
            _config_with(
                InstrumentConfig(
                    symbol="JUP-USDC", kind=MarketKind.SPOT, base="JUP", quote="USDC",
                    listings={"drift": ListingConfig(venue_symbol="JUP", market_index=11)},
                )
            ),
            "JUP-USDC",
            "feeds.drift.markets[1]: 'JUP-USDC' is a spot market; the drift feed reads perp markets",
        ),
    ],
)
def test_a_market_drift_does_not_list_is_refused_at_construction(config, market, message):
    with pytest.raises(FeedConfigError) as raised:
        DriftFeed(config, DriftFeedConfig(markets=["SOL-PERP", market]))
    assert str(raised.value).startswith(message)


def test_a_market_index_the_dlob_contradicts_fails_the_feed():
    """venues.yaml says SOL-PERP is index 0; a server that answers with index 7 would pair
    the SOL book with another market's funding: the feed stops ("failed"), not retries."""

    async def body(server):
        feed = DriftFeed(CONFIG, settings(server, markets=["SOL-PERP"]), chain_reader=AccountsOnHand(accounts()))
        feed.funding_poll_s = 60
        return await run_feed(feed, lambda c, h: h.state == "failed")

    server = FakeDlobServer()
    server.markets["SOL-PERP"].index = 7
    collected, health = asyncio.run(with_server(body, server))
    assert health.state == "failed" and health.errors == {"config": 1} and health.reconnects == 0
    assert health.last_error == (
        "config: venues.yaml lists drift SOL-PERP as market_index 0, "
        "but the DLOB server answers marketName=SOL-PERP with marketIndex 7"
    )
    assert of(collected, L2Book) == [] and len(server.requests) == 1
