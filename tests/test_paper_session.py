"""The trading loop in one process against the real journal (embedded PostgreSQL): the
strategy's stream, the Risk Rules Monitor, the execution engine and the paper venue
reproduce the backtest, and the journal's orders, fills and positions agree with it; an
engine that dies mid-run and a new one that reconciles leave no gap and no duplicate."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import asyncpg
import numpy as np
import pytest

from actors.execution.engine import ExecutionEngine
from actors.execution.paper_session import PaperSession, SessionClock
from actors.execution.router import Router
from actors.execution.sim_venue import SimVenue
from actors.risk.monitor import RiskMonitor
from cluster.orders import OrderState
from cluster.store.journal import Journal
from jobs.paper.replay import as_backtest, enabled
from sim.backtest import backtest
from sim.history import load_frame
from sim.paper import frame_bars
from sim.settings import SimSettings
from strategies.registry import strategy_class
from strategies.stream import StreamLeg

_runs = itertools.count()


def paper_config(config):
    """The session configuration as ``botmain paper`` runs it by default (``as_backtest``:
    the monitor's rules that the simulator lacks off), with both strategies enabled."""
    config = as_backtest(config)
    for spec in config.strategies.strategies:
        config = enabled(config, spec.name)
    return config


CASES = {
    "sol_ema_cross": (["binanceusdm:SOL-PERP"], 6_000),
    "sol_funding_carry": (["drift:SOL-PERP", "jupiter:SOL-USDC"], None),
}


async def open_parts(config, dsn, name, run_id, venue=None):
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    journal = Journal(pool)
    await journal.open_run(run_id, mode="paper", strategy=name)
    clock = SessionClock()
    venue = venue or SimVenue(run_id, list(config.venues.venues))
    engine = ExecutionEngine(journal, run_id, [venue], Router(config), clock=clock)
    return pool, journal, clock, venue, engine


def make_session(config, name, frame, settings, clock, venue, engine):
    spec = next(s for s in config.strategies.strategies if s.name == name)
    cls = strategy_class(spec.strategy)
    strategy = cls(cls.Params(**spec.params))
    return PaperSession(
        name=name, strategy=strategy, legs=[StreamLeg(leg.key, leg.kind) for leg in frame.legs],
        bar_seconds=frame.bar_seconds, settings=settings, monitor=RiskMonitor(config, clock=clock), engine=engine,
        venue=venue, clock=clock,
    ), strategy  # fmt: skip


def load_case(config, name):
    instruments, bars = CASES[name]
    frame = load_frame(config, instruments)
    frame = frame.head(bars or len(frame))
    return frame, SimSettings.from_config(config, instruments, name)


def same_trades(a, b) -> bool:
    return len(a) == len(b) and all(
        all(x == y or (x != x and y != y) for x, y in zip(dataclasses.astuple(p), dataclasses.astuple(q)))
        for p, q in zip(a, b)
    )


@pytest.mark.parametrize("name", list(CASES))
def test_paper_session_reproduces_the_backtest_and_journals_it(lake_config, dsn, name):
    config = paper_config(lake_config)
    frame, settings = load_case(config, name)
    spec = next(s for s in config.strategies.strategies if s.name == name)
    cls = strategy_class(spec.strategy)
    back = backtest(cls(cls.Params(**spec.params)), frame.head(len(frame)), settings)
    run_id = f"paper-{name}-{next(_runs)}"

    async def main():
        pool, journal, clock, venue, engine = await open_parts(config, dsn, name, run_id)
        try:
            await engine.reconcile()
            session, _ = make_session(config, name, frame, settings, clock, venue, engine)
            for ts, bars in frame_bars(frame.head(len(frame))):
                await session.on_bar(ts, bars)
            result = session.result()
            orders = await journal.orders(run_id)
            fills = await journal.fills(run_id)
            positions = await journal.positions(run_id)
            in_flight = await journal.in_flight_orders(run_id)
            # what the journal remembers of the orders it wrote is what is stored
            async with pool.acquire() as conn:
                for cid, (order, version) in journal._memory.orders.items():
                    assert await journal._stored_row(conn, cid) == (order, version), cid
            assert journal._memory.positions, "the journal remembers no position: its one-statement path went unused"
            for key, numbers in journal._memory.positions.items():
                stored = next(p for p in positions if (p.strategy, p.instrument) == key[1:3])
                assert numbers == (stored.size, stored.avg_entry_price, stored.realized_pnl, stored.fees_paid)
            return session, result, orders, fills, positions, in_flight
        finally:
            await pool.close()

    session, result, orders, fills, positions, in_flight = asyncio.run(main())
    assert back.trades, "the case should trade"
    assert session.counts.denied == 0, session.counts.denied_by
    assert np.array_equal(result.equity, back.equity), "paper's equity curve is not the backtest's"
    assert same_trades(result.trades, back.trades)
    assert result.metrics == back.metrics
    # the journal holds every fill the account booked, once, under an order
    account_fills = [f for r in venue_fills(session) for f in r]
    assert len(fills) == len(account_fills) == len({(f.venue, f.venue_fill_id) for f in fills})
    assert sum(1 for o in orders if o.state is OrderState.FILLED) > 0
    assert not [o for o in in_flight if o.state is not OrderState.ACCEPTED], "only orders waiting for the next open"
    # positions are the sum of the fills, and the kernel's positions
    held = {p.instrument: p.size for p in positions}
    for leg, key in enumerate(session.keys):
        assert held.get(key, 0.0) == pytest.approx(sum(f.signed_qty for f in fills if f.instrument == key), abs=1e-9)
        assert held.get(key, 0.0) == pytest.approx(session.venue._account(session.name).paper.S[leg, 0], abs=1e-9)


def venue_fills(session):
    from cluster.domain import Fill

    for report in session.venue.reports(session.name):
        yield [e for e in report.events if isinstance(e, Fill)] + [f for _, fs in report.venue_orders for f in fs]
