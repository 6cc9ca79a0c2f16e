"""The Execution Server as a named Ray actor (``execution``): the per-bar flow's execution
side (actors/execution/bar_executor.py) over the engine, the journal and the paper venue's
actor.

It reads the store's DSN in its own process (``resolve_dsn``), so no secret is a
constructor argument. It starts itself on its first call, which is also what happens after
Ray restarts its process: the engine starts paused, the venue's steps after the journal's
last equity snapshot are handed back for journaling, and the first bar reconciles before
anything is sent. A bar interrupted by the crash is offered again by the monitor, and what
was done of it already is a no-op in the journal (orders by client order id, fills by
venue fill id, the monitor's events on the bar by their place in it).
"""

from __future__ import annotations

import asyncio
import gc

import asyncpg
import ray

from actors import names
from actors.bar_flow import BarOutcome, CheckedBar
from actors.execution.bar_executor import BarExecutor
from actors.execution.engine import ExecutionEngine
from actors.execution.paper_session import SessionClock
from actors.execution.router import Router
from actors.trading.venue_actor import RemoteVenue
from cluster.config import BotmainConfig
from cluster.store.journal import Journal


@ray.remote
class ExecutionActor:
    def __init__(self, config: BotmainConfig, run_id: str, venue_name: str = names.PAPER_VENUE) -> None:
        self.config = config
        self.run_id = run_id
        self.venue_name = venue_name
        self.clock = SessionClock()
        self.pool: asyncpg.Pool | None = None
        self.engine: ExecutionEngine | None = None
        self.executor: BarExecutor | None = None
        self.router: Router | None = None
        self._lock = asyncio.Lock()
        self.recovered = 0

    async def _started(self) -> BarExecutor:
        async with self._lock:
            if self.executor is None:
                await self._start()
            return self.executor

    async def _start(self) -> None:
        from cluster.store.connection import resolve_dsn

        dsn = resolve_dsn(self.config, start_embedded=False)
        if dsn is None:
            raise RuntimeError("the Execution Server has no store: the embedded PostgreSQL is not running and BOTMAIN_PG_DSN is unset")
        self.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        journal = Journal(self.pool)
        run = await journal.run(self.run_id)
        if run is None or run.status != "running":
            raise RuntimeError(f"trading run {self.run_id} is {'not in the journal' if run is None else run.status}")
        handle = ray.get_actor(self.venue_name, namespace=names.NAMESPACE)
        venue = RemoteVenue(handle, list(self.config.venues.venues))
        self.router = Router(self.config)
        self.engine = ExecutionEngine(journal, self.run_id, [venue], self.router, clock=self.clock)
        self.executor = BarExecutor(self.engine, venue, self.clock)
        for strategy in await handle.accounts.remote():
            last = await journal.last_equity_ns(self.run_id, strategy)
            missing = await handle.reports_after.remote(strategy, -1 if last is None else last)
            self.executor.redeliver(missing)
            self.recovered += len(missing)
        gc.freeze()  # see actors/__init__.py

    async def start(self) -> dict:
        await self._started()
        return await self.status()

    async def execute(self, checked: CheckedBar) -> BarOutcome:
        return await (await self._started()).execute(checked)

    async def record_risk_event(self, kind: str, ts_ns: int, strategy: str | None, rule: str | None = None,
                                detail: dict | None = None) -> None:  # fmt: skip
        await self._started()
        await self.engine.record_risk_event(kind, ts_ns=ts_ns, strategy=strategy, rule=rule, detail=detail)

    async def cancel_all(self, strategy: str | None = None) -> int:
        """Cancel the open orders of ``strategy`` (None: all); the number asked to cancel."""
        await self._started()
        return len(await self.engine.cancel_all(strategy))

    async def status(self) -> dict:
        engine = self.engine
        if engine is None:
            return {"run_id": self.run_id, "started": False}
        return {
            "run_id": self.run_id,
            "started": True,
            "paused": engine.paused,
            "halted": engine.halted,
            "counts": dict(engine.counts),
            "undelivered": len(self.executor.undelivered),
            "recovered_steps": self.recovered,
            "decisions": dict(self.router.decisions),
        }

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
