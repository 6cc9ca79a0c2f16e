"""Supervised market-data actors on the session's real Ray cluster: each long-lived actor is
killed while a replay runs (``ray.kill(actor, no_restart=False)``, as if its process died);
it comes back, events flow again within a bound, and what reaches PostgreSQL and the lake
is exactly the source: no row twice, none missing. And what the MDS records in the lake
reads back as the rows it was sent, and backtests like ingested history.

Bound stated: events flow again within ``RECOVERY_S`` of the kill (measured here: a few
seconds, most of it Ray starting the new process and its imports).
"""

from __future__ import annotations

import time

import pyarrow as pa

from cluster.config import BotmainConfig
from cluster.lake import Lake
from tests.conftest import SAMPLE_BARS, with_database, with_replay
from tests.test_market_data_cluster import _fetch, ray_cluster  # noqa: F401 - the module's cluster fixture

USDM = "binanceusdm:BTC-PERP"
SPOT = "binance:BTC-USDT"
RECOVERY_S = 30.0


def _counts(dsn: str) -> dict[str, int]:
    rows = _fetch(dsn, """
        SELECT 'quotes' AS t, count(*) AS n FROM quotes UNION ALL
        SELECT 'trades', count(*) FROM market_trades UNION ALL
        SELECT 'books', count(*) FROM book_snapshots""")
    return {r["t"]: r["n"] for r in rows}


def _source_counts(config: BotmainConfig) -> dict[str, int]:
    lake = Lake(config.lake_root)
    quotes = sum(lake.read("quotes", *k.split(":")).num_rows for k in (USDM, SPOT))
    trades = sum(lake.read("trades", *k.split(":")).num_rows for k in (USDM, SPOT))
    return {"quotes": quotes, "trades": trades}


def _replaying(replay_config: BotmainConfig, dsn: str, rate: float) -> BotmainConfig:
    return with_database(
        with_replay(replay_config, instruments=[USDM, SPOT], kinds=["quotes", "trades", "books"], speed="max", rate=rate), dsn
    )


def _events_seen(mds) -> int:
    import ray

    return ray.get(mds.status.remote(), timeout=60)["sources"].get("replay", {}).get("events", 0)


def _wait(predicate, timeout_s: float, what: str):
    """Until ``predicate()`` holds; an actor that is restarting meanwhile (a call to it
    fails) counts as not yet."""
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + timeout_s
    error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (RayActorError, TimeoutError) as exc:
            value, error = None, exc
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s}s (last error: {error})")


def _finish(feed, mds, timeout_s: float = 300.0) -> dict:
    import ray

    health = ray.get(feed.wait_finished.remote(timeout_s), timeout=timeout_s + 30)
    flushed = ray.get(mds.flush_store.remote(60), timeout=120)
    assert flushed, ray.get(mds.status.remote())["store"]
    return health


def test_a_killed_mds_comes_back_and_nothing_it_acknowledged_is_lost(ray_cluster, replay_config, dsn):
    import ray

    from actors import names, topology
    from actors.strategy_host import StrategyHost

    config = _replaying(replay_config, dsn, rate=25_000)
    topology.start_market_data(config, feeds=[])
    host = StrategyHost.options(name=names.strategy_actor("survivor"), namespace=names.NAMESPACE, num_cpus=0).remote(
        "survivor", "ema_cross", None, ["quote"]
    )
    ray.get(host.start.remote())
    topology.start_market_data(config, feeds=["replay"])
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    _wait(lambda: _events_seen(mds) > 20_000, 60, "the replay to get going")

    first = ray.get(mds.status.remote())["incarnation"]
    ray.kill(mds, no_restart=False)  # the MDS's process dies mid-stream
    killed = time.monotonic()

    def restarted_and_flowing():
        status = ray.get(mds.status.remote(), timeout=60)
        return status["incarnation"] != first and status["sources"].get("replay", {}).get("events", 0) > 0

    _wait(restarted_and_flowing, RECOVERY_S, "events at the restarted MDS")
    recovered_s = time.monotonic() - killed
    before = ray.get(host.stats.remote())["events"]
    _wait(lambda: ray.get(host.stats.remote())["events"] > before, RECOVERY_S, "events at the strategy after the restart")

    health = _finish(feed, mds)
    assert health["state"] == "finished" and health["errors"] == {}
    link = health["link"]
    assert link["reconnects"] >= 1 and link["resent_batches"] >= 1 and link["released_events"] == 0
    assert ray.get(host.stats.remote())["subscriptions"] >= 2  # it subscribed again to the new MDS
    stored, source = _counts(dsn), _source_counts(replay_config)
    assert stored["quotes"] == source["quotes"] and stored["trades"] == source["trades"], (stored, source)
    print(f"MDS restart: events flowed again after {recovered_s:.1f}s; link {link}")
    ray.kill(host)
    topology.stop_market_data()


