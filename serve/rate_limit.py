"""Per-client-IP rate limit for the venue selector, shared by all of an application's replicas.

The token buckets live in one named, detached Ray actor per Serve application
(``serve-rate-limiter:<app>`` in namespace ``botmain``), so a client that the proxy spreads
over several replicas still gets ``requests_per_s`` in total, not per replica.

A Ray call costs about as much CPU as Serve's own work for a small request here, so a
replica avoids one per request three ways, none of which lets a client past its limit:

* batching: the checks of every request that arrives while a call is in flight go out
  together as the next call (one call in flight per replica);
* leases: with a request the actor may hand the replica spare tokens of that client's
  bucket, at most a quarter of what is left divided among the replicas and at most
  ``LEASE_S`` worth of the rate, which the replica spends locally for ``LEASE_S`` and then
  gives back. They are taken from the shared bucket, so the total never exceeds it; a small
  bucket (the shipped burst of 5 over 2 replicas) is never leased from, so every check there
  is exact;
* refusals: after a 429 the replica refuses that client locally until the bucket can have
  a token again (a bucket only gains tokens with time, or by a lease coming back).

The client is the TCP peer the proxy saw (``scope["client"]``); ``X-Forwarded-For`` is not
trusted: any client could write it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import ray

from actors import names
from serve.asgi import relative_path, send_json

EXEMPT_PATHS = frozenset({"/v1/healthz"})
LEASE_S = 0.25  # how long a replica may hold leased tokens before it gives them back


def limiter_name(app_name: str) -> str:
    return f"serve-rate-limiter:{app_name}"


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens at most, refilled at ``rate`` per second; a
    request takes one. Buckets that have refilled completely are forgotten (a new bucket
    is the same), so the table holds only clients seen in the last ``burst / rate`` seconds."""

    def __init__(self, rate: float, burst: int, replicas: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._last_sweep = clock()
        self.configure(rate, burst, replicas)

    def configure(self, rate: float, burst: int, replicas: int = 1) -> None:
        if rate <= 0 or burst < 1 or replicas < 1:
            raise ValueError(f"a rate limit needs rate > 0, burst >= 1 and replicas >= 1, got {rate}, {burst}, {replicas}")
        self.rate = float(rate)
        self.burst = int(burst)
        self.replicas = int(replicas)
        self._buckets = {k: (min(tokens, self.burst), at) for k, (tokens, at) in self._buckets.items()}

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def admit(self, keys: list[str], returned: dict[str, int] | None = None) -> list[tuple[float, int]]:
        """For each key in order: ``(0.0, lease)`` if admitted, with ``lease`` spare tokens
        handed out, else ``(seconds until a token is there, 0)``. ``returned``: leased tokens
        given back unused."""
        now = self.clock()
        for key, n in (returned or {}).items():
            self._buckets[key] = (min(self.burst, self._tokens(key, now) + n), now)
        out = []
        max_lease = math.floor(self.rate * LEASE_S)
        for key in keys:
            tokens = self._tokens(key, now)
            if tokens >= 1.0:
                tokens -= 1.0
                lease = min(math.floor(tokens / (4 * self.replicas)), max_lease)
                self._buckets[key] = (tokens - lease, now)
                out.append((0.0, lease))
            else:
                self._buckets[key] = (tokens, now)
                out.append(((1.0 - tokens) / self.rate, 0))
        if now - self._last_sweep > self.burst / self.rate:
            self._sweep(now)
        return out

    def _sweep(self, now: float) -> None:
        self._buckets = {k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * self.rate < self.burst}
        self._last_sweep = now

    def __len__(self) -> int:
        return len(self._buckets)


@ray.remote(num_cpus=0, max_restarts=-1)
class RateLimiter:
    """The shared buckets of one application (a restart forgets them: clients get a fresh burst)."""

    def __init__(self, rate: float, burst: int, replicas: int) -> None:
        self.buckets = TokenBuckets(rate, burst, replicas)

    def configure(self, rate: float, burst: int, replicas: int) -> None:
        self.buckets.configure(rate, burst, replicas)

    def admit(self, keys: list[str], returned: dict[str, int] | None = None) -> list[tuple[float, int]]:
        return self.buckets.admit(keys, returned)

    def settings(self) -> dict:
        b = self.buckets
        return {"requests_per_s": b.rate, "burst": b.burst, "replicas": b.replicas, "clients": len(b)}


async def connect_limiter(app_name: str, rate: float, burst: int, replicas: int):
    """The application's limiter actor, created if missing, set to ``rate``/``burst`` (a
    redeploy with another setting applies it to the running actor)."""
    actor = RateLimiter.options(
        name=limiter_name(app_name), namespace=names.NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(rate, burst, replicas)
    await actor.configure.remote(rate, burst, replicas)
    return actor


def stop_limiter(app_name: str) -> bool:
    try:
        actor = ray.get_actor(limiter_name(app_name), namespace=names.NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor)
    return True


class LimiterUnavailable(RuntimeError):
    """The limiter actor could not be reached: requests are refused (503), not let through."""


class Admission:
    """A replica's side of the limiter: leased tokens and known refusals answered locally,
    the other checks sharing one actor call."""

    def __init__(self, actor, clock: Callable[[], float] = time.monotonic) -> None:
        self._actor = actor
        self._clock = clock
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._sending = False
        self._leased: dict[str, list] = {}  # key -> [tokens, given back at]
        self._refused: dict[str, float] = {}  # key -> refused until
        self._returns: dict[str, int] = {}
        self._give_back: asyncio.TimerHandle | None = None
        self.calls = 0  # actor calls made (for tests and the benchmark)

    async def check(self, key: str) -> float:
        """0.0 if admitted, else the seconds to wait; raises ``LimiterUnavailable``."""
        now = self._clock()
        lease = self._leased.get(key)
        if lease is not None and lease[0] >= 1 and now < lease[1]:
            lease[0] -= 1
            return 0.0
        until = self._refused.get(key)
        if until is not None:
            if now < until:
                return until - now
            del self._refused[key]
        future = asyncio.get_running_loop().create_future()
        self._pending.append((key, future))
        self._start_sending()
        return await future

    def _start_sending(self) -> None:
        if not self._sending:
            self._sending = True
            asyncio.get_running_loop().create_task(self._send())

    def _expire(self) -> None:
        """Leases past their time go back with the next call (made now if nothing is pending)."""
        self._give_back = None
        now = self._clock()
        for key, lease in list(self._leased.items()):
            if now >= lease[1]:
                if lease[0] >= 1:
                    self._returns[key] = self._returns.get(key, 0) + int(lease[0])
                del self._leased[key]
        self._refused = {k: t for k, t in self._refused.items() if t > now}
        if self._returns:
            self._start_sending()
        if self._leased:
            self._give_back = asyncio.get_running_loop().call_later(LEASE_S, self._expire)

    async def _send(self) -> None:
        try:
            while self._pending or self._returns:
                batch, self._pending = self._pending, []
                returns, self._returns = self._returns, {}
                try:
                    self.calls += 1
                    answers = await self._actor.admit.remote([key for key, _ in batch], returns or None)
                except Exception as exc:  # noqa: BLE001  (any Ray failure means "cannot tell")
                    error = LimiterUnavailable(f"the rate limiter is unavailable: {type(exc).__name__}")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                now = self._clock()
                for (key, future), (wait, lease) in zip(batch, answers):
                    if wait > 0:
                        self._refused[key] = max(self._refused.get(key, 0.0), now + wait)
                    elif lease:
                        held = self._leased.get(key)
                        if held is not None and now < held[1]:
                            held[0] += lease
                        else:
                            if held is not None and held[0] >= 1:  # expired, not yet given back
                                self._returns[key] = self._returns.get(key, 0) + int(held[0])
                            self._leased[key] = [lease, now + LEASE_S]
                            if self._give_back is None:
                                self._give_back = asyncio.get_running_loop().call_later(LEASE_S, self._expire)
                    if not future.done():
                        future.set_result(wait)
                if len(self._refused) > 10_000:  # many clients refused once: forget the past ones
                    self._refused = {k: t for k, t in self._refused.items() if t > now}
        finally:
            self._sending = False


class RateLimitMiddleware:
    """ASGI middleware: every HTTP request but the health check passes the limiter first.

    ``admission`` is looked up per request (``get_admission()``) because the replica sets it
    up after the app object exists; ``on_reject`` counts refusals in the metrics."""

    def __init__(self, app, get_admission: Callable[[], Admission], rate: float, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.get_admission = get_admission
        self.rate = rate
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or relative_path(scope) in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        client = scope.get("client")
        key = client[0] if client else "unknown"
        try:
            wait = await self.get_admission().check(key)
        except LimiterUnavailable as exc:
            self.on_reject("limiter_unavailable")
            return await send_json(send, 503, {"error": "temporarily_unavailable", "error_description": str(exc)},
                                    {"Retry-After": "1"})
        if wait > 0:
            self.on_reject("rate_limited")
            retry = max(1, math.ceil(wait))
            return await send_json(
                send, 429,
                {"error": "rate_limited",
                 "error_description": f"over {self.rate:g} requests/s from {key}; retry after {retry} s"},
                {"Retry-After": str(retry)},
            )
        return await self.app(scope, receive, send)
