"""A local Drift DLOB server: ``GET /l2`` with the shape dlob-server's code produces.

Levels are ``{price, size, sources}`` with integer strings (price 1e6, size 1e9, sources per
liquidity source in 1e9); the answer carries ``marketName``, ``marketType``, ``marketIndex``,
``ts`` (ms), ``slot``, ``marketSlot``, ``oracle`` (int, 1e6) and ``oracleData`` (int strings).
An unknown ``marketName`` gets the server's 400 plain text, "Bad Request: unrecognized
marketName". Each answer moves the market's slot on by one.

Failure modes (``server.mode`` for every request until changed, or ``fail_next(mode, n)``
for the next ``n`` requests only): ``rate_limited`` (429 with ``Retry-After: retry_after``),
``rate_limited_bare`` (429, no Retry-After), ``error_500``, ``error_503``, ``slow`` (answers
after ``slow_s``, past the client's timeout), ``malformed`` (a 200 whose body is cut-off JSON).
Every request is recorded (monotonic arrival time, market, status, body) in ``requests``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web

MODES = ("normal", "rate_limited", "rate_limited_bare", "error_500", "error_503", "slow", "malformed")


@dataclass
class FakeMarket:
    """One market's book: levels as (price, size) integer strings in 1e6 / 1e9."""

    name: str
    index: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    oracle: str  # 1e6
    slot: int = 300_000_000


@dataclass
class Served:
    at: float  # time.monotonic() when the request arrived
    market: str | None
    status: int
    query: dict[str, str] = field(default_factory=dict)
    body: dict | None = None  # the JSON answered, for a 200


def sol_perp() -> FakeMarket:
    return FakeMarket(
        "SOL-PERP",
        0,
        bids=[("150123456", "2500000000"), ("150100000", "10000000000"), ("150000000", "125000000000")],
        asks=[("150200000", "1750000000"), ("150250000", "8000000000"), ("150400000", "60000000000")],
        oracle="150160000",
    )


def btc_perp() -> FakeMarket:
    return FakeMarket(
        "BTC-PERP",
        1,
        bids=[("64000100000", "150000000"), ("63999000000", "1000000000")],
        asks=[("64001500000", "120000000"), ("64003000000", "900000000")],
        oracle="64000800000",
    )


@dataclass
class FakeDlobServer:
    markets: dict[str, FakeMarket] = field(default_factory=lambda: {m.name: m for m in (sol_perp(), btc_perp())})
    mode: str = "normal"
    retry_after: str = "1"
    slow_s: float = 1.0
    requests: list[Served] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queued: collections.deque[str] = collections.deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, mode: str, times: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self._queued.extend([mode] * times)

    def served(self, status: int | None = None, market: str | None = None) -> list[Served]:
        return [
            r for r in self.requests if (status is None or r.status == status) and (market is None or r.market == market)
        ]

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/l2", self._l2)
        # handler_cancellation: a slow answer the client gave up on does not hold shutdown
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _l2(self, request: web.Request) -> web.Response:
        name = request.query.get("marketName")
        mode = self._queued.popleft() if self._queued else self.mode
        record = Served(time.monotonic(), name, 200, dict(request.query))
        self.requests.append(record)
        response = await self._answer(mode, name, request, record)
        record.status = response.status
        return response

    async def _answer(self, mode: str, name: str | None, request: web.Request, record: Served) -> web.Response:
        if mode == "rate_limited":
            return web.Response(status=429, text="Too many requests", headers={"Retry-After": self.retry_after})
        if mode == "rate_limited_bare":
            return web.Response(status=429, text="Too many requests")
        if mode == "error_500":
            return web.Response(status=500, text="Internal error")
        if mode == "error_503":
            return web.Response(status=503, text="Service Unavailable")
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        market = self.markets.get((name or "").upper())
        if market is None:
            return web.Response(status=400, text="Bad Request: unrecognized marketName")
        body = self._book(market, int(request.query.get("depth", "100")))
        if mode == "malformed":
            return web.Response(status=200, body=orjson.dumps(body)[:57], content_type="application/json")
        record.body = body
        return web.Response(status=200, body=orjson.dumps(body), content_type="application/json")

    @staticmethod
    def _book(market: FakeMarket, depth: int) -> dict:
        market.slot += 1

        def levels(side: list[tuple[str, str]]) -> list[dict]:
            out = []
            for price, size in side[:depth]:
                vamm = int(size) * 3 // 5
                out.append({"price": price, "size": size, "sources": {"vamm": str(vamm), "dlob": str(int(size) - vamm)}})
            return out

        return {
            "bids": levels(market.bids),
            "asks": levels(market.asks),
            "marketName": market.name,
            "marketType": "perp",
            "marketIndex": market.index,
            "ts": time.time_ns() // 1_000_000,
            "slot": market.slot,
            "marketSlot": market.slot - 1,
            "oracle": int(market.oracle),
            "oracleData": {
                "price": market.oracle,
                "slot": str(market.slot - 2),
                "confidence": "12000",
                "hasSufficientNumberOfDataPoints": True,
                "twap": market.oracle,
                "twapConfidence": "15000",
                "maxPrice": str(int(market.oracle) * 2),
            },
        }
