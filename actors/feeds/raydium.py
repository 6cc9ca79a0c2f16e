"""The Raydium feed: pool state for configured pools and USD mint prices, by polling the read
API v3 (venue-apis.md section 3: ``/pools/info/ids`` and ``/mint/price``).

Each poll:

1. ``GET {api_url}/pools/info/ids?ids=<pool>,<pool>...`` (one request for every configured
   pool). For each instrument listed on ``raydium`` with ``pool_id``, ``base_mint`` and
   ``quote_mint`` it emits a ``PoolState``: the pool's ``price`` (mintB per mintA),
   ``mintAmountA``/``mintAmountB`` (already human units), ``feeRate`` (a fraction) and ``tvl``
   (USD). Which of mintA/mintB is the base is decided by mint address, not by position: a
   pool whose mintA is the quote token has its price inverted and its reserves swapped, so
   ``PoolState.price`` is always quote per base.
2. A ``Quote`` derived from that state, so the pool takes part in best-price consolidation:
   ``bid = price * (1 - feeRate)`` and ``ask = price * (1 + feeRate)`` (what a taker gets or
   pays per base at the margin, fee included), sized ``SIZE_FRACTION_OF_RESERVE`` (0.0005) of
   the base reserve. Why that size: in a constant-product pool (x * y = k) selling dx base
   moves the price by the factor (x / (x + dx))^2, so dx = 0.0005 x moves it by about 0.1%;
   that is the size for which the marginal bid/ask above is still a fair description.
3. ``GET {api_url}/mint/price?mints=<base>,<quote>...``: USD prices of the configured mints,
   kept in ``status()`` (mint -> price) for ``botmain status`` and used nowhere else. A mint
   the API has no price for (missing or null) is left out.

Every answer is the envelope ``{id, success, data | msg}``; ``success: false`` arrives as HTTP
200 and becomes a ``VenueRejected`` whose kind is the ``msg`` code lower-cased (e.g.
``route_not_found``; free-text messages count as ``rejected``). Per endpoint:

* ``/pools/info/ids`` is the feed's substance: a rejection (``success: false`` or a 4xx), or a
  200 that is not the documented shape, ends the session, so the retry gets the runner's
  backoff instead of the poll interval;
* ``/mint/price`` only feeds ``status()``: a rejection or ``data`` that is not mint -> price
  is recorded (``self.out.error``, kind ``rejected``/``route_not_found``... or ``malformed``)
  and skipped; the pool data of the same poll is still published;
* whatever the endpoint, transport-level failures (429 with or without Retry-After, 5xx,
  timeouts, a body that is not JSON or not the envelope) end the session: they say the host is
  unwell or wants us slower, which applies to both endpoints.

A ``null`` entry (or none) for a configured pool in ``/pools/info/ids`` means the API does not
know that pool id: if this feed has never seen the pool it is a configuration error
(``FeedConfigError`` naming the pool id; state ``failed``); once the pool has been seen, it
is taken for an API glitch, recorded as ``pool_missing`` and that pool is skipped this poll.
A pool whose mints are not the listing's ``base_mint``/``quote_mint`` is a configuration error.

Simplifications: for concentrated-liquidity (CLMM) pools ``mintAmountA/B`` are the vault
balances, not the liquidity around the current price, so the derived quote's size is a
constant-product approximation there; a pool with no base reserve gets a ``PoolState`` but
no ``Quote``; timestamps are the receipt time (the envelope carries none).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from actors.feeds.base import Feed
from actors.feeds.errors import FeedConfigError, MalformedResponse, VenueRejected
from actors.feeds.http import get_json
from cluster.config import BotmainConfig
from cluster.config.models import RaydiumFeedConfig
from cluster.domain import MarketKind, Quote
from cluster.events import PoolState

VENUE = "raydium"
SIZE_FRACTION_OF_RESERVE = 0.0005  # moves a constant-product pool's price by ~0.1%

_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class _Pool:
    """One configured instrument and the Raydium pool it is read from."""

    key: str  # venue:SYMBOL
    symbol: str
    pool_id: str
    base_mint: str
    quote_mint: str


class RaydiumFeed(Feed):
    name = VENUE

    def __init__(self, config: BotmainConfig, settings: RaydiumFeedConfig) -> None:
        super().__init__(config, settings)
        self.settings: RaydiumFeedConfig = settings
        self.pools = [self._pool(i, symbol) for i, symbol in enumerate(settings.instruments)]
        self.mints = sorted({p.base_mint for p in self.pools} | {p.quote_mint for p in self.pools})
        self.usd_prices: dict[str, float] = {}
        self.usd_prices_ts_ns = 0
        self._seen: set[str] = set()  # pool ids the API has answered for at least once
        self._http: aiohttp.ClientSession | None = None
        self._seq = 0

    def _pool(self, index: int, symbol: str) -> _Pool:
        listing = self.listing(
            f"feeds.raydium.instruments[{index}]", symbol, VENUE, MarketKind.SPOT, needs=("pool_id", "base_mint", "quote_mint")
        )
        return _Pool(f"{VENUE}:{symbol}", symbol, listing.pool_id, listing.base_mint, listing.quote_mint)

    # --- the session ----------------------------------------------------------------------

    async def session(self) -> None:
        self._http = aiohttp.ClientSession()
        while True:
            await self._poll_pools()
            await self._poll_mint_prices()
            await self.out.flush()
            await asyncio.sleep(self.settings.poll_interval_s)

    async def _get(self, path: str, params: dict[str, str], what: str) -> Any:
        """The ``data`` of one API v3 answer; ``success: false`` raises VenueRejected."""
        assert self._http is not None
        body = await get_json(
            self._http,
            f"{self.settings.api_url.rstrip('/')}{path}",
            params=params,
            timeout_s=self.settings.request_timeout_s,
            what=what,
        )
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise MalformedResponse(f"{what}: expected the {{id, success, data}} envelope, got {_short(body)}")
        if not body["success"]:
            msg = str(body.get("msg") or "success: false without msg")
            kind = msg.lower() if _CODE.match(msg) else "rejected"
            raise VenueRejected(f"{what}: {msg}", kind=kind)
        if "data" not in body:
            raise MalformedResponse(f"{what}: success without data: {_short(body)}")
        return body["data"]

    async def _poll_pools(self) -> None:
        ids = list(dict.fromkeys(p.pool_id for p in self.pools))
        what = "raydium /pools/info/ids"
        data = await self._get("/pools/info/ids", {"ids": ",".join(ids)}, what)
        received_ns = time.time_ns()
        if not isinstance(data, list):
            raise MalformedResponse(f"{what}: data should be a list of pools, got {_short(data)}")
        by_id: dict[str, dict] = {}
        for entry in data:
            if entry is None:
                continue  # an unknown id; which one shows below, by absence
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise MalformedResponse(f"{what}: pool entry without an id: {_short(entry)}")
            by_id[entry["id"]] = entry
        for pool in self.pools:
            entry = by_id.get(pool.pool_id)
            if entry is None:
                self._missing(pool)
                continue
            self._seen.add(pool.pool_id)
            state = self._pool_state(pool, entry, received_ns)
            await self.out.emit(state)
            if state.base_reserve > 0:
                self._seq += 1
                await self.out.emit(_derived_quote(state, self._seq))

    def _missing(self, pool: _Pool) -> None:
        if pool.pool_id not in self._seen:
            raise FeedConfigError(
                f"raydium:{pool.symbol}: pool {pool.pool_id} is unknown to the Raydium API "
                f"(/pools/info/ids answered null); check pool_id in venues.yaml"
            )
        self.out.error(
            VenueRejected(f"raydium:{pool.symbol}: pool {pool.pool_id} missing from /pools/info/ids", kind="pool_missing")
        )

    def _pool_state(self, pool: _Pool, entry: dict, ts_ns: int) -> PoolState:
        what = f"raydium pool {pool.pool_id}"
        mint_a, mint_b = _mint(entry, "mintA", what), _mint(entry, "mintB", what)
        price = _number(entry, "price", what)
        amount_a, amount_b = _number(entry, "mintAmountA", what), _number(entry, "mintAmountB", what)
        fee_rate = _number(entry, "feeRate", what)
        tvl = entry.get("tvl")
        if price <= 0:
            raise MalformedResponse(f"{what}: price should be positive, got {price!r}")
        if not 0 <= fee_rate < 1:
            raise MalformedResponse(f"{what}: feeRate should be a fraction, got {fee_rate!r}")
        if (mint_a, mint_b) == (pool.base_mint, pool.quote_mint):
            base_reserve, quote_reserve = amount_a, amount_b
        elif (mint_a, mint_b) == (pool.quote_mint, pool.base_mint):
            price, base_reserve, quote_reserve = 1.0 / price, amount_b, amount_a
        else:
            raise FeedConfigError(
                f"raydium:{pool.symbol}: pool {pool.pool_id} trades {mint_a}/{mint_b}, not the listing's "
                f"base_mint {pool.base_mint} / quote_mint {pool.quote_mint}; check venues.yaml"
            )
        tvl_usd = float(tvl) if isinstance(tvl, (int, float)) and not isinstance(tvl, bool) else None
        return PoolState(ts_ns, pool.key, pool.pool_id, price, base_reserve, quote_reserve, fee_rate, tvl_usd)

    async def _poll_mint_prices(self) -> None:
        what = "raydium /mint/price"
        try:
            data = await self._get("/mint/price", {"mints": ",".join(self.mints)}, what)
            prices = _usd_prices(data, self.mints, what)
        except (VenueRejected, _UnreadablePrices) as exc:
            self.out.error(exc)  # status-only data: record and keep the pools flowing
            return
        self.usd_prices = prices
        self.usd_prices_ts_ns = time.time_ns()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def status(self) -> dict[str, Any]:
        return {
            "pools": {p.key: p.pool_id for p in self.pools},
            "usd_prices": dict(self.usd_prices),
            "usd_prices_ts_ns": self.usd_prices_ts_ns,
        }


class _UnreadablePrices(MalformedResponse):
    """``/mint/price`` data that is not mint -> price: recorded, not session-ending."""


def _usd_prices(data: Any, mints: list[str], what: str) -> dict[str, float]:
    """mint -> USD price for the mints that have one (missing or null: no price, no error)."""
    if not isinstance(data, dict):
        raise _UnreadablePrices(f"{what}: data should map mint -> price, got {_short(data)}")
    prices = {}
    for mint in mints:
        value = data.get(mint)
        if value is None:
            continue
        try:
            prices[mint] = float(value)
        except (TypeError, ValueError):
            raise _UnreadablePrices(f"{what}: price of {mint} is not a number: {value!r}") from None
    return prices


def _derived_quote(state: PoolState, seq: int) -> Quote:
    """The pool's marginal bid/ask, fee included, sized to move the pool by ~0.1%."""
    size = state.base_reserve * SIZE_FRACTION_OF_RESERVE
    return Quote(
        state.ts_ns,
        state.instrument,
        state.price * (1.0 - state.fee_rate),
        size,
        state.price * (1.0 + state.fee_rate),
        size,
        seq,
    )


def _mint(entry: dict, field: str, what: str) -> str:
    """A pool's mintA/mintB address (an ApiV3Token object, as the SDK reads it)."""
    token = entry.get(field)
    address = token.get("address") if isinstance(token, dict) else None
    if not isinstance(address, str):
        raise MalformedResponse(f"{what}: {field}.address missing: {_short(token)}")
    return address


def _number(entry: dict, field: str, what: str) -> float:
    value = entry.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedResponse(f"{what}: {field} should be a number, got {value!r}")
    return float(value)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
