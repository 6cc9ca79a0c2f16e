"""``botmain ingest``, ``backtest``, ``sweep``, ``train-selector`` and ``runs``: the research half,
run in this process or submitted as Ray jobs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from cli.session import command_config
from cluster.config import BotmainConfig

RANK_BY = click.Choice(["sharpe", "total_return", "calmar", "sortino"])  # simulation.yaml's sweep.rank_by


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--venue", help="venue for files whose name or folder does not say (must be in venues.yaml)")
@click.option("--snapshot-interval", type=float, help="seconds between stored book snapshots (default 1)")
@click.option("--snapshot-depth", type=int, help="levels per side in stored book snapshots (default 20)")
@click.option("--submit", is_flag=True, help="run as a Ray job on the cluster and follow its logs (paths must be readable on the head node)")
def ingest(
    paths: tuple[Path, ...], venue: str | None, snapshot_interval: float | None, snapshot_depth: int | None, submit: bool
) -> None:
    """Load market data files (or folders of them) into the lake and PostgreSQL.

    \b
    Reads freqtrade Feather candles, funding and trades; Drift funding CSV exports;
    raw Binance (spot, USD-M) and Hyperliquid websocket recordings (.gz).
    A file that cannot be parsed is refused with the reason; nothing of it is stored.
    """
    config = command_config()
    # Unset options are left to the ingest job, which owns their defaults.
    options: list[str] = []
    for flag, value in (("--venue", venue), ("--snapshot-interval", snapshot_interval), ("--snapshot-depth", snapshot_depth)):
        if value is not None:
            options += [flag, str(value)]
    if submit:
        _submit_and_follow(config, ["jobs.ingest", *options, *[str(p.resolve()) for p in paths]], "ingest")
        return
    from jobs.ingest.__main__ import main as ingest_main

    sys.exit(ingest_main([*options, *[str(p) for p in paths]]))


def _parse_params(pairs: tuple[str, ...]) -> dict:
    from sim.search import parse_dimension

    out = {}
    for pair in pairs:
        name, values = parse_dimension(pair)
        if len(values) != 1:
            raise click.BadParameter(f"{pair!r}: one value per --param", param_hint="--param")
        out[name] = values[0]
    return out


@click.command()
@click.argument("strategy")
@click.option("--instrument", "instruments", multiple=True, help="venue:SYMBOL (repeatable; default: the instance's)")
@click.option("--param", "params", multiple=True, help="name=value, overriding the instance's params (repeatable)")
@click.option("--timeframe", help="bar size in the lake (default: simulation.yaml)")
@click.option("--start", help="first bar, e.g. 2025-05-10")
@click.option("--end", help="end (exclusive)")
@click.option("--fill-price", type=click.Choice(["next_open", "close"]), help="override simulation.yaml's fill rule")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), help="write an HTML report with PNG plots here")
def backtest(
    strategy: str,
    instruments: tuple[str, ...],
    params: tuple[str, ...],
    timeframe: str | None,
    start: str | None,
    end: str | None,
    fill_price: str | None,
    report_dir: Path | None,
) -> None:
    """Run one backtest in this process and print its metrics.

    STRATEGY is an instance from strategies.yaml (e.g. sol_ema_cross) or a registered
    strategy (ema_cross, funding_carry, ml_direction) with --instrument.
    """
    from pydantic import ValidationError

    from jobs.sweep.job import resolve_strategy
    from sim.backtest import backtest as run_backtest
    from sim.books import market_with_books
    from sim.history import HistoryError, load_frame
    from sim.settings import SimSettings
    from sim.summary import render_metrics

    config = command_config()
    try:
        resolved = resolve_strategy(config, strategy, instruments)
        chosen = {**resolved.fixed, **_parse_params(params)}
        strat = resolved.strategy(resolved.strategy.Params(**chosen))
        frame = load_frame(config, resolved.instruments, timeframe, start, end)
        settings = SimSettings.from_config(config, resolved.instruments, resolved.instance)
        if fill_price:
            settings = settings.with_(fill_price=fill_price, latency_ms=0.0 if fill_price == "close" else settings.latency_ms)
    except (KeyError, ValueError, HistoryError, ValidationError) as exc:
        raise click.ClickException(str(exc)) from None
    frame, market = market_with_books(config, frame, settings)
    result = run_backtest(strat, frame, settings, market)
    click.echo(render_metrics(result, resolved.instruments))
    if report_dir is not None:
        from sim.report import write_report

        path = write_report(result, frame, settings, report_dir)
        click.echo(f"report: {path}")


@click.command()
@click.option("--strategy", required=True, help="instance from strategies.yaml, or a registered strategy with --instrument")
@click.option("--grid", "grid", multiple=True, help="name=start:stop:step | name=a,b,c | name=value (repeatable; extra words after --grid also count)")
@click.argument("more_grid", nargs=-1)
@click.option("--instrument", "instruments", multiple=True, help="venue:SYMBOL (repeatable)")
@click.option("--random", "samples", type=int, help="random search: this many samples of the grid")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--run-id", help="resume this run (skips stored combos) or name a new one")
@click.option("--timeframe")
@click.option("--start")
@click.option("--end")
@click.option("--store-best", type=int, help="best runs whose trades and equity curves are stored")
@click.option("--chunk-size", type=int, help="combos per Ray task")
@click.option("--rank-by", type=RANK_BY)
@click.option("--report-dir", help="the best combo's HTML report (default reports/<run id>, on the head node)")
@click.option("--no-report", is_flag=True, help="skip the HTML report")
@click.option("--no-follow", is_flag=True, help="submit and return the job id")
def sweep(
    strategy, grid, more_grid, instruments, samples, seed, run_id, timeframe, start, end, store_best, chunk_size, rank_by,
    report_dir, no_report, no_follow,
) -> None:  # fmt: skip
    """Submit a parameter sweep as a Ray job and follow its progress.

    \b
    botmain sweep --strategy sol_ema_cross --grid fast=5:55:2 slow=20:220:8
    botmain sweep --strategy sol_ema_cross --random 200 --seed 7
    Without --grid, the strategy's declared search space is used.
    """
    config = command_config()
    args = ["jobs.sweep", "--strategy", strategy, "--seed", str(seed)]
    dims = [*grid, *more_grid]
    if dims:
        args += ["--grid", *dims]
    for key in instruments:
        args += ["--instrument", key]
    for flag, value in (
        ("--random", samples),
        ("--run-id", run_id),
        ("--timeframe", timeframe),
        ("--start", start),
        ("--end", end),
        ("--store-best", store_best),
        ("--chunk-size", chunk_size),
        ("--rank-by", rank_by),
        ("--report-dir", report_dir),
    ):
        if value is not None:
            args += [flag, str(value)]
    if no_report:
        args.append("--no-report")
    _submit_and_follow(config, args, "sweep", follow=not no_follow)


@click.command("train-selector")
@click.option("--instrument", default="SOL-PERP", show_default=True, help="the asset to train for (SOL-PERP, SOL-USDC or SOL)")
@click.option("--start")
@click.option("--end")
@click.option("--venue", "venues", multiple=True, help="only these venues (repeatable)")
@click.option("--folds", type=int, help="walk-forward folds (default 4)")
@click.option("--trees", type=int, help="boosting rounds (default 300)")
@click.option("--requests-per-hour", type=int, help="decision requests drawn per recorded hour (default 4)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--activate", type=click.Choice(["if_better", "always", "never"]), default="if_better", show_default=True,
              help="make the new version the served one")
@click.option("--no-follow", is_flag=True, help="submit and return the job id")
def train_selector(instrument, start, end, venues, folds, trees, requests_per_hour, seed, activate, no_follow) -> None:
    """Train the venue selector as a Ray job: dataset from the lake, walk-forward validation
    against the whitepaper rule and single-venue policies (in bps), model registry."""
    config = command_config()
    args = ["jobs.train_selector", "--instrument", instrument, "--seed", str(seed), "--activate", activate]
    for venue in venues:
        args += ["--venue", venue]
    for flag, value in (("--start", start), ("--end", end), ("--folds", folds), ("--trees", trees), ("--requests-per-hour", requests_per_hour)):
        if value is not None:
            args += [flag, str(value)]
    _submit_and_follow(config, args, "train-selector", follow=not no_follow)


def _submit_and_follow(config: BotmainConfig, args: list[str], job_name: str, follow: bool = True) -> None:
    """Submit ``python -m args...`` as a Ray job, stream its logs, exit 1 unless it succeeded."""
    from cluster import job_submission

    try:
        job_id = job_submission.submit(config, args, job_name=job_name)
        click.echo(f"submitted Ray job {job_id}")
        if not follow:
            return
        final = job_submission.follow(config, job_id)
    except job_submission.JobFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"job {job_id}: {final}")
    if final != "SUCCEEDED":
        sys.exit(1)


@click.group(invoke_without_command=True)
@click.pass_context
def runs(ctx: click.Context) -> None:
    """List stored sweep runs and paper/live runs (newest first); `runs show RUN_ID` for a
    sweep's leaderboard, `botmain orders --run RUN_ID` for a paper run's orders."""
    if ctx.invoked_subcommand is not None:
        return
    from cli.trading import trading_runs_table
    from jobs.sweep.leaderboard import render_runs
    from jobs.sweep.results import list_runs

    click.echo(render_runs(_with_store(list_runs)))
    click.echo("")
    click.echo(trading_runs_table())


@runs.command("show")
@click.argument("run_id")
@click.option("--top", type=int, default=20, show_default=True)
@click.option("--rank-by", type=RANK_BY, default=None)
def runs_show(run_id: str, top: int, rank_by: str | None) -> None:
    """The leaderboard of one run."""
    from jobs.sweep.leaderboard import render_leaderboard
    from jobs.sweep.results import leaderboard

    config = command_config()
    rank_by = rank_by or config.simulation.sweep.rank_by
    run, rows = _with_store(lambda conn: leaderboard(conn, run_id, rank_by, top), config)
    if run is None:
        raise click.ClickException(f"no run {run_id!r} (botmain runs lists them)")
    click.echo(render_leaderboard(run, rows, rank_by))


def _with_store(query, config: BotmainConfig | None = None):
    from cluster.store.connection import connect, prepare_store, resolve_dsn

    config = config or command_config()

    async def go():
        dsn = resolve_dsn(config)
        await prepare_store(dsn)
        conn = await connect(dsn)
        try:
            return await query(conn)
        finally:
            await conn.close()

    return asyncio.run(go())
