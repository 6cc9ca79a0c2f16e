"""A fake Raydium API v3 (venue-apis.md section 3) on 127.0.0.1: ``/pools/info/ids`` and
``/mint/price``, every answer in the ``{id, success, data | msg}`` envelope.

``pools`` maps pool id -> pool object (``pool_object`` builds the documented
``ApiV3PoolInfoItem`` shape); a requested id not in it, or in ``null_pools``, is answered
``null``. ``prices`` maps mint -> USD price string (or None).

Failure modes, in ``script``: a queue of ``(path, mode)``; the head is consumed by the next
request to that path (``"*"`` matches any). Modes: ``"429"`` (``Retry-After: retry_after``),
``"429-bare"``, ``"500"``, ``"503"``, ``"slow"`` (sleeps ``slow_s``, then answers),
``"malformed"`` (a 200 that is not JSON), ``"reject:<MSG>"`` (HTTP 200, ``success: false``,
``msg: <MSG>``). Every request is logged in ``requests``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

WSOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
JUP = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"
SOL_USDC_POOL = "58oQChx4yWmvKdwLLZzBi4ChoCc2fqCUWBkwMihLYQo2"
AMM_V4 = "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8"

TOKENS = {
    WSOL: {"symbol": "WSOL", "name": "Wrapped SOL", "decimals": 9},
    USDC: {"symbol": "USDC", "name": "USD Coin", "decimals": 6},
    JUP: {"symbol": "JUP", "name": "Jupiter", "decimals": 6},
}


def token(mint: str) -> dict:
    """An ApiV3Token object."""
    known = TOKENS[mint]
    return {
        "chainId": 101,
        "address": mint,
        "programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
        "logoURI": f"https://img-v1.raydium.io/icon/{mint}.png",
        "symbol": known["symbol"],
        "name": known["name"],
        "decimals": known["decimals"],
        "tags": [],
        "extensions": {},
    }


def pool_object(
    pool_id: str, mint_a: str, mint_b: str, amount_a: float, amount_b: float, price: float, fee_rate: float, tvl: float
) -> dict:
    """A Standard (AMM v4) pool as ``/pools/info/ids`` lists it; ``price`` is mintB per mintA."""
    period = {"volume": 1.2e7, "volumeQuote": 1.2e7, "volumeFee": 3.0e4, "apr": 12.5, "feeApr": 12.5,
              "priceMin": price * 0.97, "priceMax": price * 1.03, "rewardApr": []}
    return {
        "type": "Standard",
        "programId": AMM_V4,
        "id": pool_id,
        "mintA": token(mint_a),
        "mintB": token(mint_b),
        "price": price,
        "mintAmountA": amount_a,
        "mintAmountB": amount_b,
        "feeRate": fee_rate,
        "openTime": "0",
        "tvl": tvl,
        "day": period,
        "week": period,
        "month": period,
        "pooltype": ["OpenBookMarket"],
        "rewardDefaultInfos": [],
        "rewardDefaultPoolInfos": "Raydium",
        "farmUpcomingCount": 0,
        "farmOngoingCount": 0,
        "farmFinishedCount": 0,
        "burnPercent": 99.9,
        "marketId": "8BnEgHoWFysVcuFFX7QztDmzuH8r5ZFvyP3sYwn1XTh6",
        "configId": "D4FPEruKEHrG5TenZ2mpDGEfu1iUvTiqBxvpU8HLBvC2",
        "lpMint": "8HoQnePLqPj4M7PUDzfw8e3Ymdwgc7NLGnaTUapubyvu",
        "lpPrice": 170.1,
        "lpAmount": 1.0e5,
    }


@dataclass
class Logged:
    t: float
    path: str
    query: dict[str, str]
    status: int


@dataclass
class FakeRaydium:
    pools: dict[str, dict] = field(default_factory=dict)
    null_pools: set[str] = field(default_factory=set)
    prices: dict[str, str | None] = field(default_factory=dict)
    script: deque = field(default_factory=deque)
    retry_after: str = "1"
    slow_s: float = 2.0
    requests: list[Logged] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int) -> FakeRaydium:
        app = web.Application()
        app.router.add_get("/pools/info/ids", self._pools)
        app.router.add_get("/mint/price", self._mint_price)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = port
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _pools(self, request: web.Request) -> web.StreamResponse:
        async def data():
            ids = request.query.get("ids", "").split(",")
            return [None if i in self.null_pools else self.pools.get(i) for i in ids]

        return await self._serve(request, data)

    async def _mint_price(self, request: web.Request) -> web.StreamResponse:
        async def data():
            mints = request.query.get("mints", "").split(",")
            return {m: self.prices.get(m) for m in mints}

        return await self._serve(request, data)

    async def _serve(self, request: web.Request, data) -> web.StreamResponse:
        response = await self._answer(request.path, data)
        self.requests.append(Logged(time.monotonic(), request.path, dict(request.query), response.status))
        return response

    async def _answer(self, path: str, data) -> web.StreamResponse:
        mode = None
        if self.script and self.script[0][0] in (path, "*"):
            mode = self.script.popleft()[1]
        if mode == "429":
            return web.Response(text="Too Many Requests", status=429, headers={"Retry-After": self.retry_after})
        if mode == "429-bare":
            return web.Response(text="Too Many Requests", status=429)
        if mode in ("500", "503"):
            return web.Response(text="<html>bad gateway</html>", status=int(mode), content_type="text/html")
        if mode == "malformed":
            return web.Response(text='{"id": "x", "success": tr', content_type="application/json")
        if mode is not None and mode.startswith("reject:"):
            return web.json_response({"id": str(uuid.uuid4()), "success": False, "msg": mode.removeprefix("reject:")})
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        elif mode is not None:
            raise ValueError(f"unknown fake mode {mode!r}")
        return web.json_response({"id": str(uuid.uuid4()), "success": True, "data": await data()})
