"""Per-client rate limit for the venue selector, shared by all of an application's replicas.

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

The client is the address ``serve.client_address`` resolves: the TCP peer, or what a
trusted proxy (``serve.trusted_proxies``) forwarded.

Supervision. Ray restarts the limiter whenever its process dies (``max_restarts=-1``). It
comes back with full buckets, which it cannot rebuild: what clients spent in the last
``burst / requests_per_s`` seconds is forgotten, so each may get one extra burst. Its
settings it gets back from the replicas, which see its new ``epoch`` in the next answer and
send theirs again (a redeploy may have changed them since the actor was created). Ray
retries only its idempotent methods (``configure``, ``settings``); ``admit`` is not retried,
since a retried admit could take a client's token twice.

While the limiter cannot be reached (its call fails, or takes over ``CALL_TIMEOUT_S``), each
replica limits on its own, with a local bucket per client of ``1 / replicas`` of the rate
and of the burst, and probes the limiter in the background until it answers again. That
keeps the service up through a restart (a few seconds), and the limit never looser than the
shared one: however the proxy spreads a client over the replicas, their shares add up to at
most the shared rate. Refusing everything with 503 instead would make the limiter's crash
the whole API's outage, for no gain in what a client can do.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable

import ray

from actors import names
from serve.asgi import relative_path, send_json
from serve.client_address import ClientAddress

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/v1/healthz"})
LEASE_S = 0.25  # how long a replica may hold leased tokens before it gives them back
CALL_TIMEOUT_S = 1.0  # an admit call slower than this counts as the limiter being unreachable
PROBE_INTERVAL_S = 0.2  # while it is, how often a replica asks it again
IDEMPOTENT_RETRIES = 3


def limiter_name(app_name: str) -> str:
    return f"serve-rate-limiter:{app_name}"


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens at most, refilled at ``rate`` per second; a
    request takes one. Buckets that have refilled completely are forgotten (a new bucket
    is the same), so the table holds only clients seen in the last ``burst / rate`` seconds."""

    def __init__(self, rate: float, burst: int, replicas: int = 1, clock: Callable[[], float] = time.monotonic,
                 lease_s: float = LEASE_S) -> None:
        self.clock = clock
        self.lease_s = lease_s  # 0: never lease (a replica's own buckets)
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
        max_lease = math.floor(self.rate * self.lease_s)
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
    """The shared buckets of one application; supervised by Ray (module docstring)."""

    def __init__(self, rate: float, burst: int, replicas: int) -> None:
        self.epoch = uuid.uuid4().hex  # new on every (re)start: tells the replicas it came back
        self.buckets = TokenBuckets(rate, burst, replicas)

    @ray.method(max_task_retries=IDEMPOTENT_RETRIES)
    def configure(self, rate: float, burst: int, replicas: int) -> dict:
        self.buckets.configure(rate, burst, replicas)
        return self.settings_now()

    @ray.method(max_task_retries=0)  # not idempotent: a retry could take a token twice
    def admit(self, keys: list[str], returned: dict[str, int] | None = None) -> tuple[str, list[tuple[float, int]]]:
        return self.epoch, self.buckets.admit(keys, returned)

    @ray.method(max_task_retries=IDEMPOTENT_RETRIES)
    def settings(self) -> dict:
        return self.settings_now()

    def settings_now(self) -> dict:
        b = self.buckets
        return {"requests_per_s": b.rate, "burst": b.burst, "replicas": b.replicas, "clients": len(b), "epoch": self.epoch}


async def _within(call, timeout: float):
    """``await call`` (an ObjectRef), or ``asyncio.TimeoutError`` after ``timeout`` seconds.
    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that meets the
    call's own failure, which would leave a probe running after its replica shut down."""
    future = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if not done:
        future.cancel()
        raise asyncio.TimeoutError
    return future.result()


