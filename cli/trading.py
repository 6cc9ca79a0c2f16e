"""``botmain paper``, ``halt``, ``resume``, ``orders``, ``fills`` and ``positions``: the
trading half, on the trading actors of the running cluster, read from and written to the
journal in PostgreSQL."""

from __future__ import annotations

import asyncio

import click

from cli.session import command_config, connect_ray


@click.command()
@click.option("--strategy", "name", required=True, help="instance from strategies.yaml (e.g. sol_ema_cross)")
@click.option("--start", help="first bar of the replay, e.g. 2025-05-10")
@click.option("--end", help="end of the replay (exclusive)")
@click.option("--timeframe", help="bar size in the lake (default: simulation.yaml)")
@click.option("--speed", type=float, help="bar-seconds replayed per second (default: as fast as it goes)")
@click.option("--run-id", help="name the paper run (default paper-<strategy>-<time>)")
@click.option("--as-backtest/--with-all-rules", default=True, show_default=True,
              help="switch off the monitor's rules the simulator lacks (daily loss limit, capital split by venue)")  # fmt: skip
@click.option("--trades", "show_trades", type=int, default=0, help="print the first N round trips")
@click.option("--feed", type=click.Choice(["mds", "lake"]),
              help="the strategy actor's bars: played through the Market Data Server by the replay feed, or read "
                   "from the lake and handed over (default: the MDS when every leg has bars the replay can play)")
@click.option("--in-process", is_flag=True,
              help="run strategy, risk and execution in this process instead of as actors on the cluster")  # fmt: skip
def paper(name, start, end, timeframe, speed, run_id, as_backtest, show_trades, feed, in_process) -> None:
    """Paper-trade a strategy on a replay of the lake's bars and journal it.

    \b
    The strategy, the Risk Rules Monitor, the Execution Server and the paper venue (the
    backtest's simulator, stepped bar by bar) run as named actors on the cluster
    (strategy:NAME, risk, execution, paper-venue: botmain up first), the replay feed
    playing the span's bars and funding to the strategy through the Market Data Server;
    or with --in-process in this process. Orders, fills, positions, funding, equity and risk decisions go to
    PostgreSQL under the run id. While it runs, `botmain halt` / `botmain resume` change
    its trading state. At the end: the metrics table of `botmain backtest` and the
    backtest-vs-paper line.
    """
    from pydantic import ValidationError

    from cluster.store.connection import prepare_store, resolve_dsn
    from jobs.paper.replay import as_backtest as backtest_like
    from jobs.paper.replay import run_paper_replay
    from sim.history import HistoryError
    from sim.summary import render_metrics

    config = command_config()
    if as_backtest:
        config = backtest_like(config)
    dsn = resolve_dsn(config)
    if not in_process:
        connect_ray(config)

    async def go():
        await prepare_store(dsn)
        return await run_paper_replay(config, name, dsn, start=start, end=end, timeframe=timeframe, speed=speed,
                                      run_id=run_id, actors=not in_process, feed=feed, say=click.echo)  # fmt: skip

    from actors.trading.launch import SessionRunning
    from actors.trading.strategy_actor import FeedStalled
    from jobs.paper.replay import FeedBusy

    try:
        run = asyncio.run(go())
    except SessionRunning as exc:
        raise click.ClickException(f"{exc}: wait for it to end, or botmain down") from None
    except (FeedBusy, FeedStalled) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else "unknown key") from None
    except (ValueError, HistoryError, ValidationError) as exc:
        raise click.ClickException(str(exc)) from None
    c = run.counts
    click.echo(render_metrics(run.result, run.instruments))
    click.echo("")
    if show_trades > 0:
        from cli.trading_render import render_trades

        click.echo(render_trades(run.result.trades, show_trades))
        click.echo("")
    click.echo(f"orders: {c.intents} intents, {c.sent} sent, {c.denied} denied"
               + (f" ({', '.join(f'{k} {v}' for k, v in sorted(c.denied_by.items()))})" if c.denied_by else "")
               + f"; {c.fills} fills")  # fmt: skip
    click.echo("decisions by venue: " + (", ".join(f"{v} {n}" for v, n in sorted(run.decisions.items())) or "none"))
    decisions = {k: n for k, n in run.risk_events.items() if k != "allocation"}  # that one is the summary below
    click.echo("risk events: " + (", ".join(f"{k} {n}" for k, n in sorted(decisions.items())) or "none"))
    if run.flow is not None:
        f = run.flow
        click.echo(f"across the actors: {f['bars']:,} bars in {f['wall_s']:.1f} s, "
                   f"each bar's round trip p50 {f['bar_ms_p50']:.1f} ms / p99 {f['bar_ms_p99']:.1f} ms")  # fmt: skip
    if run.allocation:
        from cli.trading_render import render_allocation

        click.echo(render_allocation(run.allocation))
    click.echo(run.comparison())
    click.echo(f"journaled under run {run.run_id}: botmain orders / fills / positions --run {run.run_id}")


