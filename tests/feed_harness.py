"""Run one feed in this process, without Ray, and collect what it publishes.

The runner, batching, error classification and backoff are the production ones; only the
publish target is a list instead of the Market Data Server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from actors.feeds.base import Feed, FeedHealth, FeedRunner
from cluster.events import EventBatch


class Collected:
    def __init__(self) -> None:
        self.batches: list[EventBatch] = []

    @property
    def events(self) -> list:
        return [e for b in self.batches for e in b.events]

    async def publish(self, batch: EventBatch) -> None:
        self.batches.append(batch)


async def run_feed(
    feed: Feed,
    until: Callable[[Collected, FeedHealth], bool],
    timeout_s: float = 10.0,
) -> tuple[Collected, FeedHealth]:
    """Run ``feed`` until ``until(collected, health)`` holds (checked every 10 ms) or the
    feed finishes; raises AssertionError naming the health if ``timeout_s`` passes first."""
    sink = Collected()
    runner = FeedRunner(feed, sink.publish)
    task = asyncio.ensure_future(runner.run())
    deadline = time.monotonic() + timeout_s
    try:
        while not task.done():
            if until(sink, runner.health):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"feed {feed.name} did not get there in {timeout_s}s; health: {runner.health}")
            await asyncio.sleep(0.01)
    finally:
        runner.stop()
        if not task.done():
            task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    return sink, runner.health
