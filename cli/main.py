"""The ``botmain`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from cluster.config import BotmainConfig, ConfigError, load_config, mask_dsn

RANK_BY = click.Choice(["sharpe", "total_return", "calmar", "sortino"])  # simulation.yaml's sweep.rank_by
TABLES_SHOWN = (
    "instruments", "bars", "funding_rates", "quotes", "market_trades", "book_snapshots", "trading_pairs",
    "chain_events", "news_items", "strategy_signals",
)


def _config() -> BotmainConfig:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Botmain: a self-hosted trading platform on a Ray cluster.

    \b
    Typical session:
      botmain up                  start the store and a local Ray cluster (dashboard included)
      botmain ingest data/sample  load recorded market data into the lake and PostgreSQL
      botmain status              where everything is, and how much data it holds
      botmain backtest sol_ema_cross --report reports/
                                  one backtest, in this process, with an HTML report
      botmain sweep --strategy sol_ema_cross --grid fast=5:55:2 slow=20:220:8
                                  a parameter sweep as a Ray job; results in PostgreSQL
      botmain runs [show RUN_ID]  stored sweeps and their leaderboards
      botmain mds start           the Market Data Server and its feeds (replay by default)
      botmain down                stop Ray and the embedded store

    Configuration is read from configs/*.yaml (or $BOTMAIN_CONFIG_DIR); secrets from
    BOTMAIN_* environment variables, e.g. BOTMAIN_PG_DSN to use your own PostgreSQL.
    """
    from cluster import runtime

    # Ray reads its auth mode once, at import: set it before any command imports Ray.
    runtime.enable_token_auth(create=False)


@main.command()
@click.option("--address", help="join the Ray cluster whose head GCS is at HOST:PORT instead of starting a head")
@click.option("--node-ip-address", help="this node's address, when joining")
def up(address: str | None, node_ip_address: str | None) -> None:
    """Start the shared store and a Ray head with its dashboard (or join a cluster)."""
    from cluster import runtime
    from cluster.store.connection import prepare_store, resolve_dsn
    from cluster.store.embedded import EmbeddedPostgresError
    from cluster.store.password_file import PasswordFileError

    config = _config()
    try:
        dsn = resolve_dsn(config)
    except (EmbeddedPostgresError, PasswordFileError) as exc:
        raise click.ClickException(f"store: {exc}") from None
    applied = asyncio.run(prepare_store(dsn))
    kind = "external (BOTMAIN_PG_DSN)" if config.pg_dsn else f"embedded, data in {config.path(config.store.postgres.embedded.data_dir)}"
    click.echo(f"store      {mask_dsn(dsn)}  [{kind}]" + (f"  applied {', '.join(applied)}" if applied else ""))
    config.lake_root.mkdir(parents=True, exist_ok=True)
    click.echo(f"lake       {config.lake_root}")
    address = address or config.cluster.address
    try:
        if address:
            runtime.join(address, node_ip_address)
            click.echo(f"ray        joined {address}")
            return
        ends = runtime.start_head(config.cluster)
    except runtime.RayRuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"ray        head at {ends.gcs_address}")
    click.echo(f"dashboard  {ends.dashboard_url}  (token auth: paste the token from {runtime.token_path()})")


@main.command()
@click.option("--keep-store", is_flag=True, help="leave the embedded PostgreSQL running")
def down(keep_store: bool) -> None:
    """Stop Ray on this machine and the embedded PostgreSQL."""
    from cluster import runtime
    from cluster.store.connection import embedded_server

    config = _config()
    try:
        runtime.stop()
    except runtime.RayRuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("ray        stopped")
    if config.pg_dsn is None and not keep_store:
        embedded_server(config).stop()
        click.echo("store      embedded PostgreSQL stopped")


@dataclass
class Status:
    ray_running: bool = False
    gcs_address: str = ""
    dashboard_url: str = ""
    token_file: str = ""
    nodes: int = 0
    cpus: float = 0.0
    store_dsn: str | None = None
    store_kind: str = ""
    store_reachable: bool = False
    migrations_applied: list[str] = field(default_factory=list)
    migrations_pending: list[str] = field(default_factory=list)
    lake_root: str = ""
    lake_series: int = 0
    lake_rows: int = 0
    table_rows: dict[str, int] = field(default_factory=dict)
    market_data: dict | None = None
    errors: list[str] = field(default_factory=list)


