"""The feed template: every source (replay, Drift, Jupiter, Raydium, CEX, Solana, news) is a
``Feed`` subclass with the same shape, run by the same ``FeedRunner``.

A subclass implements ``session()``: connect, subscribe, then loop, normalising what the
source sends into domain events (venue precisions are converted here, at the edge) and
handing them to ``self.out.emit``. A session that raises is over: the runner counts the
error under its kind, waits (the venue's Retry-After, else exponential backoff) and starts
a new session. A session that returns means the source is exhausted (a replay at its end).
Errors that concern one request only (no route for one size) are reported with
``self.out.error(exc)`` and the session carries on.

``FeedOutput`` batches adaptively: an event goes out at once if the last batch left at
least ``flush_interval_ms`` ago and fewer than ``max_inflight`` batches await the MDS's
acknowledgement; otherwise events accumulate and leave together when the interval has
passed and a slot is free (or at once when ``batch_max`` are waiting). A quiet feed pays no
waiting; a busy one sends at most one batch per interval, so the Ray call rate (each call
costs about a millisecond of CPU on a small machine) stays bounded whatever the event
rate. Waiting for a free slot before sending a full batch is the back-pressure that keeps a
fast replay from outrunning the Market Data Server.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp

from actors.feeds.errors import (
    FeedConfigError,
    FeedError,
    FeedTimeout,
    RateLimited,
    StreamDropped,
    VenueRejected,
    VenueUnavailable,
)
from actors.feeds.http import retry_after_seconds
from cluster.config import BotmainConfig
from cluster.config.models import FeedConfig, ListingConfig
from cluster.domain import MarketKind
from cluster.events import EventBatch

log = logging.getLogger(__name__)

Publish = Callable[[EventBatch], Awaitable[None]]


@dataclass
class FeedHealth:
    """What ``botmain status`` and the metrics show for one feed."""

    feed: str
    state: str = "starting"  # starting | connected | reconnecting | finished | failed | stopped
    events: int = 0
    batches: int = 0
    last_event_ts_ns: int = 0  # event time of the newest event published
    last_event_wall_ns: int = 0  # wall time when it was produced
    lag_s: float | None = None  # produced - event time, for the newest event (live feeds)
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    reconnects: int = 0
    retry_in_s: float | None = None
    started_wall_ns: int = field(default_factory=time.time_ns)

    def count_error(self, exc: BaseException) -> None:
        kind = getattr(exc, "kind", None) or type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = f"{kind}: {exc}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeedOutput:
    """Where a session's events go: batched, paced, with bounded in-flight batches."""

    def __init__(self, publish: Publish, settings: FeedConfig, health: FeedHealth, source: str) -> None:
        self._publish = publish
        self._settings = settings
        self._health = health
        self._source = source
        self._buffer: list = []
        self._first_emitted_ns = 0
        self._cursor: int | None = None  # the source's position after the buffer's last event
        self._inflight: collections.deque[asyncio.Future] = collections.deque()
        self._interval_s = settings.flush_interval_ms / 1000.0
        self._last_send = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._last_send = 0.0

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()
        while self._inflight:
            await self._inflight.popleft()

    async def emit(self, event: Any) -> None:
        if not self._buffer:
            self._first_emitted_ns = time.time_ns()
        self._buffer.append(event)
        await self._send_or_schedule()

    async def emit_many(self, events: list, cursor: int | None = None) -> None:
        """Hand over events already in event-time order (a replay's slice); ``cursor`` is
        where the source stands after them (it can resume there: ``Feed.resume_at``)."""
        if cursor is not None:
            self._cursor = cursor
        if not events:
            return
        if not self._buffer:
            self._first_emitted_ns = time.time_ns()
        self._buffer.extend(events)
        await self._send_or_schedule()

    async def _send_or_schedule(self) -> None:
        if len(self._buffer) >= self._settings.batch_max:
            await self.flush()  # a full batch waits for a free slot: back-pressure
        elif self._has_free_slot() and time.monotonic() >= self._last_send + self._interval_s:
            await self.flush()
        else:
            self._schedule()

    def _has_free_slot(self) -> bool:
        while self._inflight and self._inflight[0].done():
            self._inflight.popleft().result()  # a failed publish raises here and ends the session
        return len(self._inflight) < self._settings.max_inflight

    def _schedule(self) -> None:
        """Send the buffer once the pacing interval since the last send has passed."""
        if self._timer is not None or not self._buffer:
            return
        delay = max(self._last_send + self._interval_s - time.monotonic(), 0.0)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._buffer and len(self._inflight) < self._settings.max_inflight:
            asyncio.get_running_loop().create_task(self._flush_quietly())
        # else: the next acknowledgement reschedules

    def _acknowledged(self, _: asyncio.Future) -> None:
        self._schedule()

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # the session's next emit or flush raises it again
            log.debug("paced flush failed: %s", exc)

    def error(self, exc: BaseException) -> None:
        """Record a failure that ends one request, not the session."""
        self._health.count_error(exc)
        log.warning("feed %s: %s", self._health.feed, exc)

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            events, self._buffer = self._buffer, []
            batch = EventBatch(events, self._first_emitted_ns, self._source, self._cursor)
            while len(self._inflight) >= self._settings.max_inflight:
                await self._inflight.popleft()  # back-pressure: wait for the oldest batch's ack
            self._last_send = time.monotonic()
            future = asyncio.ensure_future(self._publish(batch))
            future.add_done_callback(self._acknowledged)
            self._inflight.append(future)
            last = events[-1]
            h = self._health
            h.events += len(events)
            h.batches += 1
            h.last_event_wall_ns = time.time_ns()
            h.last_event_ts_ns = getattr(last, "ts_ns", 0)
            if h.last_event_ts_ns:
                h.lag_s = (h.last_event_wall_ns - h.last_event_ts_ns) / 1e9
        # A failed publish surfaces here, on the next flush, and ends the session.
        while self._inflight and self._inflight[0].done():
            self._inflight.popleft().result()


