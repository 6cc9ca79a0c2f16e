"""The ``botmain`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from cluster.config import BotmainConfig, ConfigError, load_config, mask_dsn

TABLES_SHOWN = ("instruments", "bars", "funding_rates", "quotes", "market_trades", "book_snapshots", "trading_pairs")


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
      botmain down                stop Ray and the embedded store

    Configuration is read from configs/*.yaml (or $BOTMAIN_CONFIG_DIR); secrets from
    BOTMAIN_* environment variables, e.g. BOTMAIN_PG_DSN to use your own PostgreSQL.
    """


@main.command()
@click.option("--address", help="join the Ray cluster whose head GCS is at HOST:PORT instead of starting a head")
@click.option("--node-ip-address", help="this node's address, when joining")
def up(address: str | None, node_ip_address: str | None) -> None:
    """Start the shared store and a Ray head with its dashboard (or join a cluster)."""
    from cluster import runtime
    from cluster.store.connection import prepare_store, resolve_dsn

    config = _config()
    dsn = resolve_dsn(config)
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
    errors: list[str] = field(default_factory=list)


def collect_status(config: BotmainConfig) -> Status:
    from cluster import runtime
    from cluster.lake import Lake
    from cluster.store.connection import connect, resolve_dsn
    from cluster.store.migrations import applied, available

    st = Status()
    ends = runtime.endpoints(config.cluster)
    st.gcs_address, st.dashboard_url, st.token_file = ends.gcs_address, ends.dashboard_url, str(runtime.token_path())
    if runtime.dashboard_alive(ends.dashboard_url):
        st.ray_running = True
        alive = [n for n in runtime.nodes(ends.dashboard_url) if n.get("state") == "ALIVE"]
        st.nodes = len(alive)
        st.cpus = sum(n.get("resources_total", {}).get("CPU", 0.0) for n in alive)

    st.store_kind = "external" if config.pg_dsn else "embedded"
    dsn = resolve_dsn(config, start_embedded=False)
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
        click.echo(json.dumps(asdict(st)))
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
        from cluster import job_submission

        args = ["jobs.ingest", *options, *[str(p.resolve()) for p in paths]]
        try:
            job_id = job_submission.submit(config, args, job_name="ingest")
            click.echo(f"submitted Ray job {job_id}")
            final = job_submission.follow(config, job_id)
        except job_submission.JobFailed as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"job {job_id}: {final}")
        if final != "SUCCEEDED":
            sys.exit(1)
        return
    from jobs.ingest.__main__ import main as ingest_main

    sys.exit(ingest_main([*options, *[str(p) for p in paths]]))
