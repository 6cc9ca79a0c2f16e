"""A strategy instance as a named Ray actor (``strategy:<name>``) trading on the paper venue:
its ``StrategyTrader`` decides on each closed bar, and each decided bar goes to the Risk
Rules Monitor's actor, which passes it on to the Execution Server and answers with the
bar's outcome (fills, equity) once it is journaled.

Today the bars are a replay of the lake's history handed to ``run`` (the same bars the
backtest reads, in ``sim.paper.frame_bars`` order); taking them from the Market Data
Server's stream instead is planned (README). The actor records, per bar, the wall time
from its decision to the outcome (decision-to-fill: both hops, the journal and the
venue's step), for ``bench/pipeline.py``.
"""

from __future__ import annotations

import asyncio
import gc
import time

import numpy as np
import ray

from actors import names
from actors.strategy_trader import StrategyTrader
from sim.backtest import BacktestResult
from sim.history import Frame
from sim.paper import frame_bars
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.stream import StreamLeg


class QueueStuck(RuntimeError):
    """The run's last bars could not be journaled in time (the execution side stays paused)."""


@ray.remote
class StrategyActor:
    def __init__(self, name: str, strategy: Strategy, risk_name: str = names.RISK,
                 venue_name: str = names.PAPER_VENUE) -> None:  # fmt: skip
        self.name = name
        self.impl = strategy
        self.risk_name = risk_name
        self.venue_name = venue_name
        self.trader: StrategyTrader | None = None
        self.latencies_ns: list[int] = []
        self.intents = 0

    async def run(self, frame: Frame, settings: SimSettings, rate: float | None = None,
                  drain_timeout_s: float = 120.0) -> dict:  # fmt: skip
        """Trade ``frame``'s bars in order. ``rate``: bars per second on a fixed schedule
        (bar k is due at the start + k / rate, and its latency counts from then, so a flow
        that falls behind shows it); None: each bar as soon as the last one's outcome is
        back. Returns the run's figures."""
        risk = ray.get_actor(self.risk_name, namespace=names.NAMESPACE)
        venue = ray.get_actor(self.venue_name, namespace=names.NAMESPACE)
        legs = [StreamLeg(leg.key, leg.kind) for leg in frame.legs]
        self.trader = StrategyTrader(self.name, self.impl, legs, frame.bar_seconds, settings)
        await venue.open_account.remote(self.name, list(self.trader.legs), settings, frame.bar_seconds)
        await risk.open.remote(self.name, frame.bar_seconds)
        gc.freeze()  # see actors/__init__.py
        latencies = self.latencies_ns
        started = time.perf_counter_ns()
        for n, (ts, bars) in enumerate(frame_bars(frame)):
            now = time.perf_counter_ns()
            due = started + int(n * 1e9 / rate) if rate else now
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            decided = self.trader.decide(ts, bars)
            self.intents += len(decided.intents)
            self._learn(await risk.on_decided.remote(decided))
            latencies.append(time.perf_counter_ns() - due)
        deadline = time.monotonic() + drain_timeout_s
        while (await risk.status.remote())["strategies"][self.name]["queued"]:
            if time.monotonic() > deadline:
                raise QueueStuck(f"{self.name}: bars still unjournaled {drain_timeout_s:.0f} s after the last one")
            self._learn(await risk.drain.remote(self.name))
            await asyncio.sleep(0.2)
        wall = (time.perf_counter_ns() - started) / 1e9
        lat = np.array(latencies, dtype=np.float64) / 1e6
        return {
            "bars": len(latencies),
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
