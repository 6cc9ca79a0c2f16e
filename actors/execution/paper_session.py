"""A paper session in one process: strategy stream -> intents -> Risk Rules Monitor ->
Execution engine -> paper venue -> journal, one closed bar at a time.

This is the trading loop with every part real (the strategy's stream, the monitor's
pre-trade checks, the journal in PostgreSQL, the kernel stepping the venue) and no Ray
between them: the three sides of the per-bar flow (``StrategyTrader``, ``RiskGate``,
``BarExecutor``; actors/bar_flow.py) called directly. The trading actors
(actors/trading/) run the same three sides in three processes; tests use this to hold
paper to the backtest and to the journal's invariants.

Per closed bar: the venue takes the bar; the monitor takes the closes as marks and the bar;
the strategy's stream decides; each intent goes through ``RiskMonitor.check`` (a refusal is
journaled as a DENIED order and a risk event) and the engine (journaled, then sent);
then the bar's watermark steps the venue, whose report (acks, fills, its own exits,
funding, equity) the engine journals before the strategy and the monitor see the fills.

In paper the simulator runs the protective exits it is configured with (trailing stop,
auto-close, kill switch), intrabar as in the backtest; the monitor's continuous checks see
the same marks and fills and their events are journaled, but their closes are not sent,
because the venue has made them (a second close would also change the kernel's state and
part paper from the backtest). Live venues get the monitor's closes.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.bar_flow import BarOutcome, FlowCounts
from actors.execution.bar_executor import BarExecutor
from actors.execution.engine import ExecutionEngine
from actors.execution.sim_venue import SimVenue, StepReport
from actors.risk.gate import RiskGate
from actors.risk.monitor import RiskMonitor
from actors.strategy_trader import StrategyTrader
from sim.backtest import BacktestResult
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.stream import LegBar, StreamLeg

SessionCounts = FlowCounts


class SessionClock:
    """The session's event time: the close of the bar being handled (replay time)."""

    def __init__(self, now_ns: int = 0) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


class PaperSession:
    """One strategy's trading loop on the paper venue.

    Money-safe across faults: a bar's decisions are kept until its step is journaled.
    While the journal cannot be written (``TradingPaused``) bars keep coming and are
    decided on, and queue; nothing is sent. Each later bar first reconciles, and once that
    succeeds the queue drains in order, so no decision is lost and paper still equals the
    backtest. When the execution side dies (any other exception out of ``on_bar``),
    ``restart`` takes the new engine: the venue's reports of the bar in flight are
    delivered again (journaling is idempotent: fills by venue fill id, orders by client
    order id), the engine reconciles, and the bar's remaining intents go out.
    """

    def __init__(
        self,
        *,
        name: str,
        strategy: Strategy,
        legs: Sequence[StreamLeg],
        bar_seconds: float,
        settings: SimSettings,
        monitor: RiskMonitor,
        engine: ExecutionEngine,
        venue: SimVenue,
        clock: SessionClock,
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.keys = [leg.key for leg in legs]
        self.monitor = monitor
        self.venue = venue
        self.trader = StrategyTrader(name, strategy, legs, bar_seconds, settings)
        self.executor = BarExecutor(engine, venue, clock)
        self.gate = RiskGate(monitor, clock, self.executor.execute, bar_seconds)
        if not venue.has_account(name):
            venue.open_account(name, self.keys, settings, bar_seconds)

    @property
    def engine(self) -> ExecutionEngine:
        return self.executor.engine

    @property
    def counts(self) -> FlowCounts:
        return self.gate.counts

    @property
    def paused(self) -> str | None:
        return self.gate.paused

    @property
    def queued(self) -> int:
        """Bars decided on and not journaled yet."""
        return len(self.gate.queue)

    async def on_bar(self, ts_ns: int, bars: Sequence[LegBar]) -> list[StepReport]:
        """One closed bar of every leg (opening at ``ts_ns``): decide, then check, send and
        step every bar decided on and not yet journaled. Returns the steps journaled."""
        return self._learn(await self.gate.on_decided(self.trader.decide(ts_ns, bars)))

    async def restart(self, engine: ExecutionEngine) -> list[StepReport]:
        """The execution side came back as ``engine`` (same journal and venue): re-deliver,
        reconcile, and go on with the bars in flight."""
        self.executor.engine = engine
        self.gate.counts.restarts += 1
        return self._learn(await self.gate.drain())

    def result(self) -> BacktestResult:
        """The session's metrics table, the backtest's (open positions marked at the last close)."""
        if self.gate.queue or self.executor.undelivered:
            raise RuntimeError(f"{self.name}: {self.queued} bar(s) not journaled yet ({self.paused or 'in flight'})")
        return self.venue.finish(self.name, self.strategy)

    def _learn(self, outcomes: list[BarOutcome]) -> list[StepReport]:
        for outcome in outcomes:
            self.trader.learn(outcome)
        return [step for outcome in outcomes for step in outcome.steps]
