"""The MDS as a named, detached, supervised Ray actor (``mds`` in namespace ``botmain``).

An async actor: every method runs on one event loop, so the server's state needs no locks,
and publishing, subscribing and status calls interleave between batches.

Market data arrives and leaves over batch links (actors/stream/): a feed asks
``stream_address`` with its public key (allowed then and there) and connects; a
subscriber that runs a receiver first allows the MDS's key (``stream_key``) and passes its
address to ``subscribe``. ``publish`` and delivery by actor call (``on_market_data``) stay
for callers without a link; both end in the same server methods.

Supervision: Ray restarts the actor when its process dies (``topology``). It starts itself
in its constructor, so a restarted MDS is serving again without anyone calling ``start``,
and it then announces itself to every named feed and strategy actor (``mds_restarted``):
feeds reconnect and send again what they kept, strategies subscribe again. Its state
(consolidated view, bars in progress, staleness) starts empty and fills from the stream.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid

import ray

from actors import names
from actors.mds.metrics import metrics
from actors.mds.rows import RowBuffer
from actors.mds.server import MarketDataServer
from actors.stream import BatchReceiver, BatchSender, Origin, StreamAddress, StreamKeys, StreamLimits
from cluster.config import BotmainConfig
from cluster.events import EventBatch, Signal

log = logging.getLogger(__name__)


@ray.remote
class MdsActor:
    def __init__(self, config: BotmainConfig, clock: str) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config = config
        self.clock = clock
        self.limits = StreamLimits.from_config(config.market_data.stream)
        self.keys = StreamKeys.generate()  # the MDS's own key for its links to subscribers
        self.incarnation = uuid.uuid4().hex[:12]  # new in every process: a restart shows in status
        self.server: MarketDataServer | None = None
        self.receiver: BatchReceiver | None = None
        self.store_actor = None
        self.senders: dict[str, BatchSender] = {}
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        """Start the ``mds-store`` writer actor (if persisting or recording), the server and
        its receiver; then tell the named feeds and strategies that this MDS is here."""
        md = self.config.market_data.mds
        m = metrics()
        rows = store = None
        if md.persist.enabled or md.record.enabled:
            self.store_actor = await self._writer()
            rows = RowBuffer(md.persist, md.record, on_drop=lambda table, reason, n: m.dropped("store", table, reason, n))
            store = _ActorStore(self.store_actor)
        self.server = MarketDataServer(self.config, self.clock, rows, store, m)
        self.server.start()
        self.receiver = BatchReceiver(self._on_batch, "mds", self.limits, on_reject=lambda reason: m.stream_rejected("mds", reason))
        await self.receiver.start()
        gc.freeze()  # see actors/__init__.py: keep startup objects out of the collector's walks
        asyncio.get_running_loop().create_task(self._announce())

    async def _writer(self):
        """The ``mds-store`` actor: the running one if it writes where and how this MDS's
        configuration says (after a restart of this MDS it does, and keeps what it holds),
        else, once the old one has written what it held, a new one."""
        from actors.mds.store_actor import StoreActor, writer_settings

        sup = self.config.market_data.supervision
        options = dict(name=names.MDS_STORE, namespace=names.NAMESPACE, lifetime="detached", num_cpus=0,
                       max_restarts=sup.max_restarts,
                       max_task_retries=0)  # add is not idempotent: the MDS re-sends what a restart lost
        try:
            running = ray.get_actor(names.MDS_STORE, namespace=names.NAMESPACE)
        except ValueError:
            running = None
        if running is not None:
            try:
                same = (await running.status.remote())["settings"] == writer_settings(self.config)
            except Exception as exc:  # an old writer that cannot answer is replaced
                log.warning("the running mds-store does not answer (%s): replacing it", exc)
                same = False
            if same:
                return running
            log.warning("the running mds-store writes elsewhere (another configuration): it writes what it holds, then a new one starts")
            try:
                await running.stop.remote()
            except Exception:
                pass
            ray.kill(running, no_restart=True)
            for _ in range(200):  # its name is free once the GCS has it dead
                try:
                    ray.get_actor(names.MDS_STORE, namespace=names.NAMESPACE)
                except ValueError:
                    break
                await asyncio.sleep(0.05)
        return StoreActor.options(**options, get_if_exists=True).remote(self.config)

    def _on_batch(self, batch: EventBatch, origin: Origin) -> int:
        return self.server.publish(batch, origin)

    async def _announce(self) -> None:
        """Every named feed and strategy actor learns that this MDS serves (again)."""
        for name in ray.util.list_named_actors():
            if not (name.startswith("feed:") or name.startswith("strategy:")):
                continue
            try:
                actor = ray.get_actor(name, namespace=names.NAMESPACE)
                actor.mds_restarted.remote()
            except Exception as exc:  # gone meanwhile, or an actor without the method
                log.info("could not announce the MDS to %s: %s", name, exc)

    async def start(self, timeout_s: float = 120.0) -> dict:
        """Wait until started (the constructor starts it); the status."""
        await asyncio.wait_for(asyncio.shield(self._started), timeout_s)
        if self.store_actor is not None:
            await self.store_actor.ready.remote(timeout_s)
        return self.server.status()

    @ray.method(max_task_retries=0)  # not idempotent: a retry would publish the batch twice
    async def publish(self, batch: EventBatch) -> int:
        await asyncio.shield(self._started)
        return self.server.publish(batch)

    async def stream_address(self, public_key: bytes, peer: str) -> StreamAddress:
        """Allow ``public_key`` (a feed's, named ``peer`` in logs and metrics) to send, and
        say where; waits for the start (a feed may ask a restarted MDS before it is up)."""
        await asyncio.wait_for(asyncio.shield(self._started), timeout=60.0)
        self.receiver.allow(public_key, peer)
        return self.receiver.address

    async def stream_key(self) -> bytes:
        """The public key this MDS connects to subscribers' receivers with."""
        return self.keys.public

    async def resume_cursor(self, peer: str) -> int | None:
        """Where the feed run ``peer`` stands after its last batch whose rows are stored (a
        restarted replay resumes there); None if this MDS has no stored batch of it."""
        await asyncio.shield(self._started)
        return self.server.durability.cursors.get(peer)

    @ray.method(max_task_retries=0)
    async def publish_signal(self, signal: Signal) -> None:
        await asyncio.shield(self._started)
        self.server.publish_signal(signal)

    async def subscribe(self, name: str, handle, kinds=None, symbols=None, signals=None, stream: StreamAddress | None = None) -> dict:
        """Deliver to ``stream`` (the subscriber's receiver, which must allow ``stream_key``)
        if given, else by calling ``handle.on_market_data``. Returns the current best prices."""
        await asyncio.shield(self._started)
        await self._close_sender(name)
        if stream is not None:
            sender = self.senders[name] = await BatchSender.connect(stream, f"mds->{name}", self.keys, self.limits)

            def deliver(batch: EventBatch):
                return sender.send(batch)  # a future: resolved when the subscriber has handled it
        else:

            async def deliver(batch: EventBatch) -> None:
                await handle.on_market_data.remote(batch)

        return self.server.subscribe(name, deliver, kinds, symbols, signals)

    async def unsubscribe(self, name: str) -> bool:
        await asyncio.shield(self._started)
        await self._close_sender(name)
        return self.server.unsubscribe(name)

    async def _close_sender(self, name: str) -> None:
        sender = self.senders.pop(name, None)
        if sender is not None:
            await sender.close()

    async def best(self, symbol: str):
        await asyncio.shield(self._started)
        return self.server.best(symbol)

    async def venue_tops(self, symbol: str) -> dict:
        await asyncio.shield(self._started)
        return self.server.venue_tops(symbol)

    async def market_snapshot(self, base: str | None = None) -> dict:
        await asyncio.shield(self._started)
        return self.server.market_snapshot(base)

    async def status(self) -> dict:
        await asyncio.shield(self._started)
        status = self.server.status()
        status["incarnation"] = self.incarnation
        status["stream"] = {"handled": self.receiver.handled, "duplicates": self.receiver.duplicates,
                            "rejected": dict(self.receiver.rejected)}
        return status

    async def flush_store(self, timeout_s: float = 30.0) -> bool:
        """Write everything queued now (tests and shutdown); False if the store did not
        take it all within ``timeout_s``."""
        await asyncio.shield(self._started)
        return await self.server.flush_store(timeout_s)

    async def drain(self, timeout_s: float = 10.0) -> None:
        await asyncio.shield(self._started)
        await self.server.fanout.drain(timeout_s)

    @ray.method(max_task_retries=0)
    async def stop(self) -> None:
        await asyncio.shield(self._started)
        await self.flush_store()
        await self.receiver.close()
        for name in list(self.senders):
            await self._close_sender(name)
        await self.server.stop()
        if self.store_actor is not None:
            await self.store_actor.stop.remote()
            ray.kill(self.store_actor, no_restart=True)


class _ActorStore:
    """The ``StoreLink`` to the ``mds-store`` actor."""

    def __init__(self, actor) -> None:
        self.actor = actor

    async def add(self, handover_id: int, payload: bytes) -> dict:
        return await self.actor.add.remote(handover_id, payload)

    async def status(self) -> dict:
        return await self.actor.status.remote()

    async def drain(self, timeout_s: float) -> bool:
        return await self.actor.drain.remote(timeout_s)
