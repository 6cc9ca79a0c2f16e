"""The MDS as a named, detached Ray actor (``mds`` in namespace ``botmain``).

An async actor: every method runs on one event loop, so the server's state needs no locks,
and publishing, subscribing and status calls interleave between batches.

Market data arrives and leaves over batch streams (actors/batch_stream.py): feeds connect
to the address ``stream_address`` returns, and subscribers that run a receiver pass its
address to ``subscribe``. ``publish`` and delivery by actor call (``on_market_data``) stay
for callers without a stream; both end in the same server methods.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle

import ray

from actors import names
from actors.batch_stream import BatchReceiver, BatchSender, StreamAddress
from actors.mds.metrics import metrics
from actors.mds.rows import RowBuffer
from actors.mds.server import MarketDataServer
from actors.mds.store_actor import StoreActor
from cluster.config import BotmainConfig
from cluster.events import EventBatch, Signal


@ray.remote
class MdsActor:
    def __init__(self, config: BotmainConfig, dsn: str | None, clock: str) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config = config
        self.dsn = dsn
        self.clock = clock
        self.server: MarketDataServer | None = None
        self.receiver: BatchReceiver | None = None
        self.senders: dict[str, BatchSender] = {}
        self.started = asyncio.Event()

    async def start(self) -> dict:
        """Register the instruments in the store (if persisting), start the ``mds-store``
        writer actor and the background tasks."""
        if self.server is not None:
            return self.server.status()
        persist = self.config.market_data.mds.persist
        m = metrics()
        rows = store = None
        if self.dsn and persist.enabled:
            ids = await _register_instruments(self.config, self.dsn)
            rows = RowBuffer(ids, persist, on_drop=lambda table, reason, n: m.dropped("store", table, reason, n))
            store = _ActorStore(
                StoreActor.options(
                    name=names.MDS_STORE,
                    namespace=names.NAMESPACE,
                    lifetime="detached",
                    num_cpus=0,
                    get_if_exists=True,
                ).remote(self.dsn, persist)
            )
            await store.actor.start.remote()
        self.server = MarketDataServer(self.config, self.clock, rows, store, m)
        self.server.start()
        self.receiver = BatchReceiver(self.server.publish, "mds")
        await self.receiver.start()
        self.started.set()
        gc.freeze()  # see actors/__init__.py: keep startup objects out of the collector's walks
        return self.server.status()

    async def publish(self, batch: EventBatch) -> int:
        return self.server.publish(batch)

    async def stream_address(self) -> StreamAddress:
        """Where feeds send their batches (see actors/batch_stream.py); waits for ``start``
        (a feed may ask a restarted MDS before it has been started)."""
        await asyncio.wait_for(self.started.wait(), timeout=60.0)
        return self.receiver.address

    async def publish_signal(self, signal: Signal) -> None:
        self.server.publish_signal(signal)

    async def subscribe(self, name: str, handle, kinds=None, symbols=None, signals=None, stream: StreamAddress | None = None) -> dict:
        """Deliver to ``stream`` (the subscriber's batch receiver) if given, else by calling
        ``handle.on_market_data``. Returns the current best prices."""
        await self._close_sender(name)
        if stream is not None:
            sender = self.senders[name] = await BatchSender.connect(stream, f"mds->{name}")

            def deliver(batch: EventBatch):
                return sender.send(batch)  # a future: resolved when the subscriber has handled it
        else:

            async def deliver(batch: EventBatch) -> None:
                await handle.on_market_data.remote(batch)

        return self.server.subscribe(name, deliver, kinds, symbols, signals)

    async def unsubscribe(self, name: str) -> bool:
        await self._close_sender(name)
        return self.server.unsubscribe(name)

    async def _close_sender(self, name: str) -> None:
        sender = self.senders.pop(name, None)
        if sender is not None:
            await sender.close()

    async def best(self, symbol: str):
        return self.server.best(symbol)

    async def venue_tops(self, symbol: str) -> dict:
        return self.server.venue_tops(symbol)

    async def market_snapshot(self, base: str | None = None) -> dict:
        return self.server.market_snapshot(base)

    async def status(self) -> dict:
        return self.server.status()

    async def flush_store(self, timeout_s: float = 30.0) -> bool:
        """Write everything queued now (tests and shutdown); False if the store did not
        take it all within ``timeout_s``."""
        return await self.server.flush_store(timeout_s)

    async def drain(self, timeout_s: float = 10.0) -> None:
        await self.server.fanout.drain(timeout_s)

    async def stop(self) -> None:
        await self.flush_store()
        await self.receiver.close()
        for name in list(self.senders):
            await self._close_sender(name)
        await self.server.stop()
        if self.server.store is not None:
            await self.server.store.actor.stop.remote()
            ray.kill(self.server.store.actor)


class _ActorStore:
    """The ``StoreLink`` to the ``mds-store`` actor."""

    def __init__(self, actor) -> None:
        self.actor = actor

    async def add(self, rows_by_table: dict) -> dict:
        # Pickled here with the C pickler: Ray's cloudpickle would call back into Python for
        # each of the tens of thousands of small objects, stalling the MDS's loop.
        return await self.actor.add_pickled.remote(pickle.dumps(rows_by_table, protocol=5))

    async def drain(self, timeout_s: float) -> bool:
        return await self.actor.drain.remote(timeout_s)


async def _register_instruments(config: BotmainConfig, dsn: str) -> dict[str, int]:
    from cluster.store.reference import upsert_instruments, upsert_venues
    from cluster.store.writer import StoreWriter

    venues = [config.venue(name) for name in config.venues.venues]
    instruments = config.instruments()

    async def upsert(conn):
        await upsert_venues(conn, venues)
        return await upsert_instruments(conn, instruments)

    async with StoreWriter(dsn) as writer:
        return await writer.run(upsert, "registering venues and instruments")
