"""The MDS's writer as its own named actor (``mds-store``): a separate process, so that
encoding rows, waiting on PostgreSQL and writing Parquet never take the MDS's CPU or loop.

It holds two sinks: the PostgreSQL persister (``actors.mds.persistence``) and the lake
recorder (``actors.mds.recorder``), each enabled by its own config. It reads the store's
DSN from its own process's environment (``resolve_dsn``: ``BOTMAIN_PG_DSN`` or the embedded
server's settings and password file), never from a constructor argument, which Ray would
keep in its GCS. It registers the venues and instruments itself and maps rows' instrument
keys to their ids.

Hand-overs and restarts: the MDS sends each cut of rows as one hand-over and keeps it until
this actor reports it stored. ``add`` answers with a *ticket* per sink (per table, how many
rows it has been given up to and including this hand-over) and with what it has
*resolved* so far (stored, or dropped and counted); a hand-over is safe once every sink's
resolved count has reached its ticket. The answer also carries this process's
*incarnation*: if Ray restarted the actor (its queues are gone), the MDS sees a new
incarnation and sends every hand-over it still keeps again; the tables' natural keys and
the lake's de-duplication make the repeats harmless.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import pickle
import uuid

import ray

from actors.mds.metrics import metrics
from actors.mds.persistence import StorePersister, make_writer_factory
from actors.mds.recorder import LakeRecorder
from cluster.config import BotmainConfig
from cluster.lake import Lake

log = logging.getLogger(__name__)

REGISTER_RETRY_S = 2.0


def writer_settings(config: BotmainConfig) -> str:
    """What makes one writer unlike another (where it writes, and how): a fingerprint an
    MDS compares before it takes over a writer that is already running."""
    md = config.market_data.mds
    parts = [config.store.model_dump_json(), md.persist.model_dump_json(), md.record.model_dump_json(), str(config.root)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@ray.remote
class StoreActor:
    def __init__(self, config: BotmainConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config = config
        self.settings_id = writer_settings(config)
        self.incarnation = uuid.uuid4().hex
        self.persister: StorePersister | None = None
        self.recorder: LakeRecorder | None = None
        self.pg_error: str | None = None
        self._tasks: list[asyncio.Task] = []
        # Started at once, also when Ray restarts this actor after its process died.
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        md = self.config.market_data.mds
        m = metrics()
        loop = asyncio.get_running_loop()
        if md.record.enabled:
            root = self.config.path(md.record.lake_root) if md.record.lake_root else self.config.lake_root
            self.recorder = LakeRecorder(
                Lake(root), md.record, md.persist.max_pending_rows,
                on_drop=lambda table, reason, n: m.dropped("lake", table, reason, n),
            )
            self._tasks.append(loop.create_task(self.recorder.run()))
        if md.persist.enabled:
            ids = await self._register()
            self.persister = StorePersister(
                make_writer_factory(self._dsn, md.persist),
                md.persist,
                ids,
                on_drop=lambda table, reason, n: m.dropped("store", table, reason, n),
                on_written=m.stored,
            )
            self._tasks.append(loop.create_task(self.persister.run()))
        gc.freeze()  # see actors/__init__.py

    async def _register(self) -> dict[str, int]:
        """The instruments' ids, registering venues and instruments first; retried while
        PostgreSQL is away (hand-overs wait in the MDS meanwhile)."""
        from cluster.store.connection import prepare_store, resolve_dsn

        while True:
            try:
                dsn = resolve_dsn(self.config, start_embedded=False)
                if dsn is None:
                    raise RuntimeError("the embedded PostgreSQL is not running (botmain up)")
                await prepare_store(dsn)
                ids = await _register_instruments(self.config, dsn)
                self._dsn = dsn
                self.pg_error = None
                return ids
            except Exception as exc:
                self.pg_error = f"{type(exc).__name__}: {exc}"
                log.warning("mds-store: cannot register instruments yet (%s); retrying", self.pg_error)
                await asyncio.sleep(REGISTER_RETRY_S)

    @ray.method(max_task_retries=-1)  # queries are idempotent: retried across a restart
    async def ready(self, timeout_s: float = 60.0) -> dict:
        """Wait until both sinks run (PostgreSQL reachable and instruments registered)."""
        await asyncio.wait_for(asyncio.shield(self._started), timeout_s)
        return self.status_now()

    async def add(self, handover_id: int, payload: bytes) -> dict:
        """Take one hand-over (``{"pg": rows_by_table, "lake": rows_by_table}``, pickled by
        the MDS itself with the C pickler: Ray's cloudpickle would call back into Python for
        each of the tens of thousands of small objects, stalling the MDS's loop)."""
        await asyncio.shield(self._started)
        rows = pickle.loads(payload)
        ticket = {}
        if self.persister is not None:
            self.persister.add(rows.get("pg", {}))
            ticket["pg"] = dict(self.persister.enqueued)
        if self.recorder is not None:
            self.recorder.add(rows.get("lake", {}))
            ticket["lake"] = dict(self.recorder.enqueued)
        return {**self.status_now(), "handover": handover_id, "ticket": ticket}

    @ray.method(max_task_retries=-1)
    async def status(self) -> dict:
        return self.status_now()

    def status_now(self) -> dict:
        resolved = {}
        status: dict = {"incarnation": self.incarnation, "settings": self.settings_id, "pg_error": self.pg_error}
        if self.persister is not None:
            resolved["pg"] = dict(self.persister.resolved)
            status.update(self.persister.status())
        elif self.config.market_data.mds.persist.enabled:  # still registering
            status.update({"store_ok": False, "last_error": self.pg_error, "pending_rows": 0, "tables": {}})
        if self.recorder is not None:
            resolved["lake"] = dict(self.recorder.resolved)
            status["lake"] = self.recorder.status()
        status["resolved"] = resolved
        return status

    @ray.method(max_task_retries=-1)
    async def drain(self, timeout_s: float = 30.0) -> bool:
        await asyncio.shield(self._started)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        done = True
        if self.persister is not None:
            done = await self.persister.drain(timeout_s)
        if self.recorder is not None:
            done = await self.recorder.drain(max(deadline - loop.time(), 0.1)) and done
        return done

    async def stop(self, timeout_s: float = 30.0) -> bool:
        done = await self.drain(timeout_s)
        if self.recorder is not None:
            done = await self.recorder.close(timeout_s) and done
        for task in self._tasks:
            task.cancel()
        return done


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