def test_a_killed_store_writer_comes_back_and_gets_what_it_had_not_stored(ray_cluster, replay_config, dsn):
    import ray

    from actors import names, topology

    config = _replaying(replay_config, dsn, rate=10_000)
    topology.start_market_data(config, feeds=["replay"])
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    writer = ray.get_actor(names.MDS_STORE, namespace=names.NAMESPACE)
    _wait(lambda: _counts(dsn)["quotes"] > 5_000, 60, "rows in the store")
    first = ray.get(writer.status.remote())["incarnation"]

    ray.kill(writer, no_restart=False)
    killed = time.monotonic()

    def restarted_and_writing():
        status = ray.get(writer.status.remote(), timeout=60)
        return status["incarnation"] != first and status.get("writes", 0) > 0

    _wait(restarted_and_writing, RECOVERY_S, "rows written by the restarted writer")
    recovered_s = time.monotonic() - killed

    _finish(feed, mds)
    report = ray.get(mds.status.remote())["store"]
    assert report["resent_handovers"] >= 1 and report["store_ok"] and report["pending_rows"] == 0
    stored, source = _counts(dsn), _source_counts(replay_config)
    assert stored["quotes"] == source["quotes"] and stored["trades"] == source["trades"], (stored, source)
    print(f"writer restart: rows stored again after {recovered_s:.1f}s; {report['resent_handovers']} hand-overs re-sent")
    topology.stop_market_data()


def test_a_killed_replay_feed_comes_back_and_resumes_after_what_was_stored(ray_cluster, replay_config, dsn):
    import ray

    from actors import names, topology

    config = _replaying(replay_config, dsn, rate=25_000)
    topology.start_market_data(config, feeds=["replay"])
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    _wait(lambda: _events_seen(mds) > 30_000, 60, "the replay to get going")

    first = ray.get(feed.health.remote())["started_wall_ns"]
    ray.kill(feed, no_restart=False)
    killed = time.monotonic()

    def restarted_and_publishing():
        health = ray.get(feed.health.remote(), timeout=60)
        return health["started_wall_ns"] != first and health["events"] > 0

    _wait(restarted_and_publishing, RECOVERY_S, "events from the restarted feed")
    recovered_s = time.monotonic() - killed
    health = _finish(feed, mds)
    assert health["state"] == "finished"
    total = health["detail"]["total"]
    published_after_restart = health["events"]
    assert 0 < published_after_restart < total  # resumed from the MDS's stored cursor, not from the start
    stored, source = _counts(dsn), _source_counts(replay_config)
    assert stored["quotes"] == source["quotes"] and stored["trades"] == source["trades"], (stored, source)
    print(f"feed restart: events again after {recovered_s:.1f}s; resumed with {total - published_after_restart:,} of {total:,} behind it")
    topology.stop_market_data()


# --- what the MDS records in the lake ----------------------------------------------------------


def _recording(config: BotmainConfig, root, **replay) -> BotmainConfig:
    import dataclasses

    mds = config.market_data.mds
    record = mds.record.model_copy(update={"lake_root": str(root), "replay": True, "flush_interval_s": 0.5})
    persist = mds.persist.model_copy(update={"enabled": False})
    mds = mds.model_copy(update={"record": record, "persist": persist})
    config = dataclasses.replace(config, market_data=config.market_data.model_copy(update={"mds": mds}))
    return with_replay(config, **replay)


def _columns(table: pa.Table, names: list[str]) -> list[tuple]:
    return sorted(zip(*(table[n].to_pylist() for n in names)))