def collect_status(config: BotmainConfig) -> Status:
    from cluster import runtime
    from cluster.lake import Lake
    from cluster.store.connection import connect, resolve_dsn
    from cluster.store.migrations import applied, available
    from cluster.store.password_file import PasswordFileError

    st = Status()
    ends = runtime.endpoints(config.cluster)
    st.gcs_address, st.dashboard_url, st.token_file = ends.gcs_address, ends.dashboard_url, str(runtime.token_path())
    if runtime.dashboard_alive(ends.dashboard_url):
        st.ray_running = True
        alive = [n for n in runtime.nodes(ends.dashboard_url) if n.get("state") == "ALIVE"]
        st.nodes = len(alive)
        st.cpus = sum(n.get("resources_total", {}).get("CPU", 0.0) for n in alive)

    st.store_kind = "external" if config.pg_dsn else "embedded"
    try:
        dsn = resolve_dsn(config, start_embedded=False)
    except PasswordFileError as exc:
        dsn = None
        st.errors.append(f"store: {exc}")
    st.store_dsn = mask_dsn(dsn) if dsn else None

    async def probe() -> None:
        conn = await connect(dsn, timeout=5)
        try:
            done = await applied(conn)
            names = {m.version: f"{m.version:04d}_{m.name}" for m in available()}
            st.migrations_applied = [names.get(v, str(v)) for v in sorted(done)]
            st.migrations_pending = [n for v, n in sorted(names.items()) if v not in done]
            if not st.migrations_pending:
                for table in TABLES_SHOWN:
                    st.table_rows[table] = await conn.fetchval(f'SELECT count(*) FROM "{table}"')
        finally:
            await conn.close()

    if dsn:
        try:
            asyncio.run(probe())
            st.store_reachable = True
        except Exception as exc:  # any failure to reach it is what status reports
            st.errors.append(f"store: {type(exc).__name__}: {exc}")
    if st.ray_running:
        try:
            from actors.topology import market_data_status
            from cluster.cli_market_data import connect_ray

            connect_ray(config)
            st.market_data = market_data_status()
        except Exception as exc:  # status reports what it cannot reach
            st.errors.append(f"market data: {type(exc).__name__}: {exc}")
    lake = Lake(config.lake_root)
    st.lake_root = str(config.lake_root)
    summary = lake.summary() if config.lake_root.exists() else []
    st.lake_series, st.lake_rows = len(summary), sum(s.rows for s in summary)
    return st


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def status(as_json: bool) -> None:
    """Ray nodes, store reachability and migrations, lake and table row counts."""
    config = _config()
    st = collect_status(config)
    if as_json:
        click.echo(json.dumps(asdict(st), default=str))
        return
    if st.ray_running:
        click.echo(f"ray        {st.nodes} node(s), {st.cpus:g} CPU(s), head {st.gcs_address}")
        click.echo(f"dashboard  {st.dashboard_url}  (token in {st.token_file})")
    else:
        click.echo(f"ray        not running at {st.dashboard_url} (botmain up)")
    if st.store_dsn is None:
        click.echo("store      embedded PostgreSQL not running (botmain up)")
    else:
        reach = "reachable" if st.store_reachable else "NOT reachable"
        click.echo(f"store      {st.store_dsn}  [{st.store_kind}, {reach}]")
        if st.store_reachable:
            pend = f", pending: {', '.join(st.migrations_pending)}" if st.migrations_pending else ""
            click.echo(f"migrations {len(st.migrations_applied)} applied{pend}")
    click.echo(f"lake       {st.lake_root}  ({st.lake_series} series, {st.lake_rows:,} rows)")
    for table, rows in st.table_rows.items():
        click.echo(f"  {table:<16} {rows:>12,} rows")
    if st.ray_running:
        from cluster.cli_market_data import render_status

        for line in render_status(st.market_data):
            click.echo(line)
    for err in st.errors:
        click.echo(f"error      {err}", err=True)


@main.command()
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
    config = _config()
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


@main.command()
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

    config = _config()
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


@main.command()
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
    config = _config()
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


@main.command("train-selector")
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
    config = _config()
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


@main.group(invoke_without_command=True)
@click.pass_context
def runs(ctx: click.Context) -> None:
    """List stored sweep runs (newest first); `runs show RUN_ID` for a leaderboard."""
    if ctx.invoked_subcommand is not None:
        return
    from jobs.sweep.leaderboard import render_runs
    from jobs.sweep.results import list_runs

    click.echo(render_runs(_with_store(list_runs)))


@runs.command("show")
@click.argument("run_id")
@click.option("--top", type=int, default=20, show_default=True)
@click.option("--rank-by", type=RANK_BY, default=None)
def runs_show(run_id: str, top: int, rank_by: str | None) -> None:
    """The leaderboard of one run."""
    from jobs.sweep.leaderboard import render_leaderboard
    from jobs.sweep.results import leaderboard

    config = _config()
    rank_by = rank_by or config.simulation.sweep.rank_by
    run, rows = _with_store(lambda conn: leaderboard(conn, run_id, rank_by, top), config)
    if run is None:
        raise click.ClickException(f"no run {run_id!r} (botmain runs lists them)")
    click.echo(render_leaderboard(run, rows, rank_by))


def _with_store(query, config: BotmainConfig | None = None):
    from cluster.store.connection import connect, prepare_store, resolve_dsn

    config = config or _config()

    async def go():
        dsn = resolve_dsn(config)
        await prepare_store(dsn)
        conn = await connect(dsn)
        try:
            return await query(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


from cluster.cli_market_data import mds  # noqa: E402  (the group needs `main` defined first)

main.add_command(mds)

from cluster.cli_serve import decide, serve_command  # noqa: E402

main.add_command(serve_command)
main.add_command(decide)
