"""A strategy instance as a named Ray actor (``strategy:<name>``) trading on the paper venue:
its ``StrategyTrader`` decides on each closed bar, and each decided bar goes to the Risk
Rules Monitor's actor, which passes it on to the Execution Server and answers with the
bar's outcome (fills, equity) once it is journaled.

Its bars come from one of two sources:

* the Market Data Server (``subscribe`` then ``run_stream``): the MDS's batches arrive over
  the batch link (actors/stream/), its ``Bar`` and ``FundingRate`` events are assembled
  into closed bars (actors/trading/bar_assembler.py) and queued, so the stream is never
  held up by trading; the trading loop takes them in order;
* a replay of the lake's bars handed over whole (``run``), the bars the backtest reads.

Either way the actor records, per bar, the wall time from the bar (its arrival, or its due
time on a paced schedule) to its outcome: both hops, the journal and the venue's step.
"""

from __future__ import annotations

import asyncio
import gc
import time

import numpy as np
import ray

from actors import names
from actors.strategy_trader import StrategyTrader
from actors.stream import BatchReceiver, Origin, StreamLimits
from actors.trading.bar_assembler import BarAssembler
from cluster.events import EventBatch
from sim.backtest import BacktestResult
from sim.history import Frame
from sim.paper import frame_bars
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.stream import StreamLeg


class QueueStuck(RuntimeError):
    """The run's last bars could not be journaled in time (the execution side stays paused)."""


class FeedStalled(RuntimeError):
    """No bar came from the Market Data Server for too long."""


