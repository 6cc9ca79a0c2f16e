"""The trading loop across Ray actors (the real local cluster, the session's embedded
PostgreSQL): the strategy actor, the Risk Rules Monitor's actor, the Execution Server's
actor and the paper venue's actor reproduce the backtest bit for bit; the Execution
Server killed mid-run comes back, reconciles and the run still equals the backtest with
no fill missing or doubled; ``halt`` stops new orders and is journaled."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import numpy as np
import pytest

from cluster.store.connection import prepare_store
from cluster.store.journal import Journal
from jobs.paper.replay import run_paper_replay
from tests.test_market_data_cluster import ray_cluster  # noqa: F401 - the module's cluster fixture
from tests.test_paper_session import paper_config, same_trades

NAME = "sol_ema_cross"
START, END = "2025-05-10T00:00", "2025-05-11T00:00"  # 1,440 one-minute bars of the sample
_runs = itertools.count()


@pytest.fixture(scope="module")
def store(ray_cluster, pg_server, lake_config):  # noqa: F811 - the fixture imported above
    """The database the actors journal into: the session's embedded server, which they
    find from the configuration in their own processes (no DSN is passed to them)."""
    asyncio.run(prepare_store(pg_server.dsn))
    return pg_server.dsn


async def _journal_state(dsn, run_id):
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        j = Journal(pool)
        return await j.fills(run_id), await j.positions(run_id), await j.risk_event_counts(run_id)
    finally:
        await pool.close()


@pytest.mark.parametrize("feed", ["mds", "lake"])
def test_paper_on_actors_reproduces_the_backtest_and_journals_it(store, lake_config, feed):
    """``mds``: the replay feed plays the span's bars through the Market Data Server to the
    strategy actor; ``lake``: the same bars handed to it."""
    config = paper_config(lake_config)
    run_id = f"paper-actors-{feed}-{next(_runs)}"
    run = asyncio.run(run_paper_replay(config, NAME, store, start=START, end=END, run_id=run_id, actors=True, feed=feed))
    assert run.flow["feed"] == feed
    assert run.backtest.trades, "the span should trade"
    assert np.array_equal(run.result.equity, run.backtest.equity), "paper on actors is not the backtest"
    assert same_trades(run.result.trades, run.backtest.trades)
    assert run.result.metrics == run.backtest.metrics
    assert run.counts.denied == 0 and run.flow["bars"] == len(run.backtest.equity)
    fills, positions, _ = asyncio.run(_journal_state(store, run_id))
    assert len(fills) == len({(f.venue, f.venue_fill_id) for f in fills}) > 0
    held = {p.instrument: p.size for p in positions}
    key = run.instruments[0]
    assert held[key] == pytest.approx(sum(f.signed_qty for f in fills if f.instrument == key), abs=1e-9)


def test_a_killed_execution_server_comes_back_reconciles_and_the_run_still_equals_the_backtest(store, lake_config):
    import ray

    from actors import names

    config = paper_config(lake_config)
    run_id = f"paper-actors-kill-{next(_runs)}"
    killed = []

    def kill_when_trading():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                execution = ray.get_actor(names.EXECUTION, namespace=names.NAMESPACE)
                status = ray.get(execution.status.remote(), timeout=10)
            except Exception:
                time.sleep(0.05)
                continue
            if status.get("started") and status["counts"]["fills"] >= 20:
                ray.kill(execution, no_restart=False)  # its process dies; Ray starts it again
                killed.append(status["counts"]["fills"])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_trading, daemon=True)
    killer.start()
    run = asyncio.run(run_paper_replay(config, NAME, store, start=START, end=END, run_id=run_id, actors=True,
                                       feed="lake"))  # fmt: skip
    killer.join(timeout=5)
    assert killed, "the Execution Server was not killed mid-run"
    assert run.counts.restarts >= 1, "the monitor never found the server gone"
    assert np.array_equal(run.result.equity, run.backtest.equity), "the restart changed the run"
    assert same_trades(run.result.trades, run.backtest.trades)
    fills, positions, _ = asyncio.run(_journal_state(store, run_id))
    venue_fill_ids = {(f.venue, f.venue_fill_id) for f in fills}
    assert len(fills) == len(venue_fill_ids), "a fill journaled twice"
    n_trades_fills = sum(1 for f in fills)
    assert n_trades_fills >= killed[0]
    held = {p.instrument: p.size for p in positions}
    key = run.instruments[0]
    assert held[key] == pytest.approx(sum(f.signed_qty for f in fills if f.instrument == key), abs=1e-9)


def test_botmain_halt_and_resume_move_the_running_session_and_refuse_without_one(store, lake_config, session_config_dir):
    import ray

    from actors.trading.launch import start_paper_actors, stop_paper_actors
    from jobs.sweep.job import resolve_strategy
    from tests.test_cli import botmain

    none = botmain(session_config_dir, "halt")
    assert none.returncode != 0 and "no trading session is running" in none.stderr, none.stderr
    config = paper_config(lake_config)
    run_id = f"paper-actors-cli-{next(_runs)}"
    asyncio.run(_open_run(store, run_id))
    resolved = resolve_strategy(config, NAME)
    actors = start_paper_actors(config, run_id, NAME, resolved.strategy(resolved.strategy.Params(**resolved.fixed)))
    try:
        halted = botmain(session_config_dir, "halt", "--strategy", NAME, "--reason", "cli test")
        assert halted.returncode == 0, halted.stderr
        assert f"{NAME}: active -> halted (cli test)" in halted.stdout, halted.stdout
        assert ray.get(actors.risk.status.remote())["states"][NAME] == "halted"
        unknown = botmain(session_config_dir, "halt", "--strategy", "no_such_strategy")
        assert unknown.returncode != 0 and "no_such_strategy" in unknown.stderr, unknown.stderr
        resumed = botmain(session_config_dir, "resume", "--strategy", NAME)
        assert resumed.returncode == 0 and "halted -> active" in resumed.stdout, resumed.stdout
        assert ray.get(actors.risk.status.remote())["states"][NAME] == "active"
    finally:
        stop_paper_actors(actors)
    _, _, events = asyncio.run(_journal_state(store, run_id))
    assert events.get("transition") == 2


async def _open_run(dsn, run_id):
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await Journal(pool).open_run(run_id, mode="paper", strategy=NAME)
    finally:
        await pool.close()


def test_halt_on_the_risk_actor_refuses_new_orders_and_is_journaled(store, lake_config):
    import ray

    from actors.trading.launch import start_paper_actors, stop_paper_actors
    from jobs.sweep.job import resolve_strategy
    from sim.history import load_frame
    from sim.settings import SimSettings

    config = paper_config(lake_config)
    run_id = f"paper-actors-halt-{next(_runs)}"
    resolved = resolve_strategy(config, NAME)
    frame = load_frame(config, resolved.instruments, None, START, "2025-05-10T06:00")
    settings = SimSettings.from_config(config, resolved.instruments, NAME)

    asyncio.run(_open_run(store, run_id))
    actors = start_paper_actors(config, run_id, NAME, resolved.strategy(resolved.strategy.Params(**resolved.fixed)))
    try:
        moved = ray.get(actors.risk.halt.remote("operator test", NAME))
        assert (moved["previous"], moved["state"]) == ("active", "halted")
        ray.get(actors.strategy.run.remote(frame, settings))
        status = ray.get(actors.risk.status.remote())
        counts = status["strategies"][NAME]
        assert status["states"][NAME] == "halted"
        assert counts["intents"] > 0 and counts["denied"] == counts["intents"] and counts["sent"] == 0
        assert set(counts["denied_by"]) == {"trading_state"}, counts["denied_by"]
        resumed = ray.get(actors.risk.resume.remote("operator test done", NAME))
        assert resumed["state"] == "active"
    finally:
        stop_paper_actors(actors)
    fills, _, events = asyncio.run(_journal_state(store, run_id))
    assert not fills
    assert events.get("transition") == 2 and events.get("reject") == counts["denied"]
