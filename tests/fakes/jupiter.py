"""A fake Jupiter swap/v1 quote API (venue-apis.md section 2.2) on 127.0.0.1.

``GET /swap/v1/quote`` prices every swap on one constant-product pool (raw integer reserves,
fee taken from the input), so quotes of different sizes and sides are consistent with each
other and price impact grows with size. It answers in the older route-plan schema
(``feeAmount``/``feeMint``, integer ``percent``) or the newer one (``percent`` null, ``bps``).

Failure modes:

* ``script``: a queue of one-shot failures, one consumed per request: ``"429"`` (with
  ``Retry-After: retry_after``), ``"429-bare"`` (no Retry-After), ``"500"``, ``"503"``,
  ``"slow"`` (sleeps ``slow_s`` before answering), ``"malformed"`` (a 200 that is not JSON),
  ``"shapeless"`` (a 200 JSON object without the documented amounts);
* ``no_route_amounts``: raw amounts answered with HTTP 400 ``COULD_NOT_FIND_ANY_ROUTE``;
* ``api_key``: if set, requests without that ``x-api-key`` get HTTP 401.

Every request is logged in ``requests`` (monotonic time, query, headers, status) and every
200 body in ``responses``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

WSOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"


@dataclass
class Logged:
    t: float
    query: dict[str, str]
    headers: dict[str, str]
    status: int


@dataclass
class FakeJupiter:
    base_reserve_raw: int = 10_000 * 10**9  # 10,000 SOL
    quote_reserve_raw: int = 1_500_000 * 10**6  # 1,500,000 USDC: 150 USDC per SOL
    fee_bps: int = 25
    schema: str = "new"  # "old" | "new"
    labels: tuple[str, ...] = ("Raydium CLMM",)
    script: deque = field(default_factory=deque)
    retry_after: str = "1"
    slow_s: float = 2.0
    no_route_amounts: set[int] = field(default_factory=set)
    api_key: str | None = None
    requests: list[Logged] = field(default_factory=list)
    responses: list[dict] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/swap/v1"

    async def start(self, port: int) -> FakeJupiter:
        app = web.Application()
        app.router.add_get("/swap/v1/quote", self._quote)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = port
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- the pool -------------------------------------------------------------------------

    def sell_out(self, base_in: int) -> int:
        """Quote raw units out for ``base_in`` raw base units in (ExactIn, fee on the input)."""
        net = base_in * (10_000 - self.fee_bps) // 10_000
        return self.quote_reserve_raw * net // (self.base_reserve_raw + net)

    def buy_in(self, base_out: int) -> int:
        """Quote raw units in for exactly ``base_out`` raw base units out (ExactOut), rounded up."""
        net = -(-self.quote_reserve_raw * base_out // (self.base_reserve_raw - base_out))
        return -(-net * 10_000 // (10_000 - self.fee_bps))

    # --- the handler ----------------------------------------------------------------------

    async def _quote(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        response = await self._answer(request, query)
        self.requests.append(Logged(time.monotonic(), query, dict(request.headers), response.status))
        return response

    async def _answer(self, request: web.Request, q: dict[str, str]) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return web.json_response({"error": "Unauthorized"}, status=401)
        if self.script:
            mode = self.script.popleft()
            if mode == "429":
                return web.json_response({"error": "Too many requests"}, status=429, headers={"Retry-After": self.retry_after})
            if mode == "429-bare":
                return web.json_response({"error": "Too many requests"}, status=429)
            if mode in ("500", "503"):
                return web.Response(text="upstream error", status=int(mode))
            if mode == "slow":
                await asyncio.sleep(self.slow_s)
            elif mode == "malformed":
                return web.Response(text='{"inputMint": "So1', content_type="application/json")
            elif mode == "shapeless":
                return web.json_response({"inputMint": q["inputMint"], "outputMint": q["outputMint"], "outAmount": 5})
            else:
                raise ValueError(f"unknown fake mode {mode!r}")
        amount = int(q["amount"])
        mode = q.get("swapMode", "ExactIn")
        if amount in self.no_route_amounts:
            return web.json_response(
                {"error": "Could not find any route", "errorCode": "COULD_NOT_FIND_ANY_ROUTE"}, status=400
            )
        if mode == "ExactIn" and q["inputMint"] == WSOL:
            raw_in, raw_out, impact = amount, self.sell_out(amount), amount / (self.base_reserve_raw + amount)
        elif mode == "ExactOut" and q["outputMint"] == WSOL:
            raw_in, raw_out, impact = self.buy_in(amount), amount, amount / (self.base_reserve_raw - amount)
        else:
            return web.json_response({"error": "Token not tradable", "errorCode": "TOKEN_NOT_TRADABLE"}, status=400)
        body = self._body(q, mode, raw_in, raw_out, impact)
        self.responses.append(body)
        return web.json_response(body)

    def _body(self, q: dict[str, str], mode: str, raw_in: int, raw_out: int, impact: float) -> dict:
        slippage = int(q.get("slippageBps", "50"))
        threshold = raw_out * (10_000 - slippage) // 10_000 if mode == "ExactIn" else raw_in * (10_000 + slippage) // 10_000
        return {
            "inputMint": q["inputMint"],
            "inAmount": str(raw_in),
            "outputMint": q["outputMint"],
            "outAmount": str(raw_out),
            "otherAmountThreshold": str(threshold),
            "swapMode": mode,
            "slippageBps": slippage,
            "platformFee": None,
            "priceImpactPct": repr(impact),
            "routePlan": self._route_plan(q["inputMint"], q["outputMint"], raw_in, raw_out),
            "contextSlot": 300_000_000 + len(self.responses),
            "timeTaken": 0.0012,
        }

    def _route_plan(self, input_mint: str, output_mint: str, raw_in: int, raw_out: int) -> list[dict]:
        """One step per label, chained through USDT when there are several (the USDT leg
        carries the quote amount, both tokens having 6 decimals)."""
        n = len(self.labels)
        mints = [input_mint] + [USDT] * (n - 1) + [output_mint]
        amounts = [raw_in] + [raw_out if input_mint == WSOL else raw_in] * (n - 1) + [raw_out]
        steps = []
        for i, label in enumerate(self.labels):
            info = {
                "ammKey": f"AmmKey{i}{label.replace(' ', '')}",
                "label": label,
                "inputMint": mints[i],
                "outputMint": mints[i + 1],
                "inAmount": str(amounts[i]),
                "outAmount": str(amounts[i + 1]),
            }
            if self.schema == "old":
                info["feeAmount"] = str(amounts[i] * self.fee_bps // 10_000)
                info["feeMint"] = mints[i]
                steps.append({"swapInfo": info, "percent": 100})
            else:
                steps.append({"swapInfo": info, "percent": None, "bps": 10_000})
        return steps