class Feed(ABC):
    """One source. Subclasses set ``name`` and implement ``session``."""

    name: str = ""

    def __init__(self, config: BotmainConfig, settings: FeedConfig) -> None:
        self.config = config
        self.settings = settings
        self.out: FeedOutput  # set by the runner before each session

    @abstractmethod
    async def session(self) -> None:
        """Connect, subscribe and publish until the source ends (return) or fails (raise)."""

    async def close(self) -> None:
        """Release connections; called after every session."""

    def status(self) -> dict[str, Any]:
        """Extra, feed-specific state for ``botmain status`` (subscriptions, markets...)."""
        return {}

    def listing(
        self, where: str, symbol: str, venue: str, kind: MarketKind, needs: tuple[str, ...] = ()
    ) -> ListingConfig:
        """``symbol``'s listing on ``venue`` in venues.yaml, checked: the instrument exists,
        is of ``kind``, is listed on ``venue`` and the listing sets every field in ``needs``.
        Anything else is a FeedConfigError that starts with ``where`` (the settings key)."""
        by_symbol = {inst.symbol: inst for inst in self.config.venues.instruments}
        inst = by_symbol.get(symbol)
        if inst is None:
            raise FeedConfigError(f"{where}: {symbol!r} is not an instrument in venues.yaml (known: {', '.join(sorted(by_symbol))})")
        if inst.kind is not kind:
            raise FeedConfigError(f"{where}: {symbol!r} is a {inst.kind.value} market; the {venue} feed reads {kind.value} markets")
        listing = inst.listings.get(venue)
        if listing is None:
            raise FeedConfigError(
                f"{where}: {symbol!r} is not listed on {venue} in venues.yaml (listed on: {', '.join(sorted(inst.listings))})"
            )
        missing = [name for name in needs if getattr(listing, name) is None]
        if missing:
            raise FeedConfigError(f"{where}: venues.yaml listing {venue}:{symbol} needs {' and '.join(missing)}")
        return listing


def classify(exc: BaseException) -> FeedError:
    """Library exceptions, as the FeedError kinds the runner counts."""
    if isinstance(exc, FeedError):
        return exc
    if isinstance(exc, asyncio.TimeoutError):
        return FeedTimeout(f"timed out: {exc}")
    if isinstance(exc, (aiohttp.ClientError, ConnectionError, OSError)):
        return VenueUnavailable(f"{type(exc).__name__}: {exc}")
    try:
        from websockets.exceptions import ConnectionClosed, InvalidStatusCode

        if isinstance(exc, ConnectionClosed):
            return StreamDropped(f"websocket closed: {exc}")
        if isinstance(exc, InvalidStatusCode):  # the HTTP upgrade was refused
            status = exc.status_code
            if status == 429:
                return RateLimited("websocket upgrade: HTTP 429", retry_after_seconds(exc.headers.get("Retry-After")))
            if status >= 500:
                return VenueUnavailable(f"websocket upgrade: HTTP {status}")
            return VenueRejected(f"websocket upgrade: HTTP {status}", status=status)
    except ImportError:  # pragma: no cover - websockets ships with the stack
        pass
    error = FeedError(f"unexpected {type(exc).__name__}: {exc}")
    error.kind = "unexpected"
    return error


class FeedRunner:
    """Runs a feed's sessions forever: reconnect with backoff, honour Retry-After, keep health."""

    def __init__(self, feed: Feed, publish: Publish) -> None:
        self.feed = feed
        self.publish = publish
        self.health = FeedHealth(feed.name)
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> FeedHealth:
        backoff = self.feed.settings.backoff
        delay = backoff.initial_s
        while not self._stopped.is_set():
            out = FeedOutput(self.publish, self.feed.settings, self.health, self.feed.name)
            self.feed.out = out
            events_before = self.health.events
            self.health.state = "connected"
            self.health.retry_in_s = None
            out.start()
            try:
                await self.feed.session()
                await out.close()
                self.health.state = "finished"
                return self.health
            except asyncio.CancelledError:
                self.health.state = "stopped"
                raise
            except Exception as raw:
                exc = classify(raw)
                self.health.count_error(exc)
                if exc.kind == "unexpected":
                    log.exception("feed %s: unexpected failure, reconnecting", self.feed.name, exc_info=raw)
                else:
                    log.warning("feed %s: %s", self.feed.name, exc)
                try:
                    await out.close()
                except Exception as publish_exc:
                    self.health.count_error(classify(publish_exc))
                if isinstance(exc, FeedConfigError):
                    self.health.state = "failed"
                    return self.health
            finally:
                await self.feed.close()
            if self.health.events > events_before:
                delay = backoff.initial_s  # that session worked: start the backoff over
            wait = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after is not None else delay
            delay = min(delay * 2, backoff.max_s)
            self.health.state = "reconnecting"
            self.health.reconnects += 1
            self.health.retry_in_s = wait
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
        self.health.state = "stopped"
        return self.health
