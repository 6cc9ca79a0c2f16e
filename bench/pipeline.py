"""The trading loop's cost: strategy stream -> intents -> Risk Rules Monitor -> execution
engine (journaled in PostgreSQL) -> paper venue (the stepped kernel) -> fills journaled,
in one process and across the trading actors (actors/trading/: strategy, risk, execution
and paper venue as Ray actors on a local cluster).

A strategy that flips its target on every bar makes one intent, one order and one or two
fills per bar, on the sample's SOLUSDT perp 1m bars. Printed, from one run:

* the pre-trade check (every rule on, margin checks included) on the loop's own intents:
  p50/p99 of ``RiskMonitor.check`` (in one process);
* intents/s through the whole loop at full replay speed, and the journal's transactions
  per intent, in one process and across the actors;
* signal-to-fill latency (a bar due to its fills journaled and back at the strategy) at a
  steady 1,000 intents/s and at half the measured maximum, across the actors;
* references measured in the same run: single-row transactions/s on the same embedded
  PostgreSQL and the intents/s they allow at our transactions per intent; and the
  two-hop no-work floor: three actors of the same shape (strategy -> risk -> execution,
  the same messages, one call per bar per hop) doing nothing else.

NautilusTrader 1.221's published figures (pre-trade ~21 us on a cash account, ~6 us on
margin; 1,640-1,770 orders/s submit-to-fill in its backtest engine) are printed as the
anchor; they are not measured here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402

from actors import names  # noqa: E402
from actors.bar_flow import BarOutcome, CheckedBar  # noqa: E402

from actors.execution.engine import ExecutionEngine  # noqa: E402
from actors.execution.paper_session import PaperSession, SessionClock  # noqa: E402
from actors.execution.router import Router  # noqa: E402
from actors.execution.sim_venue import SimVenue  # noqa: E402
from actors.risk.monitor import RiskMonitor  # noqa: E402
from actors.risk.verdict import Verdict  # noqa: E402
from actors.strategy_trader import StrategyTrader  # noqa: E402
from actors.trading.launch import start_paper_actors, stop_paper_actors  # noqa: E402
from bench.backtest import KEY, sample_frame  # noqa: E402
from cluster.store.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402
from cluster.store.journal import Journal  # noqa: E402
from cluster.store.migrations import migrate  # noqa: E402
from jobs.paper.replay import as_backtest  # noqa: E402
from sim.paper import frame_bars  # noqa: E402
from sim.settings import SimSettings  # noqa: E402
from strategies.base import Params, Strategy  # noqa: E402
from strategies.stream import SignalStream, StreamLeg  # noqa: E402

NAME = "sol_ema_cross"  # its configuration: venue, costs, risk limits, allocation
BARS = 2_000
STEADY = 1_000.0  # intents/s
WARM_UP = 100  # bars left out of the steady-state figures (kernel load, first calls)


class NoParams(Params):
    pass


class _FlipStream(SignalStream):
    def __init__(self, legs, bar_seconds) -> None:
        super().__init__(legs, bar_seconds)
        self.n = 0

    def _push(self, ts_ns, bars) -> np.ndarray:
        self.n += 1
        return np.array([0.5 if self.n % 2 else -0.5])


class Flip(Strategy):
    """Long half the account on odd bars, short on even ones: an intent every bar."""

    name = "flip"
    Params = NoParams

    def signals(self, frame) -> np.ndarray:
        return np.where(np.arange(len(frame)) % 2 == 0, 0.5, -0.5).reshape(1, -1)

    def stream(self, legs, bar_seconds) -> SignalStream:
        return _FlipStream(legs, bar_seconds)


class CountingJournal:
    """The journal, counting the writes the engine makes and the transactions they take."""

    WRITES = ("new_order", "record", "record_funding", "record_equity", "record_risk_event")

    def __init__(self, journal: Journal, counts: dict | None = None, batched: bool = False) -> None:
        self._journal = journal
        self.counts = counts if counts is not None else {"writes": 0, "transactions": 0}
        self._batched = batched

    @property
    def writes(self) -> int:
        return self.counts["writes"]

    @property
    def transactions(self) -> int:
        return self.counts["transactions"]

    @contextlib.asynccontextmanager
    async def batch(self):
        async with self._journal.batch() as bound:
            self.counts["transactions"] += 1
            yield CountingJournal(bound, self.counts, batched=True)

    def __getattr__(self, name):
        attr = getattr(self._journal, name)
        if name not in self.WRITES:
            return attr

        async def counted(*args, **kwargs):
            self.counts["writes"] += 1
            self.counts["transactions"] += 0 if self._batched else 1
            return await attr(*args, **kwargs)

        return counted


class TimedMonitor(RiskMonitor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.check_ns: list[int] = []

    def check(self, intent):
        t0 = time.perf_counter_ns()
        verdict = super().check(intent)
        self.check_ns.append(time.perf_counter_ns() - t0)
        return verdict


def without_kill_switch(config):
    """Flipping every bar pays fees every bar: the drawdown limit (monitor and kernel) would
    halt trading part-way; at 0.99 every bar trades."""
    import dataclasses

    from cluster.config.models import RiskConfig

    risk = config.risk.model_dump(exclude_unset=True)
    risk.setdefault("defaults", {})["max_drawdown"] = 0.99
    for overrides in (risk.get("strategies") or {}).values():
        overrides.pop("max_drawdown", None)
    return dataclasses.replace(config, risk=RiskConfig.model_validate(risk))


async def session_over(config, frame, dsn, run_id, pace_s: float | None):
    """One paper run of Flip; returns (session, monitor, journal, per-bar latencies s, elapsed s)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        journal = CountingJournal(Journal(pool))
        await journal.open_run(run_id, mode="paper", strategy=NAME)
        clock = SessionClock()
        venue = SimVenue(run_id, list(config.venues.venues))
        engine = ExecutionEngine(journal, run_id, [venue], Router(config), clock=clock)
        monitor = TimedMonitor(config, clock=clock)
        settings = SimSettings.from_config(config, [KEY], NAME)
        session = PaperSession(name=NAME, strategy=Flip(NoParams()), legs=[StreamLeg(KEY, "perp")],
                               bar_seconds=frame.bar_seconds, settings=settings, monitor=monitor, engine=engine,
                               venue=venue, clock=clock)  # fmt: skip
        latencies = []
        start = time.perf_counter()
        for n, (ts, bars) in enumerate(frame_bars(frame)):
            due = start + n * pace_s if pace_s else time.perf_counter()
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            await session.on_bar(ts, bars)
            latencies.append(time.perf_counter() - due)
        elapsed = time.perf_counter() - start
        return session, monitor, journal, np.array(latencies), elapsed
    finally:
        await pool.close()


