"""The Jupiter feed: aggregator swap quotes for configured sizes, both directions, by polling
``GET {base_url}/quote`` (swap/v1, venue-apis.md section 2.2).

Each poll, for every configured instrument (a spot symbol listed on ``jupiter`` in
venues.yaml with ``base_mint`` and ``quote_mint``) and every configured size (base units):

* SELL ``size`` base: ``swapMode=ExactIn``, ``inputMint=base``, ``amount = size * 10^base_decimals``;
  the price is what comes out, ``outAmount`` (quote) per ``inAmount`` (base);
* BUY ``size`` base: ``swapMode=ExactOut``, ``outputMint=base``, ``amount = size * 10^base_decimals``;
  the price is what goes in, ``inAmount`` (quote) per ``outAmount`` (base).

Each becomes a ``SwapQuote`` with that effective price (quote per base, human units; Jupiter's
``outAmount`` is after DEX and platform fees, so fees are included), ``price_impact =
float(priceImpactPct)`` (a fraction, as integrators read it) and ``route`` = the route plan's
AMM labels joined with ``>``. Then one ``Quote`` per instrument: bid = the sell price and
ask = the buy price of the smallest configured size, both sized at that size.

Both route-plan schemas are accepted: the older one (``swapInfo.feeAmount``/``feeMint``,
integer ``percent``) and the one since Nov 2025 (no fee fields, ``percent`` null, ``bps``).
Neither the per-leg fees nor the split shares are needed: the amounts already include them.

Failures:

* HTTP 400 ``{error, errorCode}`` (``COULD_NOT_FIND_ANY_ROUTE``, ``TOKEN_NOT_TRADABLE``...) or
  any other 4xx concerns one (side, size): it is recorded under the lower-cased code (e.g.
  ``could_not_find_any_route``) and the other sizes still publish;
* HTTP 401/403 means the API key is missing or refused: a ``FeedConfigError``, not retried;
* 429 (Retry-After honoured by the runner), 5xx, timeouts, a body that is not JSON, or a 200
  that is not the documented shape end the session; the runner retries with backoff.

Simplifications:

* token decimals come from the table of known mainnet mints in venue-apis.md section 0
  (``KNOWN_DECIMALS``); a mint outside it stops the feed with a ``FeedConfigError`` (state
  ``failed``) when the session starts. Jupiter's price API reports decimals too, but reading it
  would spend a second rate-limit bucket for a constant;
* requests go one after another, not concurrently, to stay gentle with the per-account rate
  limit (section 2.6): the free tier's 60 requests/minute covers 3 sizes x 2 sides only at a
  poll interval of 6 s or more, which is the operator's choice in market_data.yaml;
* if the smallest size has no quote on either side in a poll, that poll emits no ``Quote``
  (the ``SwapQuote`` of the side that did answer is still published);
* timestamps are the receipt time: the quote carries ``contextSlot``, not a wall time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

from actors.feeds.base import Feed
from actors.feeds.errors import FeedConfigError, MalformedResponse, VenueRejected
from actors.feeds.http import get_json
from cluster.config import BotmainConfig
from cluster.config.models import JupiterFeedConfig
from cluster.config.secrets import SecretError, read_secret
from cluster.domain import MarketKind, Quote, Side
from cluster.events import SwapQuote

VENUE = "jupiter"

# Mainnet mints and their decimals (venue-apis.md section 0, from driftpy's spot market table).
KNOWN_DECIMALS: dict[str, int] = {
    "So11111111111111111111111111111111111111112": 9,  # wSOL
    "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v": 6,  # USDC
    "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB": 6,  # USDT
    "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN": 6,  # JUP
    "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263": 5,  # BONK
}



@dataclass(frozen=True)
class _Market:
    """One configured instrument as Jupiter trades it."""

    key: str  # venue:SYMBOL
    symbol: str
    base_mint: str
    quote_mint: str


@dataclass(frozen=True)
class _Leg:
    """One quote request: a side and a size of one market, with its raw amount."""

    market: _Market
    side: Side
    size: float
    raw_amount: int


class JupiterFeed(Feed):
    name = VENUE

    def __init__(self, config: BotmainConfig, settings: JupiterFeedConfig) -> None:
        super().__init__(config, settings)
        self.settings: JupiterFeedConfig = settings
        self.markets = [self._market(i, symbol) for i, symbol in enumerate(settings.instruments)]
        self.sizes = sorted(set(settings.sizes))
        self.decimals: dict[str, int] = {}
        self._http: aiohttp.ClientSession | None = None
        self._keyed = False
        self._seq = 0

    def _market(self, index: int, symbol: str) -> _Market:
        listing = self.listing(
            f"feeds.jupiter.instruments[{index}]", symbol, VENUE, MarketKind.SPOT, needs=("base_mint", "quote_mint")
        )
        return _Market(f"{VENUE}:{symbol}", symbol, listing.base_mint, listing.quote_mint)

    # --- the session ----------------------------------------------------------------------

    async def session(self) -> None:
        legs = self._legs()
        headers = self._headers()
        self._keyed = "x-api-key" in headers
        self._http = aiohttp.ClientSession(headers=headers)
        while True:
            for market in self.markets:
                await self._poll(market, [leg for leg in legs if leg.market is market])
            await self.out.flush()
            await asyncio.sleep(self.settings.poll_interval_s)

    def _legs(self) -> list[_Leg]:
        """Every (market, side, size) to quote, with raw amounts in the base token's units.
        Resolves decimals first: an unknown mint stops the feed here, visibly, as 'failed'."""
        for market in self.markets:
            for role, mint in (("base_mint", market.base_mint), ("quote_mint", market.quote_mint)):
                if mint not in KNOWN_DECIMALS:
                    raise FeedConfigError(
                        f"jupiter:{market.symbol}: {role} {mint} is not a known mint, so its decimals are "
                        f"unknown (known: {', '.join(sorted(KNOWN_DECIMALS))})"
                    )
                self.decimals[mint] = KNOWN_DECIMALS[mint]
        legs = []
        for market in self.markets:
            scale = Decimal(10) ** self.decimals[market.base_mint]
            for size in self.sizes:
                raw = int((Decimal(str(size)) * scale).to_integral_value())
                if raw < 1:
                    raise FeedConfigError(
                        f"feeds.jupiter.sizes: {size:g} {market.symbol.split('-')[0]} is below one raw unit of the mint"
                    )
                legs.extend(_Leg(market, side, size, raw) for side in (Side.SELL, Side.BUY))
        return legs

    def _headers(self) -> dict[str, str]:
        try:
            key = read_secret("JUPITER_API_KEY")
        except SecretError as exc:
            raise FeedConfigError(str(exc)) from None
        return {"x-api-key": key.get_secret_value()} if key is not None else {}

    async def _poll(self, market: _Market, legs: list[_Leg]) -> None:
        """Quote every leg of one market, publish each, then the market's top of book."""
        smallest: dict[Side, SwapQuote] = {}
        for leg in legs:
            quote = await self._quote(leg)
            if quote is None:
                continue
            await self.out.emit(quote)
            if leg.size == self.sizes[0]:
                smallest[leg.side] = quote
        if Side.SELL in smallest and Side.BUY in smallest:
            bid, ask = smallest[Side.SELL], smallest[Side.BUY]
            self._seq += 1
            await self.out.emit(
                Quote(max(bid.ts_ns, ask.ts_ns), market.key, bid.price, bid.size, ask.price, ask.size, self._seq)
            )

    async def _quote(self, leg: _Leg) -> SwapQuote | None:
        """One leg's SwapQuote, or None when the venue refused this request (recorded)."""
        m = leg.market
        selling = leg.side is Side.SELL
        input_mint, output_mint = (m.base_mint, m.quote_mint) if selling else (m.quote_mint, m.base_mint)
        mode = "ExactIn" if selling else "ExactOut"
        what = f"jupiter quote {leg.side.value} {leg.size:g} {m.symbol}"
        params = {
            "inputMint": input_mint,
            "outputMint": output_mint,
            "amount": str(leg.raw_amount),
            "swapMode": mode,
            "slippageBps": str(self.settings.slippage_bps),
        }
        assert self._http is not None
        try:
            body = await get_json(
                self._http,
                f"{self.settings.base_url.rstrip('/')}/quote",
                params=params,
                timeout_s=self.settings.request_timeout_s,
                what=what,
            )
        except VenueRejected as exc:
            if exc.status in (401, 403):
                raise FeedConfigError(f"{exc} (check BOTMAIN_JUPITER_API_KEY)") from None
            self.out.error(exc)
            return None
        received_ns = time.time_ns()
        return self._parse(leg, body, input_mint, output_mint, mode, what, received_ns)

    def _parse(
        self, leg: _Leg, body: Any, input_mint: str, output_mint: str, mode: str, what: str, ts_ns: int
    ) -> SwapQuote:
        """The documented quote object as a SwapQuote; anything else is MalformedResponse."""
        if not isinstance(body, dict):
            raise MalformedResponse(f"{what}: expected a quote object, got {type(body).__name__}")
        if body.get("inputMint") != input_mint or body.get("outputMint") != output_mint:
            raise MalformedResponse(
                f"{what}: answered {body.get('inputMint')} -> {body.get('outputMint')}, "
                f"asked {input_mint} -> {output_mint}"
            )
        if body.get("swapMode", mode) != mode:
            raise MalformedResponse(f"{what}: answered swapMode {body.get('swapMode')!r}, asked {mode}")
        raw_in = _raw_amount(body, "inAmount", what)
        raw_out = _raw_amount(body, "outAmount", what)
        try:
            impact = float(body["priceImpactPct"])
        except (KeyError, TypeError, ValueError):
            raise MalformedResponse(f"{what}: priceImpactPct missing or not a number: {body.get('priceImpactPct')!r}") from None
        route = _route(body.get("routePlan"), what)
        m = leg.market
        base_raw, quote_raw = (raw_in, raw_out) if leg.side is Side.SELL else (raw_out, raw_in)
        base = base_raw / 10 ** self.decimals[m.base_mint]
        quote = quote_raw / 10 ** self.decimals[m.quote_mint]
        return SwapQuote(ts_ns, m.key, leg.side, leg.size, quote / base, impact, route)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def status(self) -> dict[str, Any]:
        return {
            "instruments": [m.key for m in self.markets],
            "sizes": self.sizes,
            "decimals": dict(self.decimals),
            "api_key": self._keyed,
        }


def _raw_amount(body: dict, field: str, what: str) -> int:
    """A raw token amount: Jupiter sends them as decimal-integer strings; it must be > 0."""
    value = body.get(field)
    if not isinstance(value, str) or not value.isdigit() or int(value) == 0:
        raise MalformedResponse(f"{what}: {field} should be a positive integer string, got {value!r}")
    return int(value)


def _route(plan: Any, what: str) -> str:
    """The AMM labels of the route plan, in order. Accepts both schemas: each step needs only
    ``swapInfo.label``; ``feeAmount``/``feeMint``, ``percent`` (int or null) and ``bps`` are
    not needed, since the quote's amounts already include fees and splits."""
    if not isinstance(plan, list) or not plan:
        raise MalformedResponse(f"{what}: routePlan should be a non-empty list, got {plan!r}")
    labels = []
    for step in plan:
        info = step.get("swapInfo") if isinstance(step, dict) else None
        label = info.get("label") if isinstance(info, dict) else None
        if not isinstance(label, str):
            raise MalformedResponse(f"{what}: routePlan step without swapInfo.label: {step!r}")
        labels.append(label)
    return ">".join(labels)
