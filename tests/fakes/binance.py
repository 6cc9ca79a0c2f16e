"""A fake Binance REST API on 127.0.0.1: just the public endpoints ccxt 4.5's ``binance`` and
``binanceusdm`` classes call for the cex feed, answering with Binance's documented shapes.

What ccxt calls (read from ``ccxt/async_support/binance.py``), spot (``/api/v3``) and USD-M
futures (``/fapi/v1``):

* ``load_markets``     -> ``GET exchangeInfo`` (spot: only with ``fetchMarkets.types: [spot]``;
  ``fetchCurrencies`` needs API keys, so without keys it makes no request);
* ``fetch_order_book`` -> ``GET depth?symbol&limit``: ``{lastUpdateId, bids, asks}`` (futures
  add ``E`` event time and ``T`` transaction time, in ms);
* ``fetch_trades``     -> ``GET aggTrades?symbol[&startTime&endTime]``: aggregate trades
  ``{a, p, q, f, l, T, m[, M]}`` where ``m`` = "was the buyer the maker", i.e. the aggressor sold;
* ``fetch_funding_rate`` -> ``GET /fapi/v1/premiumIndex?symbol``: the mark and index price
  and the running funding estimate ``{symbol, markPrice, indexPrice, estimatedSettlePrice,
  lastFundingRate, interestRate, nextFundingTime, time}``;
* ``fetch_funding_rate_history`` -> ``GET /fapi/v1/fundingRate?symbol[&startTime&endTime&limit]``:
  settled funding ``[{symbol, fundingRate, fundingTime, markPrice}]`` in ascending order. As
  Binance documents it: ``startTime``/``endTime`` are inclusive, ``limit`` defaults to 100
  (max 1000), without either time the most recent ``limit`` are returned, with ``startTime``
  the first ``limit`` from it. Unlike Binance, which lists only past settlements, the fake
  answers every settlement a test added, even one dated in the future.

An unknown symbol is answered ``400 {"code":-1121,"msg":"Invalid symbol."}``, as Binance does.

Failure modes, one-shot, from the ``script`` queue (each entry is consumed by the next request
whose path matches its ``path``, or by any request if ``path`` is None):

* ``"429"``: ``429 {"code":-1003,...}`` with ``Retry-After: retry_after``;
* ``"429-bare"``: the same without Retry-After;
* ``"418"``: IP auto-banned after ignoring 429s, ``418`` with ``Retry-After``;
* ``"500"`` / ``"503"``: an HTML error page, as a load balancer sends it;
* ``"503-json"``: ``503 {"code":-1001,"msg":"Internal error; ..."}``;
* ``"slow"``: sleeps ``slow_s`` before answering normally;
* ``"malformed"``: a 200 whose body is cut-off JSON;
* ``"bad-symbol"``: ``400 {"code":-1121,"msg":"Invalid symbol."}``;
* ``"rejected"``: ``400 {"code":-1104,"msg":"Not all sent parameters were read; ..."}``, a
  refusal of one request that says nothing about the symbol.

Every request is logged in ``requests`` (monotonic time, path, query, status).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

SPOT = "spot"
USDM = "usdm"
_PREFIX = {SPOT: "/api/v3", USDM: "/fapi/v1"}


@dataclass
class Failure:
    mode: str
    path: str | None = None  # e.g. "/api/v3/depth"; None = the next request, whatever it is


@dataclass
class Logged:
    t: float
    path: str
    query: dict[str, str]
    status: int


@dataclass
class Symbol:
    base: str
    quote: str
    tick_size: str
    step_size: str


@dataclass
class FakeBinance:
    spot_symbols: dict[str, Symbol] = field(
        default_factory=lambda: {
            "SOLUSDT": Symbol("SOL", "USDT", "0.01", "0.001"),
            "BTCUSDT": Symbol("BTC", "USDT", "0.01", "0.00001"),
        }
    )
    usdm_symbols: dict[str, Symbol] = field(
        default_factory=lambda: {
            "SOLUSDT": Symbol("SOL", "USDT", "0.0100", "1"),
            "BTCUSDT": Symbol("BTC", "USDT", "0.10", "0.001"),
        }
    )
    script: deque = field(default_factory=deque)
    retry_after: str = "1"
    slow_s: float = 2.0
    requests: list[Logged] = field(default_factory=list)
    port: int = 0
    # (market, symbol) -> {"lastUpdateId", "E", "T", "bids", "asks"} (prices/sizes as strings)
    books: dict[tuple[str, str], dict] = field(default_factory=dict)
    # (market, symbol) -> aggregate trades, ascending
    trades: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    # symbol -> premiumIndex body
    premium: dict[str, dict] = field(default_factory=dict)
    # symbol -> settled funding records, ascending by fundingTime
    settlements: dict[str, list[dict]] = field(default_factory=dict)
    _next_agg_id: int = 26_129
    _runner: web.AppRunner | None = None

    # --- server -------------------------------------------------------------------------

    def api_urls(self) -> dict[str, str]:
        """ccxt ``urls['api']`` overrides pointing the public APIs at this server."""
        root = f"http://127.0.0.1:{self.port}"
        return {"public": f"{root}/api/v3", "fapiPublic": f"{root}/fapi/v1"}

    async def start(self, port: int) -> FakeBinance:
        app = web.Application()
        for market, prefix in _PREFIX.items():
            app.router.add_get(f"{prefix}/exchangeInfo", self._handler(market, self._exchange_info))
            app.router.add_get(f"{prefix}/depth", self._handler(market, self._depth))
            app.router.add_get(f"{prefix}/aggTrades", self._handler(market, self._agg_trades))
        app.router.add_get("/fapi/v1/premiumIndex", self._handler(USDM, self._premium_index))
        app.router.add_get("/fapi/v1/fundingRate", self._handler(USDM, self._funding_rate))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = port
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        """Forget books, trades, funding, failures and the request log (between tests)."""
        self.script.clear()
        self.requests.clear()
        self.books.clear()
        self.trades.clear()
        self.premium.clear()
        self.settlements.clear()
        self.retry_after = "1"
        self.slow_s = 2.0

    # --- state the tests set ------------------------------------------------------------

    def set_book(
        self,
        market: str,
        symbol: str,
        bids: list[tuple[str, str]],
        asks: list[tuple[str, str]],
        update_id: int,
        ts_ms: int | None = None,
    ) -> None:
        ts_ms = ts_ms if ts_ms is not None else int(time.time() * 1000)
        self.books[(market, symbol)] = {
            "lastUpdateId": update_id,
            "E": ts_ms + 13,
            "T": ts_ms,
            "bids": [list(level) for level in bids],
            "asks": [list(level) for level in asks],
        }

    def add_trade(self, market: str, symbol: str, price: str, qty: str, buyer_maker: bool, ts_ms: int) -> int:
        """Append one aggregate trade; returns its aggregate id ``a``."""
        agg_id = self._next_agg_id
        self._next_agg_id += 1
        first = agg_id * 3
        trade = {"a": agg_id, "p": price, "q": qty, "f": first, "l": first + 1, "T": ts_ms, "m": buyer_maker}
        if market == SPOT:
            trade["M"] = True  # "was the trade the best price match" exists on spot only
        self.trades.setdefault((market, symbol), []).append(trade)
        return agg_id

    def set_premium(
        self, symbol: str, funding_rate: str, next_funding_ms: int, mark: str, index: str, ts_ms: int
    ) -> None:
        self.premium[symbol] = {
            "symbol": symbol,
            "markPrice": mark,
            "indexPrice": index,
            "estimatedSettlePrice": index,
            "lastFundingRate": funding_rate,
            "interestRate": "0.00010000",
            "nextFundingTime": next_funding_ms,
            "time": ts_ms,
        }

    def add_settlement(self, symbol: str, funding_rate: str, funding_ms: int, mark: str = "") -> None:
        """Record one settled funding payment (``mark`` "" as on Binance's older records)."""
        record = {"symbol": symbol, "fundingRate": funding_rate, "fundingTime": funding_ms, "markPrice": mark}
        # a new list, not an in-place sort: the server thread may be reading the old one
        self.settlements[symbol] = sorted([*self.settlements.get(symbol, []), record], key=lambda r: r["fundingTime"])

    def count(self, path: str, status: int | None = None) -> int:
        return sum(1 for r in self.requests if r.path == path and (status is None or r.status == status))

    # --- handlers -----------------------------------------------------------------------

    def _handler(self, market: str, answer):
        async def handle(request: web.Request) -> web.Response:
            query = dict(request.query)
            response = await self._scripted(request.path)
            if response is None:
                symbol = query.get("symbol")
                known = self.spot_symbols if market == SPOT else self.usdm_symbols
                if symbol is not None and symbol not in known:
                    response = _binance_error(400, -1121, "Invalid symbol.")
                else:
                    response = answer(market, query)
            self.requests.append(Logged(time.monotonic(), request.path, query, response.status))
            return response

        return handle

    async def _scripted(self, path: str) -> web.Response | None:
        if not self.script or self.script[0].path not in (None, path):
            return None
        mode = self.script.popleft().mode
        if mode == "429":
            return _binance_error(429, -1003, "Too many requests; current limit of IP is 6000 requests per minute.",
                                  {"Retry-After": self.retry_after})
        if mode == "429-bare":
            return _binance_error(429, -1003, "Too many requests; current limit of IP is 6000 requests per minute.")
        if mode == "418":
            return _binance_error(418, -1003, "Way too many requests; IP banned until 1750000000000.",
                                  {"Retry-After": self.retry_after})
        if mode in ("500", "503"):
            return web.Response(status=int(mode), text=f"<html><body><h1>{mode} Server Error</h1></body></html>",
                                content_type="text/html")
        if mode == "503-json":
            return _binance_error(503, -1001, "Internal error; unable to process your request. Please try again.")
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
            return None
        if mode == "malformed":
            return web.Response(status=200, text='{"lastUpdateId": 1027024, "bids": [["4.0000', content_type="application/json")
        if mode == "bad-symbol":
            return _binance_error(400, -1121, "Invalid symbol.")
        if mode == "rejected":
            return _binance_error(400, -1104, "Not all sent parameters were read; read '2' parameter(s) but was sent '3'.")
        raise ValueError(f"unknown failure mode {mode!r}")

    def _exchange_info(self, market: str, query: dict) -> web.Response:
        now = int(time.time() * 1000)
        if market == SPOT:
            body = {
                "timezone": "UTC",
                "serverTime": now,
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": [_spot_symbol(name, s) for name, s in self.spot_symbols.items()],
            }
        else:
            body = {
                "timezone": "UTC",
                "serverTime": now,
                "futuresType": "U_MARGINED",
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                ],
                "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
                "symbols": [_usdm_symbol(name, s) for name, s in self.usdm_symbols.items()],
            }
        return web.json_response(body)

    def _depth(self, market: str, query: dict) -> web.Response:
        limit = int(query.get("limit", 100))
        book = self.books.get((market, query["symbol"]))
        if book is None:
            book = {"lastUpdateId": 1, "E": 0, "T": 0, "bids": [], "asks": []}
        body = {"lastUpdateId": book["lastUpdateId"]}
        if market == USDM:  # futures add event and transaction times; spot has none
            body["E"], body["T"] = book["E"], book["T"]
        body["bids"], body["asks"] = book["bids"][:limit], book["asks"][:limit]
        return web.json_response(body)

    def _agg_trades(self, market: str, query: dict) -> web.Response:
        limit = min(int(query.get("limit", 500)), 1000)
        trades = self.trades.get((market, query["symbol"]), [])
        if "startTime" in query:
            start, end = int(query["startTime"]), int(query.get("endTime", 2**62))
            return web.json_response([t for t in trades if start <= t["T"] <= end][:limit])
        return web.json_response(trades[-limit:])

    def _premium_index(self, market: str, query: dict) -> web.Response:
        symbol = query.get("symbol")
        if symbol is None:
            return web.json_response(list(self.premium.values()))
        body = self.premium.get(symbol)
        if body is None:
            now = int(time.time() * 1000)
            body = {
                "symbol": symbol, "markPrice": "0", "indexPrice": "0", "estimatedSettlePrice": "0",
                "lastFundingRate": "0.00000000", "interestRate": "0.00010000",
                "nextFundingTime": now - now % 28_800_000 + 28_800_000, "time": now,
            }
        return web.json_response(body)


    def _funding_rate(self, market: str, query: dict) -> web.Response:
        limit = min(int(query.get("limit", 100)), 1000)
        symbol = query.get("symbol")
        if symbol is None:
            records = sorted((r for rs in self.settlements.values() for r in rs), key=lambda r: r["fundingTime"])
        else:
            records = self.settlements.get(symbol, [])
        start, end = int(query.get("startTime", 0)), int(query.get("endTime", 2**62))
        records = [r for r in records if start <= r["fundingTime"] <= end]
        if "startTime" in query:
            return web.json_response(records[:limit])
        return web.json_response(records[-limit:])


def _binance_error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


def _spot_symbol(name: str, s: Symbol) -> dict:
    return {
        "symbol": name,
        "status": "TRADING",
        "baseAsset": s.base,
        "baseAssetPrecision": 8,
        "quoteAsset": s.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": s.tick_size, "maxPrice": "1000000.00000000", "tickSize": s.tick_size},
            {"filterType": "LOT_SIZE", "minQty": s.step_size, "maxQty": "9000000.00000000", "stepSize": s.step_size},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _usdm_symbol(name: str, s: Symbol) -> dict:
    return {
        "symbol": name,
        "pair": name,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": s.base,
        "quoteAsset": s.quote,
        "marginAsset": s.quote,
        "pricePrecision": 4,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["Layer-1"],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": s.tick_size, "maxPrice": "200000", "tickSize": s.tick_size},
            {"filterType": "LOT_SIZE", "minQty": s.step_size, "maxQty": "1000000", "stepSize": s.step_size},
            {"filterType": "MARKET_LOT_SIZE", "minQty": s.step_size, "maxQty": "100000", "stepSize": s.step_size},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }
