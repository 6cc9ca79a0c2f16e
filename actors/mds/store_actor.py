"""The MDS's writer as its own named actor (``mds-store``): a separate process, so that
encoding rows and waiting on PostgreSQL never take the MDS's CPU or event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle

import ray

from actors.mds.metrics import metrics
from actors.mds.persistence import StorePersister, make_writer_factory
from cluster.config.models import PersistConfig


@ray.remote
class StoreActor:
    def __init__(self, dsn: str, settings: PersistConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.dsn = dsn
        self.settings = settings
        self.persister: StorePersister | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> dict:
        if self.persister is None:
            m = metrics()
            self.persister = StorePersister(
                make_writer_factory(self.dsn, self.settings),
                self.settings,
                on_drop=lambda table, reason, n: m.dropped("store", table, reason, n),
                on_written=m.stored,
            )
            self._task = asyncio.get_running_loop().create_task(self.persister.run())
            gc.freeze()  # see actors/__init__.py
        return self.persister.status()

    async def add(self, rows_by_table: dict[str, list[tuple]]) -> dict:
        return self.persister.add(rows_by_table)

    async def add_pickled(self, payload: bytes) -> dict:
        """``add`` for rows the MDS pickled itself (much cheaper for it than Ray's pickling)."""
        return self.persister.add(pickle.loads(payload))

    async def drain(self, timeout_s: float = 30.0) -> bool:
        return await self.persister.drain(timeout_s)

    async def status(self) -> dict:
        return self.persister.status()

    async def stop(self, timeout_s: float = 30.0) -> bool:
        done = await self.persister.drain(timeout_s)
        if self._task is not None:
            self._task.cancel()
        return done