def test_what_the_mds_receives_is_recorded_in_the_lake_as_the_source_rows(ray_cluster, replay_config, tmp_path):
    import ray

    from actors import names, topology
    from cluster.book_snapshots import sample_snapshots

    root = tmp_path / "recorded"
    config = _recording(replay_config, root, instruments=[USDM, SPOT, "drift:SOL-PERP"],
                        kinds=["quotes", "trades", "books", "funding"], speed="max",
                        start="2024-08-08T23:57:00", end="2026-01-01")
    topology.start_market_data(config, feeds=["replay"])
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    assert ray.get(feed.wait_finished.remote(300))["state"] == "finished"
    assert ray.get(mds.flush_store.remote(60))
    topology.stop_market_data()  # the writer folds its segments into part-0 files

    source, recorded = Lake(replay_config.lake_root), Lake(root)
    start = "2024-08-08T23:57:00"
    for key in (USDM, SPOT):
        venue, symbol = key.split(":")
        quote_cols = ["ts", "seq", "bid", "bid_size", "ask", "ask_size"]
        src = source.read("quotes", venue, symbol, start)
        assert src.num_rows > 1000
        got, want = _columns(recorded.read("quotes", venue, symbol), quote_cols), _columns(src, quote_cols)
        assert got == want, (key, len(got), len(want), sorted(set(got) - set(want))[:3], sorted(set(want) - set(got))[:3])
        trade_cols = ["ts", "trade_id", "price", "size", "side"]
        got, want = _columns(recorded.read("trades", venue, symbol), trade_cols), _columns(source.read("trades", venue, symbol, start), trade_cols)
        assert got == want, (key, len(got), len(want), sorted(set(got) - set(want))[:3], sorted(set(want) - set(got))[:3])
        # Books: the replay plays the recording as 1 s snapshots (skipping any the recording
        # leaves crossed); the lake gets them back as snapshot messages (a row per level),
        # which rebuild the same snapshots.
        replay = config.market_data.feeds.replay
        interval, depth = int(replay.book_interval_ms * 1e6), replay.book_depth
        played = sample_snapshots(source.read("book_updates", venue, symbol, start), interval, depth)
        rebuilt = sample_snapshots(recorded.read("book_updates", venue, symbol), 1, depth)  # every message
        snap_cols = ["ts", "bid_px", "bid_sz", "ask_px", "ask_sz"]
        src_snaps = {r[0]: r[1:] for r in zip(*(played[c].to_pylist() for c in snap_cols))}
        rec_snaps = {r[0]: r[1:] for r in zip(*(rebuilt[c].to_pylist() for c in snap_cols))}
        assert len(rec_snaps) >= 0.95 * len(src_snaps) > 0, (key, len(rec_snaps), len(src_snaps))
        assert all(src_snaps.get(ts) == levels for ts, levels in rec_snaps.items()), key
    funding_cols = ["ts", "rate", "interval_s", "oracle_price", "mark_price"]
    src = source.read("funding", "drift", "SOL-PERP", start, "2026-01-01")
    assert src.num_rows > 100
    got, want = _columns(recorded.read("funding", "drift", "SOL-PERP"), funding_cols), _columns(src, funding_cols)
    assert got == want, (len(got), len(want), sorted(set(got) - set(want))[:3], sorted(set(want) - set(got))[:3])
    # Compacted at stop: one file per partition, no segments left.
    assert not list(root.rglob("seg-*.parquet")) and list(root.rglob("part-0.parquet"))


def test_a_recorded_session_backtests_exactly_like_the_ingested_history(ray_cluster, lake_config, tmp_path):
    import ray

    from actors import names, topology

    root = tmp_path / "recorded"
    config = _recording(lake_config, root, instruments=["binanceusdm:SOL-PERP"], kinds=["bars"], speed="max")
    topology.start_market_data(config, feeds=["replay"])
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    assert ray.get(feed.wait_finished.remote(300))["state"] == "finished"
    ray.get(ray.get_actor(names.MDS, namespace=names.NAMESPACE).flush_store.remote(60))
    topology.stop_market_data()

    import dataclasses

    from cluster.config.models import LakeConfig

    recorded_config = dataclasses.replace(lake_config, store=lake_config.store.model_copy(update={"lake": LakeConfig(root=str(root))}))
    bars = Lake(root).read("bars_1m", "binanceusdm", "SOL-PERP")
    assert bars.num_rows == Lake(lake_config.lake_root).read("bars_1m", "binanceusdm", "SOL-PERP").num_rows
    ours, reference = _backtest(recorded_config), _backtest(lake_config)
    assert ours.metrics == reference.metrics and len(ours.trades) > 10
    assert [repr(t) for t in ours.trades] == [repr(t) for t in reference.trades]  # repr: NaN equals NaN
    assert SAMPLE_BARS.exists()


def _backtest(config: BotmainConfig):
    """``botmain backtest sol_ema_cross`` on ``config``'s lake, as the CLI runs it."""
    from jobs.sweep.job import resolve_strategy
    from sim.backtest import backtest
    from sim.books import market_with_books
    from sim.history import load_frame
    from sim.settings import SimSettings

    resolved = resolve_strategy(config, "sol_ema_cross", ())
    strategy = resolved.strategy(resolved.strategy.Params(**resolved.fixed))
    frame = load_frame(config, resolved.instruments, None, None, None)
    settings = SimSettings.from_config(config, resolved.instruments, resolved.instance)
    frame, market = market_with_books(config, frame, settings)
    return backtest(strategy, frame, settings, market)


