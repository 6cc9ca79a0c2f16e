"""The MDS as a named, detached Ray actor (``mds`` in namespace ``botmain``).

An async actor: every method runs on one event loop, so the server's state needs no locks,
and publishing, subscribing and status calls interleave between batches.
"""

from __future__ import annotations

import logging

import ray

from actors.mds.metrics import metrics
from actors.mds.persistence import StorePersister, make_writer_factory
from actors.mds.server import MarketDataServer
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

    async def start(self) -> dict:
        """Register the instruments in the store (if persisting) and start the background tasks."""
        if self.server is not None:
            return self.server.status()
        persister = None
        persist = self.config.market_data.mds.persist
        if self.dsn and persist.enabled:
            ids = await _register_instruments(self.config, self.dsn)
            persister = StorePersister(make_writer_factory(self.dsn, persist), ids, persist)
            m = metrics()
            persister._on_drop = lambda table, reason, n: m.dropped("store", table, reason, n)
            persister._on_written = m.stored
            self.server = MarketDataServer(self.config, self.clock, persister, m)
        else:
            self.server = MarketDataServer(self.config, self.clock, None, metrics())
        self.server.start()
        return self.server.status()

    async def publish(self, batch: EventBatch) -> int:
        return self.server.publish(batch)

    async def publish_signal(self, signal: Signal) -> None:
        self.server.publish_signal(signal)

    async def subscribe(self, name: str, handle, kinds=None, symbols=None, signals=None) -> dict:
        async def deliver(batch: EventBatch) -> None:
            await handle.on_market_data.remote(batch)

        return self.server.subscribe(name, deliver, kinds, symbols, signals)

    async def unsubscribe(self, name: str) -> bool:
        return self.server.unsubscribe(name)

    async def best(self, symbol: str):
        return self.server.best(symbol)

    async def venue_tops(self, symbol: str) -> dict:
        return self.server.venue_tops(symbol)

    async def status(self) -> dict:
        return self.server.status()

    async def flush_store(self, timeout_s: float = 30.0) -> bool:
        """Write everything queued now (tests and shutdown); False if the store did not
        take it all within ``timeout_s``."""
        persister = self.server.persister
        return True if persister is None else await persister.drain(timeout_s)

    async def drain(self, timeout_s: float = 10.0) -> None:
        await self.server.fanout.drain(timeout_s)

    async def stop(self) -> None:
        await self.flush_store()
        await self.server.stop()


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
