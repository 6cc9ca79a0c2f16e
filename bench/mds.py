"""Market Data Server throughput and latency, beside raw Ray actor calls, same run.

Data: the sample's Binance BTCUSDT recordings of 2024-08-08 (spot and USD-M: recorded top
of book, trades, and the depth stream rebuilt into 1 s L2 snapshots of 20 levels), ingested
into a temporary lake: about 126,000 events over six minutes of market time.

Pipeline: the replay feed actor -> the MDS actor (consolidated best prices, staleness,
bars, persistence into an embedded PostgreSQL 16 with batched COPY through its writer
actor) -> one subscribed strategy actor (``StrategyHost`` hosting ``ema_cross``, receiving
quotes, trades and books). Three Ray processes on a local cluster with 2 CPUs; the market
data moves over batch links (actors/stream/: ZeroMQ with CURVE, MessagePack), Ray calls
carry the control plane.

* end to end, as fast as possible: events received by the strategy / (its last receipt -
  the production time of the first event). Run twice: with persistence and without.
* a steady 10,000 events/s (the replay's ``rate``: the recorded events, evenly spaced):
  latency from the moment the feed produced an event to the strategy's receipt,
  p50/p99/max over the steady state (batches received after the first 2 s; the figure with
  the warm-up is printed too). Each batch is timed from its *oldest* event, so every
  event's latency is bounded from above.
* the recording's own pacing at the speed that averages 10,000 events/s (27.6x): the same
  latency with the market's bursts in it (the busiest 100 ms of this recording runs at
  ~55,000 events/s at that speed, the busiest second at ~17,000).
* reference, measured in the same run: raw Ray actor calls to a no-op async actor with the
  same payload size as one event, (a) one at a time, awaited (round-trip rate and
  latency), (b) pipelined, 20,000 in flight (the most calls/s Ray itself does here); and
  the latency floor of the same shape with no work: source -> relay -> sink actors
  passing 50-event batches at a steady 10,000 events/s, by Ray actor calls, over the
  batch links the pipeline uses, and over the pickle-over-TCP streams the links replaced
  (bench/legacy_batch_stream.py, kept here only as that reference).

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from actors import names, topology  # noqa: E402
import legacy_batch_stream  # noqa: E402
from actors.stream import BatchReceiver, BatchSender, StreamKeys  # noqa: E402
from actors.strategy_host import StrategyHost  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.config.models import LakeConfig  # noqa: E402
from cluster.domain import Quote  # noqa: E402
from cluster.events import EventBatch  # noqa: E402
from cluster.lake import Lake  # noqa: E402
from cluster.store.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402
from cluster.store.migrations import migrate  # noqa: E402
from jobs.ingest.formats import read_file  # noqa: E402
from jobs.ingest.naming import InstrumentResolver  # noqa: E402

SAMPLE = ROOT / "data" / "sample" / "hftbacktest"
FILES = [SAMPLE / "usdm" / "btcusdt_20240808.gz", SAMPLE / "spot" / "btcusdt_20240808.gz"]
INSTRUMENTS = ["binanceusdm:BTC-PERP", "binance:BTC-USDT"]
KINDS = ["quotes", "trades", "books"]
PACED_RATE = 10_000.0
WARMUP_S = 2.0  # latency percentiles leave out the stream's first seconds (first calls, imports)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@ray.remote
class Noop:
    async def call(self, payload) -> None:
        return None


def raw_actor_calls() -> dict:
    actor = Noop.options(num_cpus=0).remote()
    payload = Quote(1_723_161_255_000_000_000, "binanceusdm:BTC-PERP", 61000.1, 1.5, 61000.2, 2.5, 1)
    ray.get([actor.call.remote(payload) for _ in range(500)])  # warm up
    n = 3000
    lat = np.empty(n)
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        ray.get(actor.call.remote(payload))
        lat[i] = time.perf_counter() - t
    sequential = n / (time.perf_counter() - t0)
    n = 20_000
    t0 = time.perf_counter()
    ray.get([actor.call.remote(payload) for _ in range(n)])
    pipelined = n / (time.perf_counter() - t0)
    ray.kill(actor)
    return {
        "raw_calls_per_s_sequential": sequential,
        "raw_call_p50_ms": float(np.percentile(lat, 50) * 1e3),
        "raw_call_p99_ms": float(np.percentile(lat, 99) * 1e3),
        "raw_calls_per_s_pipelined": pipelined,
    }


def _sample(samples: list, batch: EventBatch) -> None:
    now = time.time_ns()
    samples.append((now, now - batch.emitted_ns, len(batch)))


def _latency(samples: list, warmup_s: float) -> dict:
    from actors.latency import LatencyRecorder

    rec = LatencyRecorder()
    for at, lat, n in samples:
        rec.record(lat, n, at)
    return rec.percentiles(since_ns=samples[0][0] + int(warmup_s * 1e9))


@ray.remote
class RawSink:
    def __init__(self) -> None:
        self.samples: list[tuple[int, int, int]] = []

    async def take(self, batch: EventBatch) -> None:
        _sample(self.samples, batch)

    async def latency(self, warmup_s: float) -> dict:
        return _latency(self.samples, warmup_s)


@ray.remote
class RawRelay:
    def __init__(self, sink) -> None:
        self.sink = sink

    async def take(self, batch: EventBatch) -> None:
        await self.sink.take.remote(batch)


async def paced(send, rate: float, batch_events: int, seconds: float) -> None:
    """``rate`` events/s in batches of ``batch_events`` for ``seconds``, each send awaited."""
    quote = Quote(1_723_161_255_000_000_000, "binanceusdm:BTC-PERP", 61000.1, 1.5, 61000.2, 2.5, 1)
    gap = batch_events / rate
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        await send(EventBatch([quote] * batch_events, time.time_ns(), "raw"))
        k += 1
        await asyncio.sleep(max(start + k * gap - time.monotonic(), 0.0))


@ray.remote
class RawSource:
    async def run(self, relay, rate: float, batch_events: int, seconds: float) -> None:
        await paced(lambda batch: relay.take.remote(batch), rate, batch_events, seconds)


@ray.remote
class StreamSink:
    def __init__(self) -> None:
        self.samples: list[tuple[int, int, int]] = []

    async def listen(self, relay_key: bytes):
        self.receiver = BatchReceiver(lambda batch, origin: _sample(self.samples, batch), "bench-sink")
        address = await self.receiver.start()
        self.receiver.allow(relay_key, "bench-relay")
        return address

    async def latency(self, warmup_s: float) -> dict:
        return _latency(self.samples, warmup_s)


@ray.remote
class StreamRelay:
    def __init__(self) -> None:
        self.keys = StreamKeys.generate()

    async def key(self) -> bytes:
        return self.keys.public

    async def listen(self, sink_address, source_key: bytes):
        self.sender = await BatchSender.connect(sink_address, "bench-relay->sink", self.keys)
        self.receiver = BatchReceiver(self.take, "bench-relay")
        address = await self.receiver.start()
        self.receiver.allow(source_key, "bench-source")
        return address

    async def take(self, batch: EventBatch, origin) -> None:
        await self.sender.send(batch)


@ray.remote
class StreamSource:
    def __init__(self) -> None:
        self.keys = StreamKeys.generate()

    async def key(self) -> bytes:
        return self.keys.public

    async def run(self, relay_address, rate: float, batch_events: int, seconds: float) -> None:
        sender = await BatchSender.connect(relay_address, "bench-source->relay", self.keys)
        await paced(sender.send, rate, batch_events, seconds)
        await sender.close()


def stream_two_hops(rate: float, seconds: float = 12.0) -> dict:
    """The same floor over batch links (the pipeline's transport for market data)."""
    sink = StreamSink.options(num_cpus=0).remote()
    relay = StreamRelay.options(num_cpus=0).remote()
    source = StreamSource.options(num_cpus=0).remote()
    sink_address = ray.get(sink.listen.remote(ray.get(relay.key.remote())))
    relay_address = ray.get(relay.listen.remote(sink_address, ray.get(source.key.remote())))
    ray.get(source.run.remote(relay_address, rate, 50, seconds))
    result = ray.get(sink.latency.remote(WARMUP_S))
    for actor in (source, relay, sink):
        ray.kill(actor)
    return result


@ray.remote
class LegacySink:
    def __init__(self) -> None:
        self.samples: list[tuple[int, int, int]] = []

    async def listen(self):
        self.receiver = legacy_batch_stream.BatchReceiver(lambda batch: _sample(self.samples, batch), "bench-sink")
        return await self.receiver.start()

    async def latency(self, warmup_s: float) -> dict:
        return _latency(self.samples, warmup_s)


@ray.remote
class LegacyRelay:
    async def listen(self, sink_address):
        self.sender = await legacy_batch_stream.BatchSender.connect(sink_address, "bench-relay->sink")
        self.receiver = legacy_batch_stream.BatchReceiver(self.take, "bench-relay")
        return await self.receiver.start()

    async def take(self, batch: EventBatch) -> None:
        await self.sender.send(batch)


@ray.remote
class LegacySource:
    async def run(self, relay_address, rate: float, batch_events: int, seconds: float) -> None:
        sender = await legacy_batch_stream.BatchSender.connect(relay_address, "bench-source->relay")
        await paced(sender.send, rate, batch_events, seconds)
        await sender.close()


def legacy_two_hops(rate: float, seconds: float = 12.0) -> dict:
    """The same floor over the pickle-over-TCP streams the links replaced (reference only)."""
    # The old module lives in bench/: its workers need it on their path to unpickle the actors.
    bench_path = {"env_vars": {"PYTHONPATH": str(ROOT / "bench")}}
    sink = LegacySink.options(num_cpus=0, runtime_env=bench_path).remote()
    relay = LegacyRelay.options(num_cpus=0, runtime_env=bench_path).remote()
    source = LegacySource.options(num_cpus=0, runtime_env=bench_path).remote()
    relay_address = ray.get(relay.listen.remote(ray.get(sink.listen.remote())))
    ray.get(source.run.remote(relay_address, rate, 50, seconds))
    result = ray.get(sink.latency.remote(WARMUP_S))
    for actor in (source, relay, sink):
        ray.kill(actor)
    return result


def raw_two_hops(rate: float, seconds: float = 12.0) -> dict:
    """The floor under our latency: the same three-process shape (source -> relay -> sink)
    with no work at all, 50-event batches (one per 5 ms at 10,000 events/s)."""
    sink = RawSink.options(num_cpus=0).remote()
    relay = RawRelay.options(num_cpus=0).remote(sink)
    source = RawSource.options(num_cpus=0).remote()
    ray.get(source.run.remote(relay, rate, 50, seconds))
    result = ray.get(sink.latency.remote(WARMUP_S))
    for actor in (source, relay, sink):
        ray.kill(actor)
    return result


def run_pipeline(config, store: bool, speed, rate: float | None = None) -> dict:
    replay = config.market_data.feeds.replay.model_copy(
        update={"speed": speed, "rate": rate, "instruments": INSTRUMENTS, "kinds": KINDS}
    )
    mds = config.market_data.mds
    if not store:
        mds = mds.model_copy(update={"persist": mds.persist.model_copy(update={"enabled": False}),
                                     "record": mds.record.model_copy(update={"enabled": False})})
    md = config.market_data.model_copy(update={"mds": mds, "feeds": config.market_data.feeds.model_copy(update={"replay": replay})})
    config = dataclasses.replace(config, market_data=md)
    topology.start_market_data(config, feeds=[])
    host = StrategyHost.options(name=names.strategy_actor("bench"), namespace=names.NAMESPACE, num_cpus=0).remote(
        "bench", "ema_cross", None, ["quote", "trade", "book"]
    )
    ray.get(host.start.remote())
    topology.start_market_data(config, feeds=["replay"])
    feed = ray.get_actor(names.feed_actor("replay"), namespace=names.NAMESPACE)
    health = ray.get(feed.wait_finished.remote())
    mds = ray.get_actor(names.MDS, namespace=names.NAMESPACE)
    ray.get(mds.drain.remote())
    stats = ray.get(host.stats.remote())
    steady = ray.get(host.latency_since.remote(stats["first_recv_ns"] + int(WARMUP_S * 1e9)))
    ray.get(mds.flush_store.remote())
    status = ray.get(mds.status.remote())
    topology.stop_market_data()
    ray.kill(host)
    if health["state"] != "finished" or stats["events"] != health["events"]:
        raise SystemExit(f"pipeline lost events: feed {health}, strategy {stats}")
    span = (stats["last_recv_ns"] - stats["first_emitted_ns"]) / 1e9
    store = status.get("store") or {}
    return {
        "events": stats["events"],
        "seconds": span,
        "events_per_s": stats["events"] / span,
        "p50_ms": steady["p50_ms"],
        "p99_ms": steady["p99_ms"],
        "max_ms": steady["max_ms"],
        "p99_ms_with_warmup": stats["latency"]["p99_ms"],
        "batches": stats["batches"],
        "stored_rows": sum(t["written"] for t in store.get("tables", {}).values()),
        "dropped": sum(t["dropped"] for t in store.get("tables", {}).values()),
        "feed_to_mds": status["sources"]["replay"]["pipeline_lag"],
    }


def main() -> None:
    base = scratch_directory("botmain-bench-mds-")
    pg = EmbeddedPostgres(base / "pg", port=free_port(), database="bench", settings={"fsync": "off"})
    try:
        config = load_config()
        # The writer actor finds the bench's store through the configuration, as in a cluster.
        embedded = config.store.postgres.embedded.model_copy(update={
            "data_dir": str(pg.data_dir), "password_file": str(pg.password_file), "port": pg.port, "database": "bench"})
        postgres = config.store.postgres.model_copy(update={"embedded": embedded})
        config = dataclasses.replace(config, store=config.store.model_copy(update={
            "lake": LakeConfig(root=str(base / "lake")), "postgres": postgres}))
        lake = Lake(config.lake_root)
        resolver = InstrumentResolver(config)
        for path in FILES:
            for series in read_file(path, resolver, None).series:
                lake.write(series.kind, series.instrument.venue, series.instrument.symbol, series.table)
        dsn = pg.start()
        import asyncpg

        async def prepare():
            conn = await asyncpg.connect(dsn)
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(prepare())

        ray.init(num_cpus=2, include_dashboard=False, namespace=names.NAMESPACE, log_to_driver=False)
        raw = raw_actor_calls()
        floor = raw_two_hops(PACED_RATE)
        stream_floor = stream_two_hops(PACED_RATE)
        legacy_floor = legacy_two_hops(PACED_RATE)
        # Event-time span of the data, for the pacing: speed = target rate / recorded rate.
        from actors.feeds.replay import ReplayFeed

        probe = ReplayFeed(config, config.market_data.feeds.replay.model_copy(update={"instruments": INSTRUMENTS, "kinds": KINDS}))
        ts = probe.load()[0]
        recorded_rate = len(ts) / ((ts[-1] - ts[0]) / 1e9)
        speed = PACED_RATE / recorded_rate

        max_store = run_pipeline(config, True, "max")
        max_nostore = run_pipeline(config, False, "max")
        steady = run_pipeline(config, True, "max", rate=PACED_RATE)
        paced = run_pipeline(config, True, speed)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)

    best = max(max_store["events_per_s"], max_nostore["events_per_s"])
    rows = [
        ("end to end, max speed, with store", f"{max_store['events_per_s']:,.0f} events/s", f"{max_store['events']:,} events in {max_store['seconds']:.2f} s, {max_store['batches']} batches, {max_store['stored_rows']:,} rows stored"),
        ("end to end, max speed, no store", f"{max_nostore['events_per_s']:,.0f} events/s", f"{max_nostore['events']:,} events in {max_nostore['seconds']:.2f} s"),
        (f"steady {PACED_RATE:,.0f} events/s, with store", f"{steady['events_per_s']:,.0f} events/s", f"latency p50 {steady['p50_ms']:.2f} ms, p99 {steady['p99_ms']:.2f} ms, max {steady['max_ms']:.2f} ms (p99 with the first {WARMUP_S:g} s: {steady['p99_ms_with_warmup']:.2f} ms)"),
        ("  of which feed -> MDS", "", f"p50 {steady['feed_to_mds']['p50_ms']:.2f} ms, p99 {steady['feed_to_mds']['p99_ms']:.2f} ms"),
        (f"recorded pacing, speed {speed:.1f}x (avg {PACED_RATE:,.0f}/s)", f"{paced['events_per_s']:,.0f} events/s", f"latency p50 {paced['p50_ms']:.2f} ms, p99 {paced['p99_ms']:.2f} ms, max {paced['max_ms']:.2f} ms (bursts to ~55,000/s)"),
        (f"raw two hops by Ray calls, no work, {PACED_RATE:,.0f}/s", "", f"latency p50 {floor['p50_ms']:.2f} ms, p99 {floor['p99_ms']:.2f} ms, max {floor['max_ms']:.2f} ms (source -> relay -> sink actors, 50-event batches)"),
        (f"raw two hops by batch links, no work, {PACED_RATE:,.0f}/s", "", f"latency p50 {stream_floor['p50_ms']:.2f} ms, p99 {stream_floor['p99_ms']:.2f} ms, max {stream_floor['max_ms']:.2f} ms (the same, over the pipeline's transport: ZeroMQ, CURVE, MessagePack)"),
        (f"raw two hops by the old pickle streams, {PACED_RATE:,.0f}/s", "", f"latency p50 {legacy_floor['p50_ms']:.2f} ms, p99 {legacy_floor['p99_ms']:.2f} ms, max {legacy_floor['max_ms']:.2f} ms (the transport the links replaced, for comparison)"),
        ("raw Ray actor calls, one at a time", f"{raw['raw_calls_per_s_sequential']:,.0f} calls/s", f"round trip p50 {raw['raw_call_p50_ms']:.2f} ms, p99 {raw['raw_call_p99_ms']:.2f} ms"),
        ("raw Ray actor calls, pipelined", f"{raw['raw_calls_per_s_pipelined']:,.0f} calls/s", "20,000 calls in flight"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'rate':>18}  detail")
    for name, rate, detail in rows:
        print(f"{name:<{width}}  {rate:>18}  {detail}")
    ratio = best / raw["raw_calls_per_s_pipelined"]
    print(f"\nevents/s end to end over raw pipelined actor calls/s: {ratio:.1f}x (batching); "
          f"targets: >= 50,000 events/s end to end, p99 < 20 ms at a steady 10,000 events/s")
    figures = {
        "events": max_store["events"],
        "e2e_events_per_s_with_store": max_store["events_per_s"],
        "e2e_events_per_s_no_store": max_nostore["events_per_s"],
        "e2e_max_speed_p99_ms": max_store["p99_ms"],
        "stored_rows": max_store["stored_rows"],
        "steady_target_events_per_s": PACED_RATE,
        "steady_events_per_s": steady["events_per_s"],
        "steady_p50_ms": steady["p50_ms"],
        "steady_p99_ms": steady["p99_ms"],
        "steady_max_ms": steady["max_ms"],
        "steady_p99_ms_with_warmup": steady["p99_ms_with_warmup"],
        "steady_feed_to_mds_p50_ms": steady["feed_to_mds"]["p50_ms"],
        "steady_feed_to_mds_p99_ms": steady["feed_to_mds"]["p99_ms"],
        "paced_speed": speed,
        "paced_events_per_s": paced["events_per_s"],
        "paced_p50_ms": paced["p50_ms"],
        "paced_p99_ms": paced["p99_ms"],
        "paced_max_ms": paced["max_ms"],
        "paced_p99_ms_with_warmup": paced["p99_ms_with_warmup"],
        **raw,
        "raw_two_hops_p50_ms": floor["p50_ms"],
        "raw_two_hops_p99_ms": floor["p99_ms"],
        "raw_two_hops_max_ms": floor["max_ms"],
        "stream_two_hops_p50_ms": stream_floor["p50_ms"],
        "stream_two_hops_p99_ms": stream_floor["p99_ms"],
        "stream_two_hops_max_ms": stream_floor["max_ms"],
        "legacy_two_hops_p50_ms": legacy_floor["p50_ms"],
        "legacy_two_hops_p99_ms": legacy_floor["p99_ms"],
        "legacy_two_hops_max_ms": legacy_floor["max_ms"],
        "e2e_over_raw_pipelined": ratio,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
