"""``botmain mds ...``: start, inspect and stop the Market Data Server and its feed actors."""

from __future__ import annotations

import json
import time

import click

from cli.session import command_config, connect_ray


def duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``4m 05s``, ``3h 12m``, ``302d 2h``: a span a reader takes in at a glance."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days:,}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def render_status(status: dict | None) -> list[str]:
    if status is None:
        return ["market data not running (botmain mds start)"]
    subs = status.get("subscribers", [])
    lines = [
        f"market data mds up {duration(status['uptime_s'])}, clock {status['clock']}, {len(subs)} subscriber(s)"
    ]
    for name, h in status.get("feeds", {}).items():
        errors = ", ".join(f"{k} {v}" for k, v in h.get("errors", {}).items()) or "none"
        detail = h.get("detail") or {}
        where = f"  {detail['position']:,}/{detail['total']:,}" if "position" in detail else ""
        lines.append(f"  feed {name:<9} {h.get('state', '?'):<12} {h.get('events', 0):>10,} events{where}  errors: {errors}")
        if h.get("last_error"):
            lines.append(f"       last error: {h['last_error']}")
    for source, s in status.get("sources", {}).items():
        lines.append(
            f"  in   {source:<9} {s['events']:>12,} events  {s['events_per_s']:>9,.0f}/s  "
            f"pipeline lag {s['pipeline_lag_s'] * 1e3:.1f} ms"
        )
    for venue, v in status.get("venues", {}).items():
        state = "STALE" if v["stale"] else "live"
        lines.append(f"  venue {venue:<12} {state:<6} silent {duration(v['silent_s'])}")
    for symbol, b in status.get("best", {}).items():
        if b["bid"] is None and b["ask"] is None:
            lines.append(f"  best {symbol:<10} none: no venue quoting it is live")
            continue
        bid = f"{b['bid']:g} @{b['bid_venue']}" if b["bid"] is not None else "-"
        ask = f"{b['ask']:g} @{b['ask_venue']}" if b["ask"] is not None else "-"
        lines.append(f"  best {symbol:<10} bid {bid:<28} ask {ask}")
    for sub in subs:
        lines.append(f"  subscriber {sub['name']}: {sub['delivered']:,} delivered, {sub['pending']:,} queued, {sub['dropped']:,} dropped")
    store = status.get("store")
    if store is None:
        lines.append("  store      not persisting")
    else:
        written = sum(t["written"] for t in store["tables"].values())
        dropped = sum(t["dropped"] for t in store["tables"].values())
        health = "ok" if store["store_ok"] else f"FAILING ({store['last_error']})"
        lines.append(f"  store      {health}: {written:,} rows written, {store['pending_rows']:,} queued, {dropped:,} dropped")
        events = sum(s["events"] for s in status.get("sources", {}).values())
        why = []
        if store.get("books_thinned"):
            why.append(f"{store['books_thinned']:,} book(s) not kept in PostgreSQL (one per instrument per "
                       f"{store['book_interval_ms']:,.0f} ms)")
        if store.get("bars_built"):
            why.append(f"{store['bars_built']:,} bar(s) the MDS built from trades and quotes")
        if why:
            lines.append(f"             of {events:,} events in: {'; '.join(why)}")
    return lines


@click.group("mds")
def mds() -> None:
    """The Market Data Server and its feed actors (named actors in the Ray dashboard)."""


@mds.command("start")
@click.option("--feed", "feeds", multiple=True, help="feed to start (repeatable; default: the enabled ones in market_data.yaml)")
@click.option("--speed", help="replay speed: a number (1 = real time) or max")
@click.option("--start", "start_", help="replay from this time, e.g. 2024-08-08T23:55")
@click.option("--end", help="replay until this time (exclusive)")
@click.option("--instrument", "instruments", multiple=True, help="replay only venue:SYMBOL (repeatable)")
@click.option("--wait", is_flag=True, help="wait for the replay to finish and print the status")
def mds_start(feeds: tuple[str, ...], speed: str | None, start_: str | None, end: str | None, instruments: tuple[str, ...], wait: bool) -> None:
    """Start the MDS and the feed actors on the running cluster."""
    import dataclasses

    import ray

    from actors import names, topology
    from cluster.store.connection import resolve_dsn

    config = command_config()
    update: dict = {}
    if speed is not None:
        try:
            update["speed"] = "max" if speed == "max" else float(speed)
        except ValueError:
            raise click.BadParameter(f"expected a number or max, got {speed!r}", param_hint="--speed") from None
    if start_:
        update["start"] = start_
    if end:
        update["end"] = end
    if instruments:
        update["instruments"] = list(instruments)
    if update:
        from cluster.config.models import ReplayFeedConfig

        try:
            replay = ReplayFeedConfig.model_validate({**config.market_data.feeds.replay.model_dump(), **update})
        except ValueError as exc:
            raise click.ClickException(f"replay settings: {exc}") from None
        md = config.market_data.model_copy(
            update={"feeds": config.market_data.feeds.model_copy(update={"replay": replay})}
        )
        config = dataclasses.replace(config, market_data=md)
    # The MDS's writer reads the DSN in its own process; checked here to fail fast.
    if config.market_data.mds.persist.enabled and resolve_dsn(config, start_embedded=False) is None:
        raise click.ClickException("the embedded PostgreSQL is not running (botmain up), and persist is enabled")
    connect_ray(config)
    try:
        started = topology.start_market_data(config, list(feeds) if feeds else None)
    except topology.TopologyError as exc:
        raise click.ClickException(str(exc)) from None
    from cluster import runtime

    dashboard = runtime.endpoints(config.cluster).dashboard_url
    click.echo(f"mds        named actor {names.MDS!r} in namespace {names.NAMESPACE!r} (Ray dashboard: {dashboard}/#/actors)")
    for feed, health in started.items():
        click.echo(f"feed       {names.feed_actor(feed)!r}: {health['state']}" + (f" ({health['last_error']})" if health.get("last_error") else ""))
    if wait and "replay" in started:
        actor = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
        t0 = time.monotonic()
        health = ray.get(actor.wait_finished.remote())
        ray.get(ray.get_actor(names.MDS, namespace=names.NAMESPACE).flush_store.remote())
        click.echo(f"replay     {health['state']}: {health['events']:,} events in {time.monotonic() - t0:.1f}s")
    if wait:
        for line in render_status(topology.market_data_status()):
            click.echo(line)


@mds.command("stop")
def mds_stop() -> None:
    """Stop the feed actors and the MDS (which stores what it still holds)."""
    from actors import topology

    connect_ray(command_config())
    stopped = topology.stop_market_data()
    click.echo("stopped    " + (", ".join(stopped) if stopped else "nothing was running"))


@mds.command("status")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def mds_status(as_json: bool) -> None:
    """Feeds, venues (stale or live), consolidated best prices, subscribers, store."""
    from actors import topology

    connect_ray(command_config())
    status = topology.market_data_status()
    if as_json:
        click.echo(json.dumps(status, default=str))
        return
    for line in render_status(status):
        click.echo(line)
