"""Faults in the trading loop, against the real journal (embedded PostgreSQL): the
execution side dying while orders are in flight, and PostgreSQL restarting during a run.

Either way the journal must end with every fill the venue made, once, positions equal to
the sum of the fills (and to the venue's), and, because the session keeps a bar's
decisions until its step is journaled, the same equity as the backtest."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.execution.engine import ExecutionEngine
from actors.execution.router import Router
from cluster.orders import OrderState
from cluster.store.embedded import EmbeddedPostgres
from cluster.store.journal import Journal
from sim.backtest import backtest
from sim.paper import frame_bars
from strategies.registry import strategy_class
from tests.conftest import _create_database, free_port
from tests.test_paper_session import load_case, make_session, open_parts, paper_config, venue_fills

NAME = "sol_ema_cross"
BARS = 2_500
_runs = itertools.count()


class Crash(Exception):
    """The execution actor's process dies here."""


class DyingJournal:
    """The real journal, through which the engine dies at its ``at``-th order write
    (``new_order`` or ``record``, alone or inside a batch): before the write reaches
    PostgreSQL, or after it has been made but before the engine hears back (inside a
    batch, that rolls the batch back)."""

    def __init__(self, journal: Journal, at: int, after: bool, counter: list[int] | None = None) -> None:
        self._journal = journal
        self.at = at
        self.after = after
        self._counter = counter if counter is not None else [0]

    def __getattr__(self, name):
        return getattr(self._journal, name)

    @contextlib.asynccontextmanager
    async def batch(self):
        async with self._journal.batch() as bound:
            yield DyingJournal(bound, self.at, self.after, self._counter)

    async def new_order(self, *args, **kwargs):
        return await self._write(self._journal.new_order(*args, **kwargs))

    async def record(self, *args, **kwargs):
        return await self._write(self._journal.record(*args, **kwargs))

    async def _write(self, call):
        self._counter[0] += 1
        if self._counter[0] != self.at:
            return await call
        if not self.after:
            call.close()
            raise Crash(f"died before write {self.at}")
        await call
        raise Crash(f"died after write {self.at}")


def strategy_and_backtest(config):
    frame, sim_settings = load_case(config, NAME)
    frame = frame.head(BARS)
    spec = next(s for s in config.strategies.strategies if s.name == NAME)
    cls = strategy_class(spec.strategy)
    return frame, sim_settings, backtest(cls(cls.Params(**spec.params)), frame, sim_settings)


async def journal_state(journal: Journal, run_id: str):
    return (await journal.fills(run_id), await journal.positions(run_id), await journal.in_flight_orders(run_id),
            await journal.orders(run_id))  # fmt: skip


def assert_consistent(session, back, result, fills, positions, in_flight):
    account_fills = [f for r in venue_fills(session) for f in r]
    keys = [(f.venue, f.venue_fill_id) for f in fills]
    assert len(keys) == len(set(keys)), "a fill is journaled twice"
    assert set(keys) == {(f.venue, f.venue_fill_id) for f in account_fills}, "the journal misses a fill the venue made"
    held = {p.instrument: p.size for p in positions}
    for leg, key in enumerate(session.keys):
        assert held.get(key, 0.0) == pytest.approx(sum(f.signed_qty for f in fills if f.instrument == key), abs=1e-9)
        assert held.get(key, 0.0) == pytest.approx(session.venue._account(session.name).paper.S[leg, 0], abs=1e-9)
    assert not [o for o in in_flight if o.state is not OrderState.ACCEPTED], "only orders waiting for the next open"
    assert np.array_equal(result.equity, back.equity), "the fault changed what paper traded"
    assert result.metrics == back.metrics


@pytest.fixture(scope="module")
def faults_case(lake_config):
    config = paper_config(lake_config)
    return config, *strategy_and_backtest(config)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(min_value=1, max_value=160), after=st.booleans())
def test_execution_dies_with_orders_in_flight_and_the_restart_reconciles(faults_case, dsn, at, after):
    config, frame, sim_settings, back = faults_case
    run_id = f"paper-crash-{next(_runs)}"

    async def main():
        pool, journal, clock, venue, _ = await open_parts(config, dsn, NAME, run_id)
        try:
            dying = DyingJournal(journal, at, after)
            engine = ExecutionEngine(dying, run_id, [venue], Router(config), clock=clock)
            session, _ = make_session(config, NAME, frame, sim_settings, clock, venue, engine)
            crashed = None
            for ts, bars in frame_bars(frame):
                try:
                    await session.on_bar(ts, bars)
                except Crash as exc:
                    crashed = (str(exc), ts, dict(engine.counts))
                    # the actor restarts: a new engine on the journal, the same venue
                    engine = ExecutionEngine(journal, run_id, [venue], Router(config), clock=clock)
                    await session.restart(engine)
            return session, crashed, session.result(), *(await journal_state(journal, run_id))
        finally:
            await pool.close()

    session, crashed, result, fills, positions, in_flight, orders = asyncio.run(main())
    assert crashed is not None, f"the run made fewer than {at} order writes"
    assert session.counts.restarts == 1
    assert_consistent(session, back, result, fills, positions, in_flight)
    assert len({o.client_order_id for o in orders}) == len(orders)


def test_postgres_restart_pauses_trading_and_nothing_is_lost(faults_case, server_dir):
    """A private server, stopped for 30 bars mid-run and started again: while it is down
    nothing is sent to the venue, then the queued bars drain and the run ends as the
    backtest does."""
    config, frame, sim_settings, back = faults_case
    server = EmbeddedPostgres(server_dir / "pg", port=free_port(), database="faults", settings={"fsync": "off"})
    server.start()
    try:
        dsn = asyncio.run(_create_database(server, "paper_faults", migrated=True))
        run_id = "paper-pg-restart"

        async def main():
            pool, journal, clock, venue, engine = await open_parts(config, dsn, NAME, run_id)
            try:
                session, _ = make_session(config, NAME, frame, sim_settings, clock, venue, engine)
                seen = []
                for n, (ts, bars) in enumerate(frame_bars(frame)):
                    if n == 1_000:
                        server.stop()
                        submits_at_stop = len(venue._orders)
                    if n == 1_030:
                        assert session.paused, "the session did not notice the store was down"
                        assert len(venue._orders) == submits_at_stop, "an order went out that could not be journaled"
                        seen.append(session.queued)
                        server.start()
                    await session.on_bar(ts, bars)
                return session, seen, session.result(), *(await journal_state(journal, run_id))
            finally:
                await pool.close()

        session, seen, result, fills, positions, in_flight, _ = asyncio.run(main())
    finally:
        server.stop()
    assert session.counts.pauses == 1 and seen and seen[0] >= 29, (session.counts, seen)
    assert session.paused is None and not session.queued
    assert_consistent(session, back, result, fills, positions, in_flight)
