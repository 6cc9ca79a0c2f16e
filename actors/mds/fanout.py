"""Relaying events to subscribed strategy actors, in batches, without blocking the feeds.

Each subscriber has a filter (event kinds, symbols or venue:SYMBOL keys, signal names) and a
queue. A batch goes out at once if the subscriber's last batch left at least ``interval_s``
ago and it has fewer than ``MAX_INFLIGHT`` batches unacknowledged (or ``batch_max`` events
wait); otherwise events queue and leave together, so a busy stream gets bigger batches
rather than more calls and a quiet one waits for nothing. Past ``max_pending`` queued
events the oldest are dropped, counted per subscriber and logged: a slow strategy never
slows the market data path or the other subscribers. A subscriber whose deliveries fail
``MAX_FAILURES`` times in a row (its actor died) is removed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from cluster.events import KIND_OF, KINDS, EventBatch

log = logging.getLogger(__name__)

MAX_INFLIGHT = 2
MAX_FAILURES = 3
Deliver = Callable[[EventBatch], Awaitable[None]]


@dataclass
class Subscription:
    name: str
    deliver: Deliver
    kinds: frozenset[str] | None = None
    symbols: frozenset[str] | None = None  # "SOL-PERP" (every venue) or "drift:SOL-PERP"
    signals: frozenset[str] | None = None  # signal names; None = every signal
    pending: list = field(default_factory=list)
    # (emitted_ns, events) per queued add, oldest first: each batch carries the production
    # time of its oldest event, so latency is never understated.
    segments: collections.deque = field(default_factory=collections.deque)
    inflight: int = 0
    delivered: int = 0
    batches: int = 0
    dropped: int = 0
    failures: int = 0
    last_error: str | None = None
    last_send: float = 0.0  # monotonic
    timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        if self.kinds is not None:
            unknown = sorted(set(self.kinds) - KINDS)
            if unknown:
                raise ValueError(f"subscription {self.name}: unknown event kind(s) {unknown} (known: {sorted(KINDS)})")

    def wants(self, event, kind: str) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        if kind == "signal":
            return self.signals is None or event.name in self.signals
        if self.symbols is None:
            return True
        key = getattr(event, "instrument", None)
        if isinstance(key, str):
            return key in self.symbols or key.partition(":")[2] in self.symbols
        if kind == "best":
            return event.symbol in self.symbols
        if kind == "news":
            return any(s in self.symbols for s in event.instruments)
        return True  # venue status, chain events: not about one instrument

    def status(self) -> dict:
        return {
            "name": self.name,
            "kinds": sorted(self.kinds) if self.kinds else None,
            "symbols": sorted(self.symbols) if self.symbols else None,
            "pending": len(self.pending),
            "inflight": self.inflight,
            "delivered": self.delivered,
            "batches": self.batches,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }


class Fanout:
    def __init__(
        self,
        batch_max: int,
        max_pending: int,
        interval_s: float = 0.005,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.batch_max = batch_max
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.subscriptions: dict[str, Subscription] = {}
        self._on_drop = on_drop or (lambda name, n: None)
        self._tasks: set[asyncio.Task] = set()

    def subscribe(self, sub: Subscription) -> None:
        self.subscriptions[sub.name] = sub

    def unsubscribe(self, name: str) -> bool:
        return self.subscriptions.pop(name, None) is not None

    def add(self, events: list, emitted_ns: int) -> None:
        """Queue ``events`` (produced by their feed no earlier than ``emitted_ns``) for every
        subscriber that wants them, and send what can be sent now."""
        if not self.subscriptions or not events:
            return
        kinds = [KIND_OF[type(e)] for e in events]
        for sub in list(self.subscriptions.values()):
            if sub.kinds is None and sub.symbols is None and sub.signals is None:
                chosen = events
            else:
                chosen = [e for e, k in zip(events, kinds) if sub.wants(e, k)]
            if not chosen:
                continue
            sub.pending.extend(chosen)
            sub.segments.append([emitted_ns, len(chosen)])
            overflow = len(sub.pending) - self.max_pending
            if overflow > 0:
                del sub.pending[:overflow]
                _consume(sub.segments, overflow)
                sub.dropped += overflow
                self._on_drop(sub.name, overflow)
                log.warning("subscriber %s is %d events behind: dropped its oldest %d", sub.name, self.max_pending, overflow)
            self._send(sub)

    def _send(self, sub: Subscription) -> None:
        while sub.pending and sub.inflight < MAX_INFLIGHT and sub.name in self.subscriptions:
            if len(sub.pending) < self.batch_max and time.monotonic() < sub.last_send + self.interval_s:
                self._schedule(sub)
                return
            sub.last_send = time.monotonic()
            events, sub.pending = sub.pending[: self.batch_max], sub.pending[self.batch_max :]
            batch = EventBatch(events, sub.segments[0][0], "mds")
            _consume(sub.segments, len(events))
            sub.inflight += 1
            task = asyncio.get_running_loop().create_task(self._deliver(sub, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _schedule(self, sub: Subscription) -> None:
        if sub.timer is None:
            delay = max(sub.last_send + self.interval_s - time.monotonic(), 0.0)
            sub.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, sub)

    def _on_timer(self, sub: Subscription) -> None:
        sub.timer = None
        self._send(sub)

    async def _deliver(self, sub: Subscription, batch: EventBatch) -> None:
        try:
            await sub.deliver(batch)
            sub.delivered += len(batch)
            sub.batches += 1
            sub.failures = 0
        except Exception as exc:
            sub.failures += 1
            sub.dropped += len(batch)
            sub.last_error = f"{type(exc).__name__}: {exc}"
            self._on_drop(sub.name, len(batch))
            log.warning("delivery to %s failed (%s): %d events dropped", sub.name, sub.last_error, len(batch))
            if sub.failures >= MAX_FAILURES:
                log.warning("removing subscriber %s after %d failed deliveries", sub.name, sub.failures)
                self.subscriptions.pop(sub.name, None)
        finally:
            sub.inflight -= 1
        self._send(sub)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until every queued event has been delivered (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._tasks and not any(s.pending for s in self.subscriptions.values()):
                return
            await asyncio.sleep(0.005)


def _consume(segments: collections.deque, n: int) -> None:
    """Forget the first ``n`` queued events' segments (a partly sent segment keeps its time)."""
    while n > 0 and segments:
        head = segments[0]
        if head[1] <= n:
            n -= head[1]
            segments.popleft()
        else:
            head[1] -= n
            n = 0
