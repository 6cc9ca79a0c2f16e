"""``botmain up``, ``down`` and ``status``: the shared store and the Ray cluster, and what they hold."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field

import click

from cli.market_data import render_status
from cli.session import command_config, connect_ray
from cluster.config import BotmainConfig, mask_dsn

TABLES_SHOWN = (
    "instruments", "bars", "funding_rates", "quotes", "market_trades", "book_snapshots", "trading_pairs",
    "chain_events", "news_items", "strategy_signals",
)


@click.command()
@click.option("--address", help="join the Ray cluster whose head GCS is at HOST:PORT instead of starting a head")
@click.option("--node-ip-address", help="this node's address, when joining")
def up(address: str | None, node_ip_address: str | None) -> None:
    """Start the shared store and a Ray head with its dashboard (or join a cluster)."""
    from cluster import runtime
    from cluster.store.connection import prepare_store, resolve_dsn
    from cluster.store.embedded import EmbeddedPostgresError
    from cluster.store.password_file import PasswordFileError

    config = command_config()
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


@click.command()
@click.option("--keep-store", is_flag=True, help="leave the embedded PostgreSQL running")
def down(keep_store: bool) -> None:
    """Stop Ray on this machine and the embedded PostgreSQL."""
    from cluster import runtime
    from cluster.store.connection import embedded_server

    config = command_config()
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
            
            connect_ray(config)
            st.market_data = market_data_status()
        except Exception as exc:  # status reports what it cannot reach
            st.errors.append(f"market data: {type(exc).__name__}: {exc}")
    lake = Lake(config.lake_root)
    st.lake_root = str(config.lake_root)
    summary = lake.summary() if config.lake_root.exists() else []
    st.lake_series, st.lake_rows = len(summary), sum(s.rows for s in summary)
    return st


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def status(as_json: bool) -> None:
    """Ray nodes, store reachability and migrations, lake and table row counts."""
    config = command_config()
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
        for line in render_status(st.market_data):
            click.echo(line)
    for err in st.errors:
        click.echo(f"error      {err}", err=True)
