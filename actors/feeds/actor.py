"""A feed as a named, detached Ray actor (``feed:<name>`` in namespace ``botmain``).

The actor runs the feed's ``FeedRunner`` on its event loop and sends each batch to the MDS
over a batch stream (actors/batch_stream.py; the address comes from the MDS actor), awaiting
the acknowledgement (bounded in-flight batches give back-pressure). A lost connection ends
the feed's session like any other failure; the next session reconnects.
It exports the feed's errors and connection state as Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import ray

from actors import names
from actors.batch_stream import BatchSender
from actors.feeds import feed_class
from actors.feeds.base import FeedHealth, FeedRunner
from actors.feeds.errors import FeedConfigError
from actors.mds.metrics import metrics
from cluster.config import BotmainConfig
from cluster.events import EventBatch


@ray.remote
class FeedActor:
    def __init__(self, feed: str, config: BotmainConfig, mds_name: str = names.MDS) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = getattr(config.market_data.feeds, feed)
        self.mds_name = mds_name
        self.name = feed
        self._sender: BatchSender | None = None
        self._connecting = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.feed = None
        self.runner = None
        self.refused: FeedHealth | None = None
        try:
            self.feed = feed_class(feed)(config, settings)
        except FeedConfigError as exc:  # the actor stays up to say why, instead of dying
            self.refused = FeedHealth(feed, state="failed", errors={"config": 1}, last_error=f"config: {exc}")
            return
        self.runner = FeedRunner(self.feed, self._publish)
        self._metrics_task: asyncio.Task | None = None

    async def _publish(self, batch: EventBatch) -> None:
        # Under the lock so that batches leave in order even while (re)connecting.
        async with self._connecting:
            if self._sender is None or self._sender.closed:
                # Looked up again on every (re)connect: a restarted MDS is a new actor.
                mds = ray.get_actor(self.mds_name, namespace=names.NAMESPACE)
                address = await mds.stream_address.remote()
                self._sender = await BatchSender.connect(address, f"feed:{self.name}->mds")
            ack = self._sender.send(batch)
        await ack

    async def start(self) -> dict:
        if self.refused is None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.runner.run())
            self._metrics_task = asyncio.get_running_loop().create_task(self._export_metrics())
            gc.freeze()  # see actors/__init__.py: keep startup objects out of the collector's walks
        return self._health()

    async def health(self) -> dict:
        return self._health()

    def _health(self) -> dict:
        if self.refused is not None:
            return {**self.refused.as_dict(), "detail": {}}
        return {**self.runner.health.as_dict(), "detail": self.feed.status()}

    async def wait_finished(self, timeout_s: float = 600.0) -> dict:
        """Until the feed's source is exhausted (a replay's end) or it failed."""
        if self._task is None:
            return self._health()
        await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout_s)
        return self._health()

    async def stop(self) -> dict:
        if self.runner is not None:
            self.runner.stop()
        if self._sender is not None:
            await self._sender.close()
        for task in (self._task, self._metrics_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        return self._health()

    async def _export_metrics(self) -> None:
        m = metrics()
        reported: dict[str, int] = {}
        while True:
            h = self.runner.health
            for kind, n in h.errors.items():
                new = n - reported.get(kind, 0)
                if new:
                    m.feed_error(h.feed, kind, new)
                    reported[kind] = n
            m.feed_state(h.feed, h.state == "connected")
            await asyncio.sleep(1.0)