@ray.remote(num_cpus=0)
class FloorExecution:
    async def execute(self, checked):
        return BarOutcome(checked.bar.strategy, checked.bar.close_ns)


@ray.remote(num_cpus=0)
class FloorRisk:
    def __init__(self, execution) -> None:
        self.execution = execution

    async def on_decided(self, decided):
        verdicts = tuple(Verdict(True, i) for i in decided.intents)
        return [await self.execution.execute.remote(CheckedBar(decided, decided.close_ns, (), verdicts))]


@ray.remote(num_cpus=0)
class FloorStrategy:
    """The strategy actor's loop with nothing to decide: the same DecidedBars, sent and awaited."""

    def __init__(self, risk) -> None:
        self.risk = risk

    async def run(self, decided: list) -> dict:
        lat = []
        t0 = time.perf_counter_ns()
        for d in decided:
            s = time.perf_counter_ns()
            await self.risk.on_decided.remote(d)
            lat.append(time.perf_counter_ns() - s)
        wall = (time.perf_counter_ns() - t0) / 1e9
        return {"bars": len(decided), "wall_s": wall, "bar_ms_p50": pct(lat, 50) / 1e6, "bar_ms_p99": pct(lat, 99) / 1e6}


def floor_flow(config, frame) -> dict:
    """The two-hop no-work floor over Flip's own decided bars."""
    settings = SimSettings.from_config(config, [KEY], NAME)
    trader = StrategyTrader(NAME, Flip(NoParams()), [StreamLeg(KEY, "perp")], frame.bar_seconds, settings)
    decided = [trader.decide(ts, bars) for ts, bars in frame_bars(frame)]
    execution = FloorExecution.remote()
    risk = FloorRisk.remote(execution)
    strategy = FloorStrategy.remote(risk)
    try:
        ray.get(strategy.run.remote(decided[:200]))  # warm-up
        flow = ray.get(strategy.run.remote(decided))
        flow["intents"] = sum(len(d.intents) for d in decided)
        return flow
    finally:
        for actor in (strategy, risk, execution):
            ray.kill(actor)


async def actors_over(config, frame, dsn, run_id, rate: float | None) -> dict:
    """One paper run of Flip across the trading actors; the strategy actor's figures."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await Journal(pool).open_run(run_id, mode="paper", strategy=NAME)
    finally:
        await pool.close()
    settings = SimSettings.from_config(config, [KEY], NAME)
    actors = start_paper_actors(config, run_id, NAME, Flip(NoParams()))
    try:
        flow = await actors.strategy.run.remote(frame, settings, rate)
        status = await actors.execution.status.remote()
    finally:
        stop_paper_actors(actors)
    flow["fills"] = status["counts"]["fills"]
    return flow


async def transactions_per_s(dsn, n: int = 3_000) -> float:
    """Single-row INSERT transactions, one after the other: the journal's floor."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigint, ts timestamptz, payload jsonb)")
        t0 = time.perf_counter()
        for i in range(n):
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_floor VALUES ($1, now(), $2::jsonb)", i, '{"k": 1}')
        return n / (time.perf_counter() - t0)
    finally:
        await conn.close()


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