# --- secrets ------------------------------------------------------------------------------------


def test_the_store_password_reaches_no_actor_argument_status_dashboard_or_log(ray_cluster, replay_config, dsn, pg_server):
    """The MDS, its writer and the feeds are constructed with the configuration only; the
    writer reads the password from its own environment. So the password is in none of the
    arguments Ray keeps in its GCS, no status, no dashboard listing and no Ray log."""
    import json
    from pathlib import Path

    import ray
    from ray import cloudpickle

    from actors import names, topology
    from cluster import runtime

    password = pg_server.password_file.read_text().strip()
    assert len(password) >= 16 and password in dsn  # the session store does use it
    config = with_database(with_replay(replay_config, instruments=[SPOT], kinds=["quotes"], speed="max",
                                       start="2024-08-08T23:58:00", end="2024-08-08T23:58:05"), dsn)
    for args in ((config, "event"), (config,), ("replay", config, "run")):  # MdsActor, StoreActor, FeedActor
        assert password.encode() not in cloudpickle.dumps(args)
    topology.start_market_data(config, feeds=["replay"])
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    assert ray.get(feed.wait_finished.remote(120))["state"] == "finished"
    assert ray.get(mds.flush_store.remote(60))
    writer = ray.get_actor(names.MDS_STORE, namespace=names.NAMESPACE)
    seen = [
        json.dumps(ray.get(mds.status.remote()), default=str),
        json.dumps(ray.get(writer.status.remote()), default=str),
        json.dumps(topology.market_data_status(), default=str),
        json.dumps(runtime.dashboard_get(runtime.endpoints(ray_cluster.cluster).dashboard_url,
                                         "/api/v0/actors?limit=10000&detail=true")),
    ]
    assert _counts(dsn)["quotes"] > 0  # the writer did connect, with the password
    assert not [text for text in seen if password in text]
    logs = Path(ray_cluster.cluster.head.temp_dir)
    leaked = [str(p) for p in logs.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert leaked == []
    topology.stop_market_data()


def test_a_new_mds_takes_over_no_writer_that_writes_elsewhere(ray_cluster, replay_config, dsn, pg_server):
    """A writer left running by an MDS that went away for good (killed, not restarted) keeps
    its configuration; an MDS started with another store replaces it, and its rows land in
    its own store."""
    import asyncio as aio
    import os

    import ray

    from actors import names, topology
    from tests.conftest import _create_database, _db_counter

    other = aio.run(_create_database(pg_server, f"t{os.getpid()}_{next(_db_counter)}", migrated=True))
    first = with_database(with_replay(replay_config, instruments=[SPOT], kinds=["quotes"], speed="max",
                                      start="2024-08-08T23:58:00", end="2024-08-08T23:58:02"), dsn)
    topology.start_market_data(first, feeds=["replay"])
    ray.get(ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE).wait_finished.remote(120))
    ray.get(ray.get_actor(names.MDS, namespace=names.NAMESPACE).flush_store.remote(60))
    writer = ray.get_actor(names.MDS_STORE, namespace=names.NAMESPACE)
    old_settings = ray.get(writer.status.remote())["settings"]
    ray.kill(ray.get_actor(names.MDS, namespace=names.NAMESPACE))  # gone for good; its writer stays
    topology._wait_gone(names.MDS)
    ray.kill(ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE))
    topology._wait_gone(names.feed_actor("replay"))

    second = with_database(with_replay(replay_config, instruments=[SPOT], kinds=["quotes"], speed="max",
                                       start="2024-08-08T23:58:02", end="2024-08-08T23:58:04"), other)
    topology.start_market_data(second, feeds=["replay"])
    ray.get(ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE).wait_finished.remote(120))
    assert ray.get(ray.get_actor(names.MDS, namespace=names.NAMESPACE).flush_store.remote(60))
    new_settings = ray.get(ray.get_actor(names.MDS_STORE, namespace=names.NAMESPACE).status.remote())["settings"]
    assert new_settings != old_settings
    assert _counts(other)["quotes"] > 0 and _counts(dsn)["quotes"] > 0
    first_window = _fetch(dsn, "SELECT max(ts) AS t FROM quotes")[0]["t"]
    second_window = _fetch(other, "SELECT min(ts) AS t FROM quotes")[0]["t"]
    assert first_window < second_window  # each MDS's rows in its own store
    topology.stop_market_data()