@ray.remote
class StrategyActor:
    def __init__(self, name: str, strategy: Strategy, risk_name: str = names.RISK,
                 venue_name: str = names.PAPER_VENUE, mds_name: str = names.MDS) -> None:  # fmt: skip
        self.name = name
        self.impl = strategy
        self.risk_name = risk_name
        self.venue_name = venue_name
        self.mds_name = mds_name
        self.trader: StrategyTrader | None = None
        self.latencies_ns: list[int] = []
        self.intents = 0
        self.assembler: BarAssembler | None = None
        self.receiver: BatchReceiver | None = None
        self.arrived: asyncio.Queue | None = None  # (arrival ns, bar open ns, bars) from the MDS

    # --- bars from the lake -------------------------------------------------------------

    async def run(self, frame: Frame, settings: SimSettings, rate: float | None = None,
                  drain_timeout_s: float = 120.0) -> dict:  # fmt: skip
        """Trade ``frame``'s bars in order. ``rate``: bars per second on a fixed schedule
        (bar k is due at the start + k / rate, and its latency counts from then, so a flow
        that falls behind shows it); None: each bar as soon as the last one's outcome is
        back. Returns the run's figures."""
        legs = [(leg.key, leg.kind) for leg in frame.legs]
        risk = await self._open(legs, frame.bar_seconds, settings)
        started = time.perf_counter_ns()
        for n, (ts, bars) in enumerate(frame_bars(frame)):
            now = time.perf_counter_ns()
            due = started + int(n * 1e9 / rate) if rate else now
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            await self._trade(risk, ts, bars, due)
        return await self._end(risk, started, drain_timeout_s)

    # --- bars from the Market Data Server ---------------------------------------------

    async def subscribe(self, legs: list[str], bar_seconds: float) -> None:
        """Subscribe to the MDS for the legs' bars and funding (before their feed starts)."""
        self.assembler = BarAssembler(legs, bar_seconds)
        self.arrived = asyncio.Queue()
        self.receiver = BatchReceiver(self._on_batch, f"strategy:{self.name}", StreamLimits())
        await self.receiver.start()
        mds = ray.get_actor(self.mds_name, namespace=names.NAMESPACE)
        self.receiver.allow(await mds.stream_key.remote(), "mds")
        me = ray.get_runtime_context().current_actor
        await mds.subscribe.remote(self.name, me, stream=self.receiver.address, kinds=["bar", "funding"],
                                   symbols=list(legs))  # fmt: skip

    async def on_market_data(self, batch: EventBatch) -> None:
        self._on_batch(batch, None)

    def _on_batch(self, batch: EventBatch, origin: Origin | None) -> None:
        now = time.perf_counter_ns()
        for event in batch.events:
            for ts, bars in self.assembler.on_event(event):
                self.arrived.put_nowait((now, ts, bars))

    async def run_stream(self, legs: list[tuple[str, str]], bar_seconds: float, settings: SimSettings, bars: int,
                         idle_timeout_s: float = 60.0, drain_timeout_s: float = 120.0) -> dict:  # fmt: skip
        """Trade the next ``bars`` closed bars from the MDS (``subscribe`` first), each as it
        is assembled; ``FeedStalled`` when none comes for ``idle_timeout_s``."""
        if self.arrived is None:
            raise RuntimeError(f"{self.name}: run_stream before subscribe")
        risk = await self._open(legs, bar_seconds, settings)
        started = time.perf_counter_ns()
        try:
            for n in range(bars):
                try:
                    arrived, ts, leg_bars = await asyncio.wait_for(self.arrived.get(), idle_timeout_s)
                except TimeoutError:
                    raise FeedStalled(f"{self.name}: no bar from the MDS for {idle_timeout_s:.0f} s, "
                                      f"after {n} of {bars}") from None  # fmt: skip
                await self._trade(risk, ts, leg_bars, arrived)
        finally:
            await self._unsubscribe()
        figures = await self._end(risk, started, drain_timeout_s)
        a = self.assembler
        figures.update(dropped_bars=a.dropped_bars, late_funding=a.late_funding, outside_funding=a.outside_funding)
        return figures

    async def _unsubscribe(self) -> None:
        try:
            mds = ray.get_actor(self.mds_name, namespace=names.NAMESPACE)
            await mds.unsubscribe.remote(self.name)
        except Exception:  # the MDS went away: nothing to unsubscribe from
            pass
        if self.receiver is not None:
            await self.receiver.close()
            self.receiver = None

    # --- the trading loop ---------------------------------------------------------------

    async def _open(self, legs: list[tuple[str, str]], bar_seconds: float, settings: SimSettings):
        risk = ray.get_actor(self.risk_name, namespace=names.NAMESPACE)
        venue = ray.get_actor(self.venue_name, namespace=names.NAMESPACE)
        stream_legs = [StreamLeg(key, kind) for key, kind in legs]
        self.trader = StrategyTrader(self.name, self.impl, stream_legs, bar_seconds, settings)
        await venue.open_account.remote(self.name, list(self.trader.legs), settings, bar_seconds)
        await risk.open.remote(self.name, bar_seconds)
        gc.freeze()  # see actors/__init__.py
        return risk

    async def _trade(self, risk, ts: int, bars, since_ns: int) -> None:
        decided = self.trader.decide(ts, bars)
        self.intents += len(decided.intents)
        self._learn(await risk.on_decided.remote(decided))
        self.latencies_ns.append(time.perf_counter_ns() - since_ns)

    async def _end(self, risk, started: int, drain_timeout_s: float) -> dict:
        deadline = time.monotonic() + drain_timeout_s
        while (await risk.status.remote())["strategies"][self.name]["queued"]:
            if time.monotonic() > deadline:
                raise QueueStuck(f"{self.name}: bars still unjournaled {drain_timeout_s:.0f} s after the last one")
            self._learn(await risk.drain.remote(self.name))
            await asyncio.sleep(0.2)
        wall = (time.perf_counter_ns() - started) / 1e9
        lat = np.array(self.latencies_ns, dtype=np.float64) / 1e6
        return {
            "bars": len(lat),
            "intents": self.intents,
            "wall_s": wall,
            "bar_ms_p50": float(np.percentile(lat, 50)) if len(lat) else None,
            "bar_ms_p99": float(np.percentile(lat, 99)) if len(lat) else None,
            "bar_ms": lat.tolist(),  # each bar's, in order (steady-state figures leave out the first ones)
        }

    async def finish(self) -> BacktestResult:
        """The run's metrics table, the backtest's (open positions marked at the last close)."""
        venue = ray.get_actor(self.venue_name, namespace=names.NAMESPACE)
        return await venue.finish.remote(self.name, self.impl)

    def _learn(self, outcomes) -> None:
        for outcome in outcomes:
            self.trader.learn(outcome)