def _risk_actor(config):
    connect_ray(config)
    from actors import names
    from actors.topology import named_actor

    risk = named_actor(names.RISK)
    if risk is None:
        raise click.ClickException("no trading session is running on the cluster (botmain paper starts one)")
    return risk


def _transition(action: str, strategy: str | None, reason: str) -> None:
    import ray

    risk = _risk_actor(command_config())
    try:
        moved = ray.get(getattr(risk, action).remote(reason, strategy), timeout=60)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else "unknown strategy") from None
    who = "every strategy" if moved["scope"] == "global" else moved["scope"]
    click.echo(f"{who}: {moved['previous']} -> {moved['state']} ({moved['reason']}); "
               f"{moved['cancelled']} open order(s) cancelled; journaled as a risk event")  # fmt: skip


@click.command()
@click.option("--strategy", help="one strategy instance (default: every strategy)")
@click.option("--reason", default="operator", show_default=True, help="why, for the journal")
@click.option("--reducing", is_flag=True, help="REDUCING instead of HALTED: orders that reduce positions still go")
def halt(strategy, reason, reducing) -> None:
    """Stop new orders in the running trading session (HALTED; cancels still go).

    Open orders are cancelled; positions stay. The Risk Rules Monitor journals the
    transition with its reason."""
    _transition("reduce" if reducing else "halt", strategy, reason)


@click.command()
@click.option("--strategy", help="one strategy instance (default: every strategy)")
@click.option("--reason", default="operator", show_default=True, help="why, for the journal")
def resume(strategy, reason) -> None:
    """Back to ACTIVE after `botmain halt` or a tripped loss rule (journaled)."""
    _transition("resume", strategy, reason)


def _with_journal(query):
    """Run ``query(journal)`` against the configured store (started and migrated as needed)."""
    from cluster.store.connection import prepare_store, resolve_dsn
    from cluster.store.journal import Journal

    config = command_config()

    async def go():
        import asyncpg

        dsn = resolve_dsn(config)
        await prepare_store(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            return await query(Journal(pool))
        finally:
            await pool.close()

    return asyncio.run(go())


def _journal_query(run_id: str | None, query):
    """The run ``run_id`` (default: the latest) and ``query(journal, run_id)``."""

    async def go(journal):
        run = await (journal.run(run_id) if run_id else journal.latest_run())
        if run is None:
            raise click.ClickException(f"no trading run {run_id}" if run_id else "no paper or live run yet (botmain paper --strategy NAME)")
        return run, await query(journal, run.run_id)

    return _with_journal(go)


RUN = click.option("--run", "run_id", help="paper or live run id (default: the latest)")


@click.command()
@RUN
@click.option("--state", "states", multiple=True, help="only orders in this state (repeatable)")
def orders(run_id, states) -> None:
    """A run's orders: state, side, quantity, fills, route and why."""
    from cli.trading_render import render_orders
    from cluster.orders import OrderState

    try:
        wanted = [OrderState(s) for s in states] or None
    except ValueError as exc:
        raise click.ClickException(f"{exc}; states: {', '.join(s.value for s in OrderState)}") from None
    run, rows = _journal_query(run_id, lambda j, r: j.orders(r, wanted))
    click.echo(render_orders(run, rows))


@click.command()
@RUN
def fills(run_id) -> None:
    """A run's fills, in the order they were journaled."""
    from cli.trading_render import render_fills

    run, rows = _journal_query(run_id, lambda j, r: j.fills(r))
    click.echo(render_fills(run, rows))


@click.command()
@RUN
def positions(run_id) -> None:
    """A run's positions per strategy and instrument (size, entry, realised PnL, fees,
    funding), and the monitor's allocation, usage and PnL per strategy and venue."""
    from cli.trading_render import render_allocation, render_positions

    async def both(journal, r):
        return await journal.positions(r), await journal.latest_risk_event(r, "allocation")

    run, (rows, allocation) = _journal_query(run_id, both)
    click.echo(render_positions(run, rows))
    click.echo("")
    click.echo(render_allocation(allocation))


def trading_runs_table(limit: int = 50) -> str:
    """Paper and live runs, for ``botmain runs`` (beside the sweeps)."""
    from cli.trading_render import render_trading_runs

    return render_trading_runs(_with_journal(lambda journal: journal.runs(limit)))
