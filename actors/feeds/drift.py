"""The Drift feed: Drift perps' books from the DLOB server and their funding from the chain.

What it publishes, for each configured market (a Botmain symbol such as ``SOL-PERP`` that
``venues.yaml`` lists on ``drift`` with a ``market_index``), named ``drift:SOL-PERP``:

* ``L2Book`` from the DLOB server, ``GET {dlob_url}/l2?marketName=...&depth=N&includeVamm=true
  &includeOracle=true``, every ``poll_interval_s``; the server's ``ts`` (ms) is the event time
  and its ``slot`` the sequence number;
* ``Quote``: that book's top;
* ``MarkPrice``: mark = the mid of that book's top, oracle = ``oracleData.price`` (or the
  older ``oracle`` field) of the same response;
* ``FundingRate``: the last funding Drift settled, read from the perp market account on the
  chain through driftpy (``DriftChainReader``), published once per settlement (when
  ``amm.last_funding_rate_ts`` changes).

Units. The DLOB server sends prices as integer strings in PRICE_PRECISION (1e6) and sizes in
BASE_PRECISION (1e9); docs.drift.trade shows human decimal strings instead, so a value with a
'.' is taken as already human. Drift's ``last_funding_rate`` is not a fraction: it is quote
per one base unit per funding period, in FUNDING_RATE_PRECISION (1e9). The fraction of
notional is ``last_funding_rate / 1e9 / (last_funding_oracle_twap / 1e6)``; dividing by 1e9
alone (common in third-party code) overstates SOL funding ~150 times.

Failures. A 429 (with its Retry-After), 5xx, timeout or a body that is not the documented
shape ends the session and the runner retries. A 400 for one market (the server does not
know the name) is counted as ``rejected`` and the other markets carry on. The chain read
runs beside the book loop and never ends the session: a failing Solana RPC is counted under
its kind and retried with backoff while books keep flowing, because funding changes hourly
and the book must not go dark when the RPC does.

Simplifications:

* the book is polled over REST, not streamed from the DLOB websocket;
* the mark is the mid of the DLOB top (orders plus vAMM), not Drift's on-chain reserve price
  or mark TWAP;
* a crossed snapshot (vAMM and resting orders can cross for a moment) is skipped and counted
  as ``crossed_book`` rather than published; zero-size levels are dropped;
* a new settlement is noticed at most ``funding_poll_s`` (30 s) late; when an account predates
  ``last_funding_oracle_twap`` (0), the current ``historical_oracle_data.last_oracle_price_twap``
  stands in for the oracle TWAP of the settlement, which can differ slightly;
* the chain reader subscribes the market accounts only (no user or wallet: the feed signs
  nothing), with driftpy's "cached" subscription, refreshed on each read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx
from driftpy.constants.numeric_constants import BASE_PRECISION, FUNDING_RATE_PRECISION, PRICE_PRECISION

from actors.feeds.base import Feed, classify
from actors.feeds.errors import (
    CrossedBook,
    FeedConfigError,
    FeedError,
    FeedTimeout,
    MalformedResponse,
    RateLimited,
    VenueRejected,
    VenueUnavailable,
)
from actors.feeds.http import get_json, retry_after_seconds
from cluster.config import BotmainConfig
from cluster.config.models import DriftFeedConfig
from cluster.config.secrets import SecretError, read_secret
from cluster.domain import FundingRate, L2Book, MarketKind, Quote
from cluster.events import MarkPrice

log = logging.getLogger(__name__)

VENUE = "drift"


@dataclass(frozen=True)
class DriftMarket:
    """One configured market, resolved through venues.yaml."""

    symbol: str  # Botmain's name, SOL-PERP
    venue_symbol: str  # the DLOB server's marketName
    market_index: int  # the perp market account to read funding from
    instrument: str  # drift:SOL-PERP, the name events carry


# --- the DLOB server's /l2 answer -----------------------------------------------------


def dlob_number(value: Any, precision: int, what: str) -> float:
    """A DLOB price or size in human units.

    The server emits integer strings scaled by ``precision`` (and an integer ``oracle``); the
    docs show human decimal strings. A string with a '.' or a JSON float is taken as human,
    anything integral as scaled. ``int / int`` in Python is correctly rounded, so
    "150123456" / 1e6 is exactly the double nearest 150.123456.
    """
    if isinstance(value, bool):
        raise MalformedResponse(f"{what}: {value!r} is not a number")
    if isinstance(value, int):
        return value / precision
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text) if "." in text else int(text) / precision
        except ValueError:
            raise MalformedResponse(f"{what}: {value!r} is not a number") from None
    raise MalformedResponse(f"{what}: expected a number string, got {type(value).__name__}")


def _levels(payload: dict, side: str, market: DriftMarket) -> tuple[tuple[float, float], ...]:
    raw = payload.get(side)
    if not isinstance(raw, list):
        raise MalformedResponse(f"DLOB /l2 {market.venue_symbol}: '{side}' is missing or not a list")
    levels = []
    for i, level in enumerate(raw):
        if not isinstance(level, dict) or "price" not in level or "size" not in level:
            raise MalformedResponse(f"DLOB /l2 {market.venue_symbol}: {side}[{i}] lacks price/size: {level!r}")
        where = f"DLOB /l2 {market.venue_symbol} {side}[{i}]"
        price = dlob_number(level["price"], PRICE_PRECISION, f"{where}.price")
        size = dlob_number(level["size"], BASE_PRECISION, f"{where}.size")
        if not price > 0 or size < 0:
            raise MalformedResponse(f"{where}: price {price} / size {size} out of range")
        if size > 0:
            levels.append((price, size))
    levels.sort(key=lambda lv: -lv[0] if side == "bids" else lv[0])
    return tuple(levels)


def _oracle(payload: dict, market: DriftMarket) -> float | None:
    data = payload.get("oracleData")
    raw = data.get("price") if isinstance(data, dict) else None
    if raw is None:
        raw = payload.get("oracle")
    if raw is None:
        return None
    price = dlob_number(raw, PRICE_PRECISION, f"DLOB /l2 {market.venue_symbol} oracle")
    return price if price > 0 else None  # the server reports 0 when it has no oracle yet


def events_from_l2(payload: Any, market: DriftMarket, received_ns: int) -> list:
    """The book, its top and the mark/oracle of one ``/l2`` answer, in domain units.

    Raises MalformedResponse if the answer is not the documented shape, FeedConfigError if the
    server says the market has another index than venues.yaml (the book and the funding would
    then describe different markets), CrossedBook if the snapshot is crossed."""
    if not isinstance(payload, dict):
        raise MalformedResponse(f"DLOB /l2 {market.venue_symbol}: expected an object, got {type(payload).__name__}")
    index = payload.get("marketIndex")
    if index is not None and index != market.market_index:
        raise FeedConfigError(
            f"venues.yaml lists drift {market.symbol} as market_index {market.market_index}, "
            f"but the DLOB server answers marketName={market.venue_symbol} with marketIndex {index}"
        )
    ts_ms = payload.get("ts")
    if ts_ms is not None and (isinstance(ts_ms, bool) or not isinstance(ts_ms, (int, float))):
        raise MalformedResponse(f"DLOB /l2 {market.venue_symbol}: ts {ts_ms!r} is not a number")
    ts_ns = int(ts_ms * 1_000_000) if ts_ms else received_ns
    slot = payload.get("slot")
    seq = slot if isinstance(slot, int) and not isinstance(slot, bool) else 0
    bids = _levels(payload, "bids", market)
    asks = _levels(payload, "asks", market)
    oracle = _oracle(payload, market)
    if bids and asks and bids[0][0] >= asks[0][0]:
        raise CrossedBook(
            f"DLOB /l2 {market.venue_symbol} slot {slot}: crossed (bid {bids[0][0]} >= ask {asks[0][0]}), skipped"
        )
    book = L2Book(ts_ns, market.instrument, bids, asks, seq)
    events: list = [book]
    if bids and asks:
        events.append(Quote(ts_ns, market.instrument, bids[0][0], bids[0][1], asks[0][0], asks[0][1], seq))
        events.append(MarkPrice(ts_ns, market.instrument, book.mid, oracle))
    return events


# --- funding from the perp market account ---------------------------------------------


def funding_from_perp_market(instrument: str, market: Any) -> FundingRate | None:
    """The last settled funding of a driftpy ``PerpMarketAccount`` (or anything with the same
    ``amm`` attributes) as a FundingRate; None if the market has never settled funding.

    ``amm.last_funding_rate`` is quote per base per period in 1e9, so the fraction of notional
    is that price difference over the oracle TWAP the settlement used."""
    amm = market.amm
    if amm.last_funding_rate_ts <= 0:
        return None
    twap = amm.last_funding_oracle_twap or amm.historical_oracle_data.last_oracle_price_twap
    if twap <= 0:
        raise MalformedResponse(f"{instrument}: perp market account has no oracle TWAP to scale funding by")
    if amm.funding_period <= 0:
        raise MalformedResponse(f"{instrument}: perp market account has funding_period {amm.funding_period}")
    oracle_twap = twap / PRICE_PRECISION
    rate = amm.last_funding_rate / FUNDING_RATE_PRECISION / oracle_twap
    mark_twap = amm.last_mark_price_twap / PRICE_PRECISION if amm.last_mark_price_twap > 0 else None
    return FundingRate(
        ts_ns=amm.last_funding_rate_ts * 1_000_000_000,
        instrument=instrument,
        rate=rate,
        interval_s=amm.funding_period,
        oracle_price=oracle_twap,
        mark_price=mark_twap,
    )


class ChainReader(Protocol):
    """What the feed needs from the chain: the perp market accounts, by market index."""

    async def read(self) -> dict[int, Any]: ...

    async def close(self) -> None: ...


class DriftChainReader:
    """Perp market accounts read from a Solana RPC by driftpy's DriftClient.

    The "cached" account subscription fetches the accounts once per ``read`` (the state, the
    quote spot market, the perp markets and their oracles, for the explicit indexes only, so
    no ``getProgramAccounts`` that public RPCs refuse) and runs nothing in the background:
    the feed decides when the RPC is asked. driftpy is imported on first use because it takes
    seconds to import and tests that inject a reader never need it.
    """

    def __init__(self, rpc_url: str, env: str, perp_market_indexes: list[int], timeout_s: float) -> None:
        self.rpc_url = rpc_url
        self.env = env
        self.perp_market_indexes = list(perp_market_indexes)
        self.timeout_s = timeout_s
        self.label = rpc_label(rpc_url)
        self._connection = None
        self._client = None
        self._subscribed = False

    def _build_client(self):
        from driftpy.account_subscription_config import AccountSubscriptionConfig
        from driftpy.constants.config import get_markets_and_oracles
        from driftpy.drift_client import DriftClient
        from solana.rpc.async_api import AsyncClient
        from solders.keypair import Keypair

        spot_oracles, perp_oracles, spot_indexes = get_markets_and_oracles(
            env=self.env, perp_markets=self.perp_market_indexes
        )
        connection = AsyncClient(self.rpc_url, timeout=self.timeout_s)
        client = DriftClient(
            connection,
            Keypair(),  # read only: driftpy wants a wallet, nothing is ever signed
            env=self.env,
            account_subscription=AccountSubscriptionConfig("cached"),
            perp_market_indexes=list(self.perp_market_indexes),
            spot_market_indexes=spot_indexes,
            oracle_infos=spot_oracles + perp_oracles,
        )
        return connection, client

    async def read(self) -> dict[int, Any]:
        try:
            if self._client is None:
                # importing driftpy and parsing its IDL take seconds of CPU: off the event
                # loop, or the book requests sharing it would time out meanwhile
                self._connection, self._client = await asyncio.to_thread(self._build_client)
            if not self._subscribed:
                await self._client.account_subscriber.subscribe()  # markets only: no user to follow
                self._subscribed = True
            else:
                await self._client.account_subscriber.fetch()
            out = {}
            for index in self.perp_market_indexes:
                account = self._client.get_perp_market_account(index)
                if account is None:
                    raise MalformedResponse(f"solana rpc {self.label}: perp market {index} was not returned")
                out[index] = account
            return out
        except FeedError:
            raise
        except Exception as exc:
            raise self._as_feed_error(exc) from exc

    def _as_feed_error(self, exc: BaseException) -> FeedError:
        """solana-py wraps httpx errors in SolanaRpcException; unwrap them into the kinds the
        runner counts. Messages name the RPC by host only: its URL may carry a provider key."""
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        where = f"solana rpc {self.label}"
        if isinstance(cause, (httpx.TimeoutException, asyncio.TimeoutError)):
            return FeedTimeout(f"{where}: no answer within {self.timeout_s:g}s")
        if isinstance(cause, httpx.HTTPStatusError):
            status = cause.response.status_code
            if status == 429:
                retry_after = retry_after_seconds(cause.response.headers.get("Retry-After"))
                return RateLimited(f"{where}: HTTP 429 rate limited", retry_after)
            if status >= 500:
                return VenueUnavailable(f"{where}: HTTP {status}")
            return VenueRejected(f"{where}: HTTP {status}")
        if isinstance(cause, httpx.HTTPError):
            return VenueUnavailable(f"{where}: {type(cause).__name__}: {cause}".replace(self.rpc_url, self.label))
        # Anything else (an account that does not decode, a JSON-RPC error driftpy trips
        # over) keeps the kind classify gives it, with the RPC named.
        error = classify(exc)
        wrapped = FeedError(f"{where}: {error}".replace(self.rpc_url, self.label))
        wrapped.kind = error.kind
        return wrapped

    async def close(self) -> None:
        client, connection = self._client, self._connection
        self._client = self._connection = None
        self._subscribed = False
        if client is not None:
            await client.unsubscribe()
        if connection is not None:
            await connection.close()


def rpc_label(url: str) -> str:
    """An RPC URL fit for logs and status: scheme, host and port; no user, path or query,
    where providers put their keys."""
    parts = urlsplit(url)
    if not parts.hostname:
        return "<rpc>"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: show none
        port = ""
    return f"{parts.scheme}://{parts.hostname}{port}"


# --- the feed ---------------------------------------------------------------------------


class DriftFeed(Feed):
    name = "drift"
    funding_poll_s = 30.0  # how often the chain is read; funding settles hourly

    def __init__(
        self, config: BotmainConfig, settings: DriftFeedConfig, chain_reader: ChainReader | None = None
    ) -> None:
        super().__init__(config, settings)
        self.settings: DriftFeedConfig = settings
        self.markets = [self._market(i, symbol) for i, symbol in enumerate(settings.markets)]
        try:
            secret = read_secret("SOLANA_RPC_URL")
        except SecretError as exc:
            raise FeedConfigError(str(exc)) from None
        self.rpc_url = secret.get_secret_value() if secret is not None else settings.rpc_url
        self.chain_reader: ChainReader | None = chain_reader
        self._http: aiohttp.ClientSession | None = None
        self._last_funding_ts: dict[str, int] = {}  # instrument -> ts_ns published; kept across sessions
        self._chain_state = "not read yet"

    def _reader(self) -> ChainReader:
        if self.chain_reader is None:
            self.chain_reader = DriftChainReader(
                self.rpc_url,
                self.settings.env,
                [m.market_index for m in self.markets],
                self.settings.request_timeout_s,
            )
        return self.chain_reader

    def _market(self, index: int, symbol: str) -> DriftMarket:
        listing = self.listing(f"feeds.drift.markets[{index}]", symbol, VENUE, MarketKind.PERP, needs=("market_index",))
        return DriftMarket(symbol, listing.venue_symbol, listing.market_index, f"{VENUE}:{symbol}")

    async def session(self) -> None:
        self._http = aiohttp.ClientSession()
        funding = asyncio.ensure_future(self._follow_funding())
        try:
            interval = self.settings.poll_interval_s
            next_at = time.monotonic()
            while True:
                for market in self.markets:
                    await self._poll_book(market)
                next_at = max(next_at + interval, time.monotonic())
                await asyncio.sleep(next_at - time.monotonic())
        finally:
            funding.cancel()
            await asyncio.gather(funding, return_exceptions=True)

    async def _poll_book(self, market: DriftMarket) -> None:
        params = {
            "marketName": market.venue_symbol,
            "depth": str(self.settings.book_depth),
            "includeVamm": "true",
            "includeOracle": "true",
        }
        try:
            payload = await get_json(
                self._http,
                f"{self.settings.dlob_url.rstrip('/')}/l2",
                params=params,
                timeout_s=self.settings.request_timeout_s,
                what=f"DLOB /l2 {market.venue_symbol}",
            )
            events = events_from_l2(payload, market, time.time_ns())
        except (VenueRejected, CrossedBook) as exc:  # this market, this time: the others carry on
            self.out.error(exc)
            return
        for event in events:
            await self.out.emit(event)

    async def _follow_funding(self) -> None:
        """Read the perp market accounts every ``funding_poll_s`` and publish each new
        settlement. Failures are counted and retried with backoff (a 429's Retry-After),
        never raised: the book loop must not stop because the RPC did."""
        backoff = self.settings.backoff
        delay = backoff.initial_s
        while True:
            try:
                accounts = await self._reader().read()
            except Exception as raw:
                exc = classify(raw)
                self.out.error(exc)
                self._chain_state = f"{exc.kind}: {exc}"
                wait = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after is not None else delay
                delay = min(delay * 2, backoff.max_s)
            else:
                delay = backoff.initial_s
                self._chain_state = "ok"
                for market in self.markets:
                    await self._publish_funding(market, accounts.get(market.market_index))
                wait = self.funding_poll_s
            await asyncio.sleep(wait)

    async def _publish_funding(self, market: DriftMarket, account: Any) -> None:
        if account is None:
            self.out.error(MalformedResponse(f"solana rpc: no perp market account {market.market_index} for {market.symbol}"))
            return
        try:
            funding = funding_from_perp_market(market.instrument, account)
        except MalformedResponse as exc:
            self.out.error(exc)
            return
        if funding is None or self._last_funding_ts.get(market.instrument) == funding.ts_ns:
            return
        self._last_funding_ts[market.instrument] = funding.ts_ns
        await self.out.emit(funding)

    async def _close_reader(self) -> None:
        if self.chain_reader is not None:
            try:
                await self.chain_reader.close()
            except Exception as exc:  # closing a broken connection may fail too; nothing to keep
                log.debug("drift: closing the chain reader failed: %s", exc)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self._close_reader()

    def status(self) -> dict[str, Any]:
        return {
            "markets": {m.instrument: m.market_index for m in self.markets},
            "dlob_url": self.settings.dlob_url,
            "rpc": rpc_label(self.rpc_url),
            "chain": self._chain_state,
            "last_funding_ts_ns": dict(self._last_funding_ts),
        }