async def main() -> None:
    base, frame = sample_frame()
    config = without_kill_switch(as_backtest(base))
    frame = frame.head(BARS)
    work = scratch_directory("botmain-bench-")
    server = EmbeddedPostgres(work / "pg", port=_free_port(), database="bench")
    dsn = server.start()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        floor_tx = max([await transactions_per_s(dsn) for _ in range(2)])
        await session_over(config, frame.head(WARM_UP), dsn, "bench-warm-up", None)  # the kernel loaded, imports done
        session, monitor, journal, _, elapsed = await session_over(config, frame, dsn, "bench-full", None)
        intents = session.counts.intents
        full_rate = intents / elapsed
        tx_per_intent = journal.transactions / intents
        check_ns = monitor.check_ns
        # the actors find the store as every Botmain process does: BOTMAIN_PG_DSN in their
        # environment (a local cluster's workers inherit the driver's), never an argument
        os.environ["BOTMAIN_PG_DSN"] = dsn
        ray.init(namespace=names.NAMESPACE, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            floor = floor_flow(config, frame)
            full = await actors_over(config, frame, dsn, "bench-actors-full", None)
            # steady state: without the first bars (the venue actor loading the kernel, first calls)
            actor_rate = (len(full["bar_ms"]) - WARM_UP) / (sum(full["bar_ms"][WARM_UP:]) / 1e3)
            steady = await actors_over(config, frame, dsn, "bench-actors-steady", STEADY)
            half_rate = actor_rate / 2
            half = await actors_over(config, frame.head(1_000), dsn, "bench-actors-half", half_rate)
        finally:
            ray.shutdown()
    finally:
        server.stop()
    floor_rate = floor_tx / tx_per_intent
    floor_actor_rate = floor["intents"] / floor["wall_s"]

    print(f"trading loop, {len(frame):,} bars of {KEY}, an intent every bar "
          f"({intents:,} intents, {session.counts.fills:,} fills, {session.counts.denied} denied: {session.counts.denied_by or 'none'})")  # fmt: skip
    print()
    print(f"{'measure':<62} {'ours':>10} {'reference':>10} {'ratio':>7}")
    rows = [
        ("pre-trade check p50, us (every rule, margin included)", pct(check_ns, 50) / 1e3, 21.0, "anchor"),
        ("pre-trade check p99, us (target < 25)", pct(check_ns, 99) / 1e3, 21.0, "anchor"),
        ("intents/s in one process, full replay speed", full_rate, floor_rate, "tx floor"),
        ("journal transactions per intent", tx_per_intent, None, None),
        ("single-row transactions/s, same PostgreSQL", None, floor_tx, None),
        ("intents/s across the actors, full speed (target >= 2,000)", actor_rate, floor_actor_rate, "2-hop floor"),
        ("per-bar round trip p50 across the actors, ms", full["bar_ms_p50"], floor["bar_ms_p50"], "2-hop floor"),
        ("per-bar round trip p99 across the actors, ms", full["bar_ms_p99"], floor["bar_ms_p99"], "2-hop floor"),
        (f"signal-to-fill p50 at {STEADY:,.0f} intents/s, ms", steady["bar_ms_p50"], None, None),
        (f"signal-to-fill p99 at {STEADY:,.0f} intents/s, ms (target < 25)", steady["bar_ms_p99"], None, None),
        (f"signal-to-fill p50 at {half_rate:,.0f} intents/s (half the max), ms", half["bar_ms_p50"], None, None),
        (f"signal-to-fill p99 at {half_rate:,.0f} intents/s (half the max), ms", half["bar_ms_p99"], None, None),
    ]
    fig = {"bars": len(frame), "intents": intents, "fills": session.counts.fills, "actor_fills": full["fills"]}
    keys = ["check_p50_us", "check_p99_us", "intents_per_s_in_process", "journal_tx_per_intent",
            "floor_transactions_per_s", "intents_per_s_actors", "bar_ms_p50_actors", "bar_ms_p99_actors",
            "latency_p50_ms_at_1000", "latency_p99_ms_at_1000", "latency_p50_ms_at_half", "latency_p99_ms_at_half"]  # fmt: skip
    for key, (label, ours, ref, kind) in zip(keys, rows):
        ratio = f"{ours / ref:.2f}" if ours is not None and ref else ""
        shown_ref = "" if ref is None else f"{ref:,.1f}" + (" *" if kind == "anchor" else "")
        print(f"{label:<62} {'' if ours is None else f'{ours:,.2f}':>10} {shown_ref:>10} {ratio:>7}")
        fig[key] = ours if ours is not None else ref
        if ref is not None and key != "floor_transactions_per_s":
            fig[key + "_reference"] = ref
            fig[key + "_ratio"] = ours / ref
    fig["half_rate_intents_per_s"] = half_rate
    print()
    print("* NautilusTrader 1.221's published pre-trade cost (cash account), an anchor, not measured here.")
    print("  In one process, the reference is the same server's transactions/s over our transactions per")
    print("  intent. Across the actors, it is the two-hop no-work floor: the same three-actor shape and")
    print("  messages, one call per bar per hop, no work. At 1,000 intents/s, when the flow's maximum is")
    print("  below that, bars fall behind their schedule and the latency grows with the run.")
    print(json.dumps(fig))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    asyncio.run(main())
