"""The market-data actors on the session's real Ray cluster: named actors the dashboard
lists, a replay through feed actor -> MDS -> strategy actor with nothing lost or reordered,
persistence into a real PostgreSQL, signals relayed between strategy actors, a refused feed
that reports why instead of dying, ``botmain status``, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import asyncpg
import pytest

from cluster.config import BotmainConfig
from cluster.lake import Lake
from tests.conftest import with_database, with_replay, without_store
from tests.test_cli import botmain

USDM = "binanceusdm:BTC-PERP"
SPOT = "binance:BTC-USDT"


@pytest.fixture(scope="module")
def ray_cluster(ray_head: BotmainConfig):
    import ray

    from actors import names
    from cluster import runtime

    ray.init(address=runtime.endpoints(ray_head.cluster).gcs_address, namespace=names.NAMESPACE, log_to_driver=False)
    yield ray_head
    from actors import topology

    topology.stop_market_data()
    ray.shutdown()


def _fetch(dsn: str, sql: str):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def _actor_names(config: BotmainConfig) -> dict[str, str]:
    from cluster import runtime

    body = runtime.dashboard_get(runtime.endpoints(config.cluster).dashboard_url, "/api/v0/actors?limit=10000&detail=false")
    states: dict[str, str] = {}
    for a in body["data"]["result"]["result"]:
        if a.get("name") and states.get(a["name"]) != "ALIVE":  # earlier tests' dead actors share the names
            states[a["name"]] = a["state"]
    return states


def test_replay_through_named_actors_reaches_the_strategy_and_the_store(ray_cluster, replay_config, dsn):
    import ray

    from actors import names, topology
    from actors.strategy_host import StrategyHost

    config = with_database(with_replay(replay_config, instruments=[USDM, SPOT], kinds=["quotes", "trades", "books"], speed="max"), dsn)
    topology.start_market_data(config, feeds=[])
    host = StrategyHost.options(name=names.strategy_actor("watcher"), namespace=names.NAMESPACE, num_cpus=0).remote(
        "watcher", "ema_cross", None, ["quote", "trade", "best", "venue_status"]
    )
    ray.get(host.start.remote())
    started = topology.start_market_data(config, feeds=["replay"])
    assert started["replay"]["state"] in ("connected", "starting")

    running = _actor_names(ray_cluster)
    assert running.get("mds") == "ALIVE" and running.get("feed:replay") == "ALIVE"
    assert running.get("strategy:watcher") == "ALIVE"

    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    health = ray.get(feed.wait_finished.remote(300))
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    ray.get(mds.drain.remote())
    assert ray.get(mds.flush_store.remote())
    stats = ray.get(host.stats.remote())
    status = ray.get(mds.status.remote())

    lake = Lake(replay_config.lake_root)
    quotes = sum(lake.read("quotes", *k.split(":")).num_rows for k in (USDM, SPOT))
    trades = sum(lake.read("trades", *k.split(":")).num_rows for k in (USDM, SPOT))
    assert health["state"] == "finished" and health["errors"] == {}
    assert stats["by_kind"]["quote"] == quotes and stats["by_kind"]["trade"] == trades, repr((status["subscribers"], status["stream"], stats))
    assert stats["quotes_out_of_order"] == 0
    assert stats["batches"] < stats["events"] / 20  # batched: far fewer calls than events
    assert status["sources"]["replay"]["events"] == health["events"]
    assert status["best"]["BTC-PERP"]["bid_venue"] == "binanceusdm"
    assert status["store"]["store_ok"] and status["store"]["pending_rows"] == 0

    stored = {r["t"]: r["n"] for r in _fetch(dsn, """
        SELECT 'quotes' AS t, count(*) AS n FROM quotes UNION ALL
        SELECT 'trades', count(*) FROM market_trades UNION ALL
        SELECT 'books', count(*) FROM book_snapshots UNION ALL
        SELECT 'bars', count(*) FROM bars""")}
    assert stored["quotes"] == quotes and stored["trades"] == trades
    assert stored["books"] > 0 and stored["bars"] > 0  # 1 s snapshots, 1 m bars built from trades
    # what status says of the difference between events in and rows written adds up exactly
    report = status["store"]
    written = sum(t["written"] for t in report["tables"].values())
    assert report["books_thinned"] > 0 and report["bars_built"] == stored["bars"], report  # each bar once
    assert written == health["events"] - report["books_thinned"] + report["bars_built"], report
    from cli.market_data import render_status

    why = next(line for line in render_status(status) if "events in:" in line)
    assert f"of {health['events']:,} events in: {report['books_thinned']:,} book(s) not kept in PostgreSQL" in why
    assert f"{report['bars_built']:,} bar(s) the MDS built from trades and quotes" in why

    # the strategy's best price is the MDS's
    best = ray.get(host.best_prices.remote())["BTC-PERP"]
    assert (best.bid, best.ask) == (status["best"]["BTC-PERP"]["bid"], status["best"]["BTC-PERP"]["ask"])

    result = botmain(ray_cluster.root / "configs", "status")
    assert result.returncode == 0, result.stderr
    assert "market data mds up" in result.stdout
    assert "feed replay" in result.stdout and "finished" in result.stdout
    assert "best BTC-PERP" in result.stdout

    ray.kill(host)
    stopped = topology.stop_market_data()
    assert stopped == ["feed:replay", "mds"]
    assert "mds" not in {n for n, s in _actor_names(ray_cluster).items() if s == "ALIVE"}


def test_signals_published_by_one_strategy_reach_its_subscribers_and_the_store(ray_cluster, replay_config, dsn):
    import ray

    from actors import names, topology
    from actors.strategy_host import StrategyHost

    topology.start_market_data(with_database(replay_config, dsn), feeds=[])
    publisher = StrategyHost.options(name=names.strategy_actor("carry"), namespace=names.NAMESPACE, num_cpus=0).remote(
        "carry", "ema_cross", None, ["quote"]
    )
    listener = StrategyHost.options(name=names.strategy_actor("listener"), namespace=names.NAMESPACE, num_cpus=0).remote(
        "listener", "ema_cross", None, ["signal"], None, ["regime"]
    )
    ray.get([publisher.start.remote(), listener.start.remote()])
    ray.get(publisher.publish_signal.remote("regime", 1.0, "drift:SOL-PERP", {"reason": "funding above 2 bp"}))
    ray.get(publisher.publish_signal.remote("noise", 5.0))
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ray.get(listener.signals.remote()):
        time.sleep(0.05)
    got = ray.get(listener.signals.remote())
    assert [(s.strategy, s.name, s.value, s.instrument) for s in got] == [("carry", "regime", 1.0, "drift:SOL-PERP")]
    assert ray.get(mds.flush_store.remote())
    rows = _fetch(dsn, "SELECT strategy, name, value, payload FROM strategy_signals ORDER BY name")
    assert [(r["strategy"], r["name"], r["value"]) for r in rows] == [("carry", "noise", 5.0), ("carry", "regime", 1.0)]
    assert "funding above 2 bp" in rows[1]["payload"]
    ray.kill(publisher)
    ray.kill(listener)
    topology.stop_market_data()


def test_a_subscriber_without_a_stream_gets_its_batches_by_actor_call(ray_cluster, replay_config):
    import ray

    from actors import names, topology
    from cluster.events import Signal

    @ray.remote(num_cpus=0)
    class Plain:
        def __init__(self):
            self.got = []

        async def on_market_data(self, batch):
            self.got.extend(batch.events)

        async def events(self):
            return self.got

    topology.start_market_data(without_store(replay_config), feeds=[])
    plain = Plain.remote()
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    ray.get(mds.subscribe.remote("plain", plain, kinds=["signal"]))
    ray.get(mds.publish_signal.remote(Signal(1, "carry", "regime", 1.0, None, {})))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ray.get(plain.events.remote()):
        time.sleep(0.05)
    assert [(e.strategy, e.name) for e in ray.get(plain.events.remote())] == [("carry", "regime")]
    ray.kill(plain)
    topology.stop_market_data()


def test_a_feed_reconnects_its_stream_to_a_restarted_mds(ray_cluster, replay_config):
    import ray

    from actors import names, topology

    config = with_replay(replay_config, instruments=[USDM], kinds=["quotes"], speed="max", rate=2000.0)
    topology.start_market_data(without_store(config), feeds=["replay"])
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    time.sleep(1.0)
    ray.kill(ray.get_actor(names.MDS, namespace=names.NAMESPACE))
    topology._wait_gone(names.MDS)
    topology.start_market_data(without_store(config), feeds=[])  # a new MDS: new stream address
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ray.get(mds.status.remote())["sources"].get("replay", {}).get("events"):
        time.sleep(0.1)
    assert ray.get(mds.status.remote())["sources"]["replay"]["events"] > 0
    health = ray.get(feed.health.remote())
    # The link reconnected by itself; the feed's session (its venue side) never noticed.
    assert health["link"]["reconnects"] >= 1 and health["errors"] == {} and health["reconnects"] == 0, health
    topology.stop_market_data()


def test_the_venue_selector_reads_its_live_features_from_the_mds(ray_cluster, replay_config):
    import ray

    from actors import names, topology
    from serve.selector.candidates import candidates
    from serve.selector.model import DecisionRequest
    from serve.selector.states import MarketStates

    config = with_replay(replay_config, instruments=["drift:SOL-PERP"], kinds=["funding"], speed="max")
    topology.start_market_data(without_store(config), feeds=["replay"])
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    assert ray.get(feed.wait_finished.remote(120))["state"] == "finished"
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    snapshot = ray.get(mds.market_snapshot.remote("SOL"))
    last = Lake(replay_config.lake_root).read("funding", "drift", "SOL-PERP").to_pylist()[-1]
    funding = snapshot["funding"]["drift:SOL-PERP"]
    assert (funding["rate"], funding["oracle"], funding["mark"]) == (last["rate"], last["oracle_price"], last["mark_price"])
    assert snapshot["clock"] == "event" and snapshot["now_ns"] >= funding["ts_ns"]

    states = MarketStates(replay_config)
    cands = candidates(replay_config, "SOL-PERP")
    request = DecisionRequest(instrument="SOL-PERP", side="buy", size=1)
    assert states(request, cands).source.startswith("lake, as of")
    asyncio.run(states.refresh_live())
    live = states(request, cands)
    assert live.source.startswith("MDS live (drift:SOL-PERP)")
    assert live["drift:SOL-PERP"].funding_bps_h == pytest.approx(last["rate"] * 1e4)
    assert live["drift:SOL-PERP"].price == pytest.approx(last["mark_price"])

    # polling in the background (as in a Serve replica): the first request already gets the live market
    polled = MarketStates(replay_config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    poll = polled.start(loop, interval_s=30.0)
    assert polled(request, cands).source.startswith("MDS live (drift:SOL-PERP)")
    poll.cancel()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)

    topology.stop_market_data()
    asyncio.run(states.refresh_live())
    assert states(request, cands).source.startswith("lake") and states.live_error == "the MDS is not running"


def test_a_feed_refused_by_its_configuration_stays_up_and_says_why(ray_cluster, replay_config):
    import dataclasses

    import ray

    from actors import names, topology

    # bypass load-time validation on purpose: the actor must cope with what a hand-built config says
    drift = replay_config.market_data.feeds.drift.model_copy(update={"markets": ["DOGE-PERP"], "enabled": True})
    feeds = replay_config.market_data.feeds.model_copy(update={"drift": drift})
    config = dataclasses.replace(replay_config, market_data=replay_config.market_data.model_copy(update={"feeds": feeds}))
    started = topology.start_market_data(without_store(config), feeds=["drift"])
    assert started["drift"]["state"] == "failed"
    assert started["drift"]["errors"] == {"config": 1} and "DOGE-PERP" in started["drift"]["last_error"]
    status = topology.market_data_status()
    assert status["feeds"]["drift"]["state"] == "failed"
    actor = ray.get_actor(names.feed_actor("drift"), namespace=names.NAMESPACE)
    assert ray.get(actor.health.remote())["state"] == "failed"  # alive, answering
    topology.stop_market_data()


def test_prometheus_metrics_are_exported_through_ray(ray_cluster, replay_config):
    import ray

    from actors import names, topology

    config = with_replay(replay_config, instruments=[SPOT], kinds=["quotes"], speed="max",
                         start="2024-08-08T23:58:00", end="2024-08-08T23:58:10")
    topology.start_market_data(without_store(config), feeds=["replay"])
    ray.get(ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE).wait_finished.remote(120))
    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    text = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if all(name in text for name in ("ray_botmain_mds_events_total", "ray_botmain_mds_venue_stale", "ray_botmain_feed_connected")):
            break
        time.sleep(2)
    topology.stop_market_data()
    assert "ray_botmain_mds_events_total" in text, "MDS event counter never reached the metrics endpoint"
    lines = [l for l in text.splitlines() if l.startswith("ray_botmain_mds_events_total") and 'feed="replay"' in l]
    assert any('kind="quote"' in l and float(l.rsplit(" ", 1)[1]) > 0 for l in lines), lines
    assert "ray_botmain_mds_venue_stale" in text
    assert "ray_botmain_feed_connected" in text