def _limiter_handle(app_name: str, rate: float, burst: int, replicas: int):
    return RateLimiter.options(
        name=limiter_name(app_name), namespace=names.NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(rate, burst, replicas)


async def connect_limiter(app_name: str, rate: float, burst: int, replicas: int) -> Admission:
    """A replica's ``Admission`` to the application's limiter actor, created if missing and
    set to ``rate``/``burst`` (a redeploy with another setting applies it to the running actor)."""
    actor = _limiter_handle(app_name, rate, burst, replicas)
    settings = await actor.configure.remote(rate, burst, replicas)

    async def reconnect():
        return _limiter_handle(app_name, rate, burst, replicas)

    return Admission(actor, rate, burst, replicas, reconnect, epoch=settings["epoch"])


def stop_limiter(app_name: str) -> bool:
    try:
        actor = ray.get_actor(limiter_name(app_name), namespace=names.NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor)
    return True


class Admission:
    """A replica's side of the limiter: leased tokens and known refusals answered locally,
    the other checks sharing one actor call; its own buckets while the limiter is away."""

    def __init__(self, actor, rate: float, burst: int, replicas: int,
                 reconnect: Callable[[], Awaitable[object]] | None = None, epoch: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._actor = actor
        self._settings = (rate, burst, replicas)
        self._reconnect = reconnect
        self._epoch = epoch
        self._clock = clock
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._sending = False
        self._leased: dict[str, list] = {}  # key -> [tokens, given back at]
        self._refused: dict[str, float] = {}  # key -> refused until
        self._returns: dict[str, int] = {}
        self._give_back: asyncio.TimerHandle | None = None
        self._local: TokenBuckets | None = None  # set while the limiter is unreachable
        self._down_since: float | None = None
        self._down_reason = ""
        self.calls = 0  # actor calls made (for tests and the benchmark)
        self.fallbacks = 0  # times the limiter was found unreachable

    @property
    def state(self) -> str:
        """``shared``, or why this replica limits on its own (for /v1/healthz)."""
        if self._local is None:
            return "shared"
        return f"local: the shared limiter is unreachable ({self._down_reason}) since {self._clock() - self._down_since:.1f} s"

    async def check(self, key: str) -> float:
        """0.0 if admitted, else the seconds to wait."""
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
        if self._local is not None:
            return self._local.admit([key])[0][0]
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
                if lease[0] >= 1 and self._local is None:
                    self._returns[key] = self._returns.get(key, 0) + int(lease[0])
                del self._leased[key]
        self._refused = {k: t for k, t in self._refused.items() if t > now}
        if self._returns:
            self._start_sending()
        if self._leased:
            self._give_back = asyncio.get_running_loop().call_later(LEASE_S, self._expire)

    async def _send(self) -> None:
        try:
            while (self._pending or self._returns) and self._local is None:
                batch, self._pending = self._pending, []
                returns, self._returns = self._returns, {}
                try:
                    self.calls += 1
                    ref = self._actor.admit.remote([key for key, _ in batch], returns or None)
                    epoch, answers = await _within(ref, CALL_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001  (any Ray failure, or the timeout: "cannot tell")
                    self._fall_back(exc)
                    for key, future in batch:
                        if not future.done():
                            future.set_result(self._local.admit([key])[0][0])
                    break
                if epoch != self._epoch:
                    self._came_back(epoch)
                self._apply(batch, answers)
        finally:
            self._sending = False
        for key, future in self._pending:  # queued while the limiter was found away
            if not future.done():
                future.set_result(self._local.admit([key])[0][0] if self._local is not None else 0.0)
        self._pending = []

    def _apply(self, batch: list[tuple[str, asyncio.Future]], answers: list[tuple[float, int]]) -> None:
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

    # --- supervision -----------------------------------------------------------------

    def _fall_back(self, exc: BaseException) -> None:
        rate, burst, replicas = self._settings
        self._local = TokenBuckets(rate / replicas, max(1, burst // replicas), clock=self._clock, lease_s=0)
        self._down_since = self._clock()
        self._down_reason = "no answer in time" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        self._returns.clear()  # tokens lent by a limiter that is gone: a restarted one starts full
        self.fallbacks += 1
        log.warning("the shared rate limiter is unreachable (%s): this replica limits on its own until it answers", self._down_reason)
        asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Ask the limiter until it answers; then send it this replica's settings (it may be
        a restarted actor with its constructor's) and go back to the shared buckets."""
        while True:
            try:
                settings = await _within(self._actor.settings.remote(), CALL_TIMEOUT_S)
                rate, burst, replicas = self._settings
                if (settings["requests_per_s"], settings["burst"], settings["replicas"]) != (rate, burst, replicas):
                    settings = await _within(self._actor.configure.remote(rate, burst, replicas), CALL_TIMEOUT_S)
                break
            except ray.exceptions.ActorDiedError:
                if self._reconnect is not None:  # gone for good (killed without restart): make it anew
                    try:
                        self._actor = await self._reconnect()
                    except Exception as exc:  # noqa: BLE001
                        log.warning("the rate limiter cannot be recreated yet: %s", type(exc).__name__)
            except Exception:  # noqa: BLE001  (still restarting, or slow)
                pass
            await asyncio.sleep(PROBE_INTERVAL_S)
        self._epoch = settings["epoch"]
        log.warning("the shared rate limiter answers again after %.1f s", self._clock() - self._down_since)
        self._local = None
        self._down_since = None
        if self._pending:
            self._start_sending()

    def _came_back(self, epoch: str) -> None:
        """The limiter restarted between two calls: it has its constructor's settings again."""
        known = self._epoch is not None
        self._epoch = epoch
        if known:
            self._actor.configure.remote(*self._settings)  # idempotent; Ray retries it


class RateLimitMiddleware:
    """ASGI middleware: every HTTP request but the health check passes the limiter first,
    keyed on the client ``client_address`` resolves.

    ``admission`` is looked up per request (``get_admission()``) because the replica sets it
    up after the app object exists; ``on_reject`` counts refusals in the metrics."""

    def __init__(self, app, get_admission: Callable[[], Admission], client_address: ClientAddress, rate: float,
                 on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.get_admission = get_admission
        self.client_address = client_address
        self.rate = rate
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or relative_path(scope) in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        key = self.client_address(scope)
        wait = await self.get_admission().check(key)
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
