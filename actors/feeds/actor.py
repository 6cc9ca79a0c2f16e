"""A feed as a named, detached, supervised Ray actor (``feed:<name>`` in namespace ``botmain``).

The actor runs the feed's ``FeedRunner`` on its event loop and sends each batch to the MDS
over its ``MdsLink`` (actors/feeds/mds_link.py: in order, kept until stored, sent again to a
restarted MDS), awaiting the MDS's acknowledgement (bounded in-flight batches give
back-pressure). It exports the feed's errors and connection state as Prometheus metrics.

Supervision: the feed starts itself in its constructor, so when Ray restarts the actor after
its process died it runs again without anyone calling ``start``. A live feed resubscribes
to its venue and carries on from now; a replay asks the MDS where its last stored batch
ended (``resume_cursor``, by this feed run's name) and resumes after it. ``run_id`` names
one run of the feed: the topology gives each ``start`` a new one, a restart keeps it.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import ray

from actors import names
from actors.feeds import feed_class
from actors.feeds.base import FeedHealth, FeedRunner
from actors.feeds.errors import FeedConfigError
from actors.feeds.mds_link import MdsLink
from actors.mds.metrics import metrics
from actors.stream import StreamAddress, StreamLimits
from cluster.config import BotmainConfig

log = logging.getLogger(__name__)


@ray.remote
class FeedActor:
    def __init__(self, feed: str, config: BotmainConfig, run_id: str, mds_name: str = names.MDS) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = getattr(config.market_data.feeds, feed)
        self.mds_name = mds_name
        self.name = feed
        self.peer = f"feed:{feed}@{run_id}"
        self.link = MdsLink(self.peer, self._locate, StreamLimits.from_config(config.market_data.stream), settings.max_unconfirmed_events)
        self._task: asyncio.Task | None = None
        self._metrics_task: asyncio.Task | None = None
        self.feed = None
        self.runner = None
        self.refused: FeedHealth | None = None
        try:
            self.feed = feed_class(feed)(config, settings)
        except FeedConfigError as exc:  # the actor stays up to say why, instead of dying
            self.refused = FeedHealth(feed, state="failed", errors={"config": 1}, last_error=f"config: {exc}")
            return
        self.runner = FeedRunner(self.feed, self.link.publish)
        self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _locate(self, public_key: bytes, peer: str) -> StreamAddress:
        # Looked up again on every (re)connect: a restarted MDS is a new process.
        mds = ray.get_actor(self.mds_name, namespace=names.NAMESPACE)
        return await mds.stream_address.remote(public_key, peer)

    async def _start(self) -> None:
        if hasattr(self.feed, "resume_at"):
            try:
                mds = ray.get_actor(self.mds_name, namespace=names.NAMESPACE)
                cursor = await mds.resume_cursor.remote(self.peer)
            except Exception as exc:  # no MDS yet: the run starts from its beginning
                log.info("feed %s: no resume point (%s)", self.name, exc)
                cursor = None
            if cursor:
                self.feed.resume_at(cursor)
                log.info("feed %s: resuming after the MDS's last stored batch, at %d", self.name, cursor)
        self._task = asyncio.get_running_loop().create_task(self.runner.run())
        self._metrics_task = asyncio.get_running_loop().create_task(self._export_metrics())
        gc.freeze()  # see actors/__init__.py: keep startup objects out of the collector's walks

    async def start(self) -> dict:
        """The feed starts itself when the actor is created; this waits for that."""
        if self.refused is None:
            await asyncio.shield(self._starting)
        return self._health()

    async def health(self) -> dict:
        return self._health()

    async def mds_restarted(self) -> None:
        """The MDS announces itself after a (re)start: reconnect to it now."""
        if self.refused is None:
            self.link.mds_restarted()

    def _health(self) -> dict:
        if self.refused is not None:
            return {**self.refused.as_dict(), "detail": {}, "link": {}}
        return {**self.runner.health.as_dict(), "detail": self.feed.status(), "link": self.link.status()}

    async def wait_finished(self, timeout_s: float = 600.0) -> dict:
        """Until the feed's source is exhausted (a replay's end) or it failed."""
        if self.refused is not None:
            return self._health()
        await asyncio.shield(self._starting)
        await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout_s)
        return self._health()

    async def stop(self) -> dict:
        if self.runner is not None:
            self.runner.stop()
        for task in (self._task, self._metrics_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        await self.link.close()
        return self._health()

    async def _export_metrics(self) -> None:
        m = metrics()
        reported: dict[str, int] = {}
        released = 0
        while True:
            h = self.runner.health
            for kind, n in h.errors.items():
                new = n - reported.get(kind, 0)
                if new:
                    m.feed_error(h.feed, kind, new)
                    reported[kind] = n
            if self.link.released > released:
                m.dropped("feed", h.feed, "unconfirmed_released", self.link.released - released)
                released = self.link.released
            m.feed_state(h.feed, h.state == "connected")
            await asyncio.sleep(1.0)
