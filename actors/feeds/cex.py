"""The CEX feed: order books, trades, settled funding and perp mark prices from centralised
exchanges, polled through ccxt's asyncio API (``ccxt.async_support``, 4.5.x).

Venues are ``settings.venues``: each must be a venue of kind ``cex`` in venues.yaml with a
``ccxt_id``. The instruments are ``settings.instruments`` (Botmain symbols such as
``SOL-PERP``), or every listing on those venues when that is null. One ccxt exchange object is
made per venue, with ccxt's rate limiter on (``enableRateLimit``) and its own retries off
(``maxRetriesOnFailure: 0``): every failure reaches the runner, which counts it and decides
when to try again.

Symbols: a listing's ``venue_symbol`` is the exchange's raw market id (``SOLUSDT``). After
``load_markets()`` it is looked up in ``exchange.markets_by_id`` and the market of the
listing's kind is taken (spot -> a ccxt ``spot`` market, perp -> a ``swap``), so the unified
symbol (``SOL/USDT``, ``SOL/USDT:USDT``) comes from the exchange itself rather than being
guessed; a ``venue_symbol`` that already is a unified symbol is accepted too. A listing the
exchange does not have stops the feed (``FeedConfigError``, state ``failed``).

Each poll, per venue (venues concurrently, requests within a venue one after another):

* ``fetch_order_book(symbol, limit=book_depth)`` -> ``L2Book`` and, when both sides have a
  level, the derived top-of-book ``Quote``; ``seq`` = ccxt's ``nonce`` (Binance's
  ``lastUpdateId``); ``ts`` = the book's timestamp (Binance futures' ``T``), else receipt time;
* ``fetch_trades(symbol, since=newest trade seen)`` -> ``Trade``; ``side`` is ccxt's ``side``,
  the aggressor's (for Binance: ``m``/``isBuyerMaker`` true means the aggressor sold). Trades
  are deduplicated by id across polls and sessions (the newest ``_SEEN_TRADES`` ids per
  instrument are remembered), because ``since`` is inclusive and overlaps the last poll;
* perps, every ``funding_interval_s``, two requests:

  - settled funding: ``fetch_funding_rate_history(symbol, since=newest settlement published
    + 1 ms)`` (Binance ``GET /fapi/v1/fundingRate?symbol&startTime``; the first time, without
    ``since``, the latest ``_FUNDING_BACKFILL``) -> one ``FundingRate`` per settlement not
    published before: ``ts`` = the settlement time (``fundingTime``), ``rate`` = the rate paid
    then, ``mark_price`` = its ``markPrice`` when given (older Binance records have ``""``), no
    oracle price. ``interval_s`` = the spacing from the previous settlement, rounded to whole
    seconds (Binance stamps settlements a few ms late); the oldest of the first answer takes
    the spacing to the next one, and a lone first settlement gets 8 h. A ``FundingRate`` is one
    payment that happened, stored under (instrument, settlement ts) where the first row wins,
    so a settlement dated after the local clock's now (clock skew: Binance lists only past
    ones) is held back until it is due, and the cursor, kept across sessions, means none is
    published twice;
  - the live estimate: ``fetch_funding_rate(symbol)`` (Binance ``premiumIndex``) -> a
    ``MarkPrice`` (mark = ``markPrice``, oracle = ``indexPrice``, ``ts`` = the answer's
    ``time``, else receipt time) at every poll of it. Its funding rate is Binance's running
    estimate for the next settlement, not a payment: it is not published as a ``FundingRate``
    but shown, with the next settlement time, in ``status()["funding"]``.

Failures (ccxt exception -> FeedError; all of them end the session unless noted):

* ``RateLimitExceeded`` / ``DDoSProtection`` (Binance 429 and 418) -> ``RateLimited``, with the
  response's ``Retry-After`` (read from ``exchange.last_response_headers``) for the runner;
* ``RequestTimeout`` -> ``FeedTimeout``; ``ExchangeNotAvailable``, ``OnMaintenance`` and other
  ``NetworkError``/``OperationFailed`` (5xx, Binance ``-1000``/``-1001``) -> ``VenueUnavailable``;
* ``BadResponse``, a 2xx body that is not JSON, or data that does not make a valid event ->
  ``MalformedResponse``. ccxt itself turns a non-JSON 200 into an *empty* book, so the feed
  checks ``exchange.last_json_response`` after every call;
* ``BadSymbol`` (Binance ``-1121 Invalid symbol.``) -> ``FeedConfigError``: the feed stops;
* any other ``ExchangeError`` -> ``VenueRejected``: recorded, and the poll carries on with the
  next request.

Each venue polls on its own: a venue that fails (5xx, timeouts, a 429) is counted, waits (the
venue's Retry-After, else the feed's backoff, doubling, reset after a poll that worked) and
tries again, while the other venues keep publishing; its quotes stop, so the MDS marks it
stale and leaves it out of the consolidated best. ``status()["venues"]`` shows each venue's
state (``ok`` or ``retrying``), its retries and last error. Only a configuration error
(``BadSymbol``, a listing the exchange does not have) ends the session and stops the feed.

Test hooks (constructor keywords, unused in production): ``url_overrides`` replaces entries of
the exchange's ``urls['api']`` (e.g. Binance's ``public`` and ``fapiPublic`` base URLs) to
point it at a local server; ``exchange_config`` adds ccxt constructor settings (a smaller
``rateLimit``).

Simplifications:

* polling over REST, not websockets: a book is a snapshot every ``poll_interval_s``;
* ``since`` for trades: a poll with ``since`` that brings nothing new is followed by one without
  it (the exchange's most recent trades). ccxt's Binance asks for a one-hour window from
  ``since``, so a quiet hour would otherwise stall the cursor; after a gap with more trades than
  one answer holds, the oldest of them are missed;
* a funding interval is inferred from the spacing of settlements, not read from the venue
  (``/fapi/v1/fundingInfo``): right after the venue changes a symbol's interval, the first
  settlement on the new schedule reports the spacing actually elapsed;
* settled funding is deduplicated in memory only: a restarted process publishes the latest
  ``_FUNDING_BACKFILL`` settlements again (the store keeps the first row of each);
* the mark price comes every ``funding_interval_s`` only, with the funding estimate, not
  with every book;
* requests within a venue are sequential so that ``last_response_headers`` and
  ``last_json_response`` belong to the request that just failed or returned;
* only markets ccxt can resolve by raw id or unified symbol are supported (hyperliquid's
  ``SOL`` is neither: its ccxt id is an asset index);
* for ``binance``/``binanceusdm``, ``load_markets`` is limited to the market types the
  configured listings need (spot -> ``spot``, perp -> ``linear``), which saves the other
  ``exchangeInfo`` requests (coin-margined, and spot on the futures venue).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Mapping

import ccxt.async_support as ccxt

from actors.feeds.base import Feed, classify
from actors.feeds.errors import (
    FeedConfigError,
    FeedError,
    FeedTimeout,
    MalformedResponse,
    RateLimited,
    VenueRejected,
    VenueUnavailable,
)
from actors.feeds.http import retry_after_seconds
from cluster.config import BotmainConfig
from cluster.config.models import CexFeedConfig
from cluster.domain import FundingRate, L2Book, MarketKind, Quote, Side, Trade, VenueKind
from cluster.events import MarkPrice

DEFAULT_FUNDING_INTERVAL_S = 8 * 3600
_FUNDING_BACKFILL = 3  # settlements asked for when none has been seen yet
_SEEN_TRADES = 5000  # trade ids remembered per instrument for deduplication
# ccxt's binance classes fetch spot, linear and inverse exchangeInfo unless told which.
_BINANCE_MARKET_TYPES = {MarketKind.SPOT: "spot", MarketKind.PERP: "linear"}
_BINANCE_IDS = ("binance", "binanceusdm")


@dataclass
class _Market:
    """One instrument on one venue, and what the feed remembers about it between polls."""

    key: str  # venue:SYMBOL
    venue_symbol: str
    kind: MarketKind
    ccxt_symbol: str | None = None  # resolved after load_markets
    last_trade_ms: int | None = None  # the `since` cursor
    use_since: bool = False
    seen_ids: collections.deque = field(default_factory=lambda: collections.deque(maxlen=_SEEN_TRADES))
    seen: set = field(default_factory=set)
    next_funding_at: float = 0.0  # time.monotonic() of the next funding requests
    last_settlement_ms: int | None = None  # newest funding settlement published: the `since` cursor
    estimate: dict[str, Any] | None = None  # the venue's live funding estimate, for status()

    def remember(self, trade_id: str) -> None:
        if len(self.seen_ids) == self.seen_ids.maxlen:
            self.seen.discard(self.seen_ids[0])
        self.seen_ids.append(trade_id)
        self.seen.add(trade_id)


@dataclass
class _Venue:
    name: str
    ccxt_id: str
    markets: list[_Market]
    exchange: Any = None  # the ccxt exchange, kept across sessions (and its markets with it)
    resolved: bool = False
    state: str = "starting"  # ok | retrying
    retries: int = 0
    last_error: str | None = None
    retry_in_s: float | None = None


class CexFeed(Feed):
    name = "cex"

    def __init__(
        self,
        config: BotmainConfig,
        settings: CexFeedConfig,
        *,
        url_overrides: Mapping[str, Mapping[str, str]] | None = None,
        exchange_config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``url_overrides``: venue -> {ccxt ``urls['api']`` name -> base URL}, e.g.
        ``{"binance": {"public": "http://127.0.0.1:8080/api/v3"}}``; tests point the exchanges
        at a local server with it, production leaves ccxt's URLs alone.
        ``exchange_config``: venue -> extra ccxt constructor settings, merged over the feed's
        (tests lower ``rateLimit`` so the limiter stays on without slowing them down)."""
        super().__init__(config, settings)
        self.settings: CexFeedConfig = settings
        self._url_overrides = {k: dict(v) for k, v in (url_overrides or {}).items()}
        self._exchange_config = {k: dict(v) for k, v in (exchange_config or {}).items()}
        for label, overrides in (("url_overrides", self._url_overrides), ("exchange_config", self._exchange_config)):
            unknown = sorted(set(overrides) - set(settings.venues))
            if unknown:
                raise FeedConfigError(f"cex {label}: {', '.join(unknown)} not in settings.venues")
        known = {inst.symbol for inst in config.venues.instruments}
        for symbol in settings.instruments or []:
            if symbol not in known:
                raise FeedConfigError(f"cex instruments: unknown instrument {symbol!r} (not in venues.yaml)")
        self._venues = [self._venue(name) for name in settings.venues]
        listed = {m.key.split(":", 1)[1] for v in self._venues for m in v.markets}
        for symbol in settings.instruments or []:
            if symbol not in listed:
                raise FeedConfigError(f"cex instruments: {symbol!r} is not listed on any of {', '.join(settings.venues)}")
        for venue in self._venues:
            if not venue.markets:
                which = "any instrument" if settings.instruments is None else f"any of {', '.join(settings.instruments)}"
                raise FeedConfigError(f"cex venues: {venue.name!r} does not list {which} in venues.yaml")

    def _venue(self, name: str) -> _Venue:
        venue_cfg = self.config.venues.venues.get(name)
        if venue_cfg is None:
            raise FeedConfigError(
                f"cex venues: unknown venue {name!r} (configured: {', '.join(sorted(self.config.venues.venues))})"
            )
        if venue_cfg.kind is not VenueKind.CEX:
            raise FeedConfigError(f"cex venues: {name!r} is a {venue_cfg.kind.value} venue, not cex")
        if not venue_cfg.ccxt_id:
            raise FeedConfigError(f"cex venues: {name!r} has no ccxt_id in venues.yaml")
        if venue_cfg.ccxt_id not in ccxt.exchanges:
            raise FeedConfigError(f"cex venues: {name!r} has ccxt_id {venue_cfg.ccxt_id!r}, which ccxt does not know")
        wanted = self.settings.instruments
        markets = [
            _Market(key=f"{name}:{inst.symbol}", venue_symbol=inst.listings[name].venue_symbol, kind=inst.kind)
            for inst in self.config.venues.instruments
            if name in inst.listings and (wanted is None or inst.symbol in wanted)
        ]
        venue = _Venue(name=name, ccxt_id=venue_cfg.ccxt_id, markets=markets)
        venue.exchange = self._make_exchange(venue)  # no I/O: ccxt opens its HTTP session on first use
        return venue

    # --- session ------------------------------------------------------------------------

    async def session(self) -> None:
        tasks = [asyncio.ensure_future(self._run_venue(v)) for v in self._venues]
        try:
            # Only a configuration error ends a venue's loop (and the session with it).
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_venue(self, venue: _Venue) -> None:
        """Poll one venue forever; its failures wait and retry here, alone."""
        backoff = self.settings.backoff
        delay = backoff.initial_s
        while True:
            try:
                await self._poll(venue)
            except FeedConfigError:
                raise
            except Exception as raw:
                exc = classify(raw)
                self.out.error(exc)
                wait = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after is not None else delay
                delay = min(delay * 2, backoff.max_s)
                venue.state, venue.last_error, venue.retry_in_s = "retrying", f"{exc.kind}: {exc}", wait
                venue.retries += 1
            else:
                delay = backoff.initial_s
                venue.state, venue.retry_in_s = "ok", None
                wait = self.settings.poll_interval_s
            await asyncio.sleep(wait)

    async def close(self) -> None:
        """Release every exchange's HTTP session. The exchange objects (and their loaded
        markets) are kept: ccxt opens a new HTTP session on the next request."""
        await asyncio.gather(*(v.exchange.close() for v in self._venues))

    def status(self) -> dict[str, Any]:
        """The venues' resolved markets and, per perp, the live funding estimate (``None``
        until first fetched) next to the newest settlement published."""
        perps = [m for v in self._venues for m in v.markets if m.kind is MarketKind.PERP]
        return {
            "venues": {
                v.name: {
                    "ccxt_id": v.ccxt_id,
                    "markets": {m.key: m.ccxt_symbol for m in v.markets},
                    "state": v.state,
                    "retries": v.retries,
                    "last_error": v.last_error,
                    "retry_in_s": v.retry_in_s,
                }
                for v in self._venues
            },
            "funding": {
                m.key: {
                    "estimate": dict(m.estimate) if m.estimate is not None else None,
                    "last_settlement_ts_ns": _ms_to_ns(m.last_settlement_ms) or None,
                }
                for m in perps
            },
        }

    # --- one venue ----------------------------------------------------------------------

    async def _poll(self, venue: _Venue) -> None:
        if not venue.resolved:
            # reload: ccxt caches even a failed (empty, from a non-JSON body) market list
            await self._call(venue, "load_markets", venue.exchange.load_markets(reload=True))
            for market in venue.markets:
                market.ccxt_symbol = self._resolve(venue, market)
            venue.resolved = True
        for market in venue.markets:
            await self._poll_book(venue, market)
            await self._poll_trades(venue, market)
            if market.kind is MarketKind.PERP and time.monotonic() >= market.next_funding_at:
                await self._poll_funding(venue, market)

    def _make_exchange(self, venue: _Venue) -> Any:
        cls = getattr(ccxt, venue.ccxt_id)
        options: dict[str, Any] = {"maxRetriesOnFailure": 0, "fetchCurrencies": False}
        if venue.ccxt_id in _BINANCE_IDS:
            types = sorted({_BINANCE_MARKET_TYPES[m.kind] for m in venue.markets})
            options["fetchMarkets"] = {"types": types}
        settings: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": int(self.settings.request_timeout_s * 1000),
            "enableLastJsonResponse": True,
            "enableLastResponseHeaders": True,
            "options": options,
        }
        extra = self._exchange_config.get(venue.name, {})
        settings.update({k: v for k, v in extra.items() if k != "options"})
        options.update(extra.get("options", {}))
        exchange = cls(settings)
        overrides = self._url_overrides.get(venue.name)
        if overrides:
            known = exchange.urls.get("api", {})
            unknown = sorted(set(overrides) - set(known))
            if unknown:
                raise FeedConfigError(
                    f"cex url_overrides.{venue.name}: {', '.join(unknown)} not in ccxt {venue.ccxt_id} urls['api'] "
                    f"(known: {', '.join(sorted(known))})"
                )
            exchange.urls["api"] = {**known, **overrides}
        return exchange

    def _resolve(self, venue: _Venue, market: _Market) -> str:
        """The unified ccxt symbol of a listing, from the exchange's own market list."""
        exchange = venue.exchange
        want_type = "spot" if market.kind is MarketKind.SPOT else "swap"
        candidates = list(exchange.markets_by_id.get(market.venue_symbol) or [])
        if market.venue_symbol in exchange.markets:
            candidates.append(exchange.markets[market.venue_symbol])
        for candidate in candidates:
            if candidate.get(want_type):
                return candidate["symbol"]
        found = ", ".join(f"{c['symbol']} ({c.get('type')})" for c in candidates) or "nothing"
        raise FeedConfigError(
            f"cex {market.key}: venue_symbol {market.venue_symbol!r} is not a {market.kind.value} market "
            f"on {venue.ccxt_id} (found {found})"
        )

    async def _call(self, venue: _Venue, what: str, request: Awaitable[Any]) -> Any:
        """Await one ccxt request; a ccxt exception, or a 2xx body that was not JSON, comes
        out as the FeedError it means."""
        exchange = venue.exchange
        label = f"{venue.name} {what}"
        try:
            result = await request
        except ccxt.BaseError as exc:
            raise _feed_error(exc, label, exchange) from None
        if exchange.last_json_response is None:
            body = exchange.last_http_response or ""
            raise MalformedResponse(f"{label}: body is not JSON: {_snippet(body)}")
        return result

    async def _poll_book(self, venue: _Venue, market: _Market) -> None:
        try:
            book = await self._call(
                venue,
                f"fetch_order_book {market.ccxt_symbol}",
                venue.exchange.fetch_order_book(market.ccxt_symbol, limit=self.settings.book_depth),
            )
        except VenueRejected as exc:
            self.out.error(exc)
            return
        received_ns = time.time_ns()
        try:
            ts_ns = _ms_to_ns(book.get("timestamp")) or received_ns
            seq = int(book.get("nonce") or 0)
            bids = tuple((float(level[0]), float(level[1])) for level in book["bids"])
            asks = tuple((float(level[0]), float(level[1])) for level in book["asks"])
            l2 = L2Book(ts_ns, market.key, bids, asks, seq)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MalformedResponse(f"{venue.name} order book {market.ccxt_symbol}: {exc}") from None
        await self.out.emit(l2)
        if bids and asks:
            await self.out.emit(Quote(ts_ns, market.key, bids[0][0], bids[0][1], asks[0][0], asks[0][1], seq))

    async def _poll_trades(self, venue: _Venue, market: _Market) -> None:
        since = market.last_trade_ms if market.use_since else None
        try:
            raw = await self._call(
                venue,
                f"fetch_trades {market.ccxt_symbol}",
                venue.exchange.fetch_trades(market.ccxt_symbol, since=since),
            )
        except VenueRejected as exc:
            self.out.error(exc)
            return
        trades: dict[str, Trade] = {}
        for t in raw:
            if t.get("id") is None:
                raise MalformedResponse(f"{venue.name} trade on {market.ccxt_symbol} has no id: {t.get('info')}")
            trade_id = str(t["id"])
            if trade_id not in market.seen and trade_id not in trades:
                trades[trade_id] = self._trade(venue, market, t)
        for trade in sorted(trades.values(), key=lambda tr: tr.ts_ns):
            market.remember(trade.trade_id)
            await self.out.emit(trade)
            market.last_trade_ms = max(market.last_trade_ms or 0, trade.ts_ns // 1_000_000)
        # A `since` poll with nothing new may be stuck behind the venue's window: look at the
        # latest trades next time; a poll that did bring trades moves the cursor on.
        market.use_since = bool(trades) and market.last_trade_ms is not None

    @staticmethod
    def _trade(venue: _Venue, market: _Market, t: dict) -> Trade:
        try:
            side = Side(t["side"])
            price, size = float(t["price"]), float(t["amount"])
            ts_ns = _ms_to_ns(t["timestamp"])
            if not ts_ns or not (price > 0 and size > 0):
                raise ValueError(f"price {price}, size {size}, timestamp {t['timestamp']}")
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(
                f"{venue.name} trade {t.get('id')} on {market.ccxt_symbol}: {exc} ({t.get('info')})"
            ) from None
        return Trade(ts_ns, market.key, price, size, side, str(t["id"]))

    async def _poll_funding(self, venue: _Venue, market: _Market) -> None:
        """Settled funding, then the live estimate. A rejected request is asked again next
        interval; other failures end the session and the next one asks at once."""
        await self._poll_settlements(venue, market)
        await self._poll_estimate(venue, market)
        market.next_funding_at = time.monotonic() + self.settings.funding_interval_s

    async def _poll_settlements(self, venue: _Venue, market: _Market) -> None:
        cursor = market.last_settlement_ms
        since = cursor + 1 if cursor is not None else None
        try:
            raw = await self._call(
                venue,
                f"fetch_funding_rate_history {market.ccxt_symbol}",
                venue.exchange.fetch_funding_rate_history(
                    market.ccxt_symbol, since=since, limit=None if since is not None else _FUNDING_BACKFILL
                ),
            )
        except VenueRejected as exc:
            self.out.error(exc)
            return
        now_ms = time.time_ns() // 1_000_000
        settlements: dict[int, tuple[float, float | None]] = {}  # ts_ms -> (rate, mark price)
        for entry in raw:  # all checked before any is published: a bad answer publishes nothing
            ts_ms, rate = entry.get("timestamp"), entry.get("fundingRate")
            info = entry.get("info") or {}
            try:
                if ts_ms is None or rate is None:
                    raise ValueError("no fundingTime or fundingRate")
                mark = info.get("markPrice")
                settlements[int(ts_ms)] = (float(rate), float(mark) if mark not in (None, "") else None)
            except (TypeError, ValueError) as exc:
                raise MalformedResponse(
                    f"{venue.name} funding settlement on {market.ccxt_symbol}: {exc} ({info})"
                ) from None
        due = sorted(ts for ts in settlements if ts <= now_ms and (cursor is None or ts > cursor))
        for i, ts_ms in enumerate(due):
            previous = due[i - 1] if i else cursor
            if previous is not None:
                interval_s = _spacing_s(previous, ts_ms)
            elif len(due) > 1:
                interval_s = _spacing_s(ts_ms, due[1])
            else:
                interval_s = DEFAULT_FUNDING_INTERVAL_S
            if interval_s <= 0:
                raise MalformedResponse(
                    f"{venue.name} funding settlements on {market.ccxt_symbol} less than a second apart at {ts_ms}"
                )
            rate, mark = settlements[ts_ms]
            await self.out.emit(FundingRate(_ms_to_ns(ts_ms), market.key, rate, interval_s, None, mark))
            market.last_settlement_ms = ts_ms

    async def _poll_estimate(self, venue: _Venue, market: _Market) -> None:
        try:
            raw = await self._call(
                venue,
                f"fetch_funding_rate {market.ccxt_symbol}",
                venue.exchange.fetch_funding_rate(market.ccxt_symbol),
            )
        except VenueRejected as exc:
            self.out.error(exc)
            return
        ts_ns = _ms_to_ns(raw.get("timestamp")) or time.time_ns()
        try:
            mark = float(raw["markPrice"])
            oracle = _float_or_none(raw.get("indexPrice"))
            if not mark > 0:
                raise ValueError(f"mark price {mark}")
            rate = _float_or_none(raw.get("fundingRate"))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(
                f"{venue.name} funding estimate {market.ccxt_symbol}: {exc} ({raw.get('info')})"
            ) from None
        await self.out.emit(MarkPrice(ts_ns, market.key, mark, oracle))
        market.estimate = {
            "rate": rate,
            "next_funding_ts_ns": _ms_to_ns(raw.get("fundingTimestamp")) or None,
            "ts_ns": ts_ns,
        }


def _feed_error(exc: ccxt.BaseError, label: str, exchange: Any) -> FeedError:
    """A ccxt exception as the FeedError kind the runner counts. Subclasses first: in ccxt,
    RateLimitExceeded, DDoSProtection and RequestTimeout are all NetworkErrors."""
    text = f"{label}: {type(exc).__name__}: {_snippet(str(exc))}"
    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        retry_after = retry_after_seconds(_header(exchange.last_response_headers, "Retry-After"))
        hint = f", Retry-After {retry_after:g}s" if retry_after is not None else ", no Retry-After"
        return RateLimited(text + hint, retry_after)
    if isinstance(exc, ccxt.RequestTimeout):
        return FeedTimeout(text)
    if isinstance(exc, ccxt.BadResponse):
        return MalformedResponse(text)
    if isinstance(exc, ccxt.OperationFailed):  # NetworkError, ExchangeNotAvailable, OnMaintenance
        return VenueUnavailable(text)
    if isinstance(exc, ccxt.BadSymbol):
        return FeedConfigError(text)
    return VenueRejected(text)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def _spacing_s(earlier_ms: int, later_ms: int) -> int:
    """Seconds between two settlements; Binance stamps them a few ms after the hour."""
    return round((later_ms - earlier_ms) / 1000)


def _ms_to_ns(ms: Any) -> int:
    return int(ms) * 1_000_000 if ms is not None else 0


def _float_or_none(value: Any) -> float | None:
    return float(value) if value is not None else None


def _snippet(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
