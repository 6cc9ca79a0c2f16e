"""A paper session in one process: strategy stream -> intents -> Risk Rules Monitor ->
Execution engine -> paper venue -> journal, one closed bar at a time.

This is the trading loop with every part real (the strategy's stream, the monitor's
pre-trade checks, the journal in PostgreSQL, the kernel stepping the venue) and no Ray
between them: the actors run the same parts across processes, and tests use this to hold
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

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from actors.execution.engine import ExecutionEngine, TradingPaused
from actors.execution.sim_venue import SimVenue, StepReport
from actors.intents import TargetIntents
from actors.risk.monitor import RiskMonitor
from actors.risk.verdict import Verdict
from cluster.domain import Bar, Fill, OrderIntent
from sim.backtest import BacktestResult
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.stream import LegBar, StreamLeg


@dataclass
class SessionClock:
    """The session's event time: the close of the bar being handled (replay time)."""

    now_ns: int = 0

    def __call__(self) -> int:
        return self.now_ns


@dataclass
class SessionCounts:
    bars: int = 0
    intents: int = 0
    denied: int = 0
    sent: int = 0
    fills: int = 0
    risk_events: int = 0
    pauses: int = 0
    restarts: int = 0
    denied_by: dict[str, int] = field(default_factory=dict)


@dataclass
class _BarInFlight:
    """A closed bar the strategy has decided on, until its step is journaled."""

    close_ns: int
    risk_events: list  # the monitor's events on its marks, to journal
    intents: list[OrderIntent]
    done: int = 0  # intents checked and handed to the engine
    verdict: Verdict | None = None  # the check of intents[done], kept across a retry
    stepped: bool = False  # the venue has stepped it (its reports are in _undelivered)


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
        self.legs = tuple(legs)
        self.keys = [leg.key for leg in self.legs]
        self.bar_ns = int(bar_seconds * 1e9)
        self.bar_seconds = bar_seconds
        self.monitor = monitor
        self.engine = engine
        self.venue = venue
        self.clock = clock
        self.stream = strategy.stream(self.legs, bar_seconds)
        r = settings.risk
        self.intents = TargetIntents(name, self.keys, settings.initial_cash, max_order_notional=r.max_order_notional,
                                     max_position_notional=r.max_position_notional, max_leverage=r.max_leverage)  # fmt: skip
        self.counts = SessionCounts()
        self.paused: str | None = None
        self._queue: deque[_BarInFlight] = deque()
        self._undelivered: deque[StepReport] = deque()
        if not venue.has_account(name):
            venue.open_account(name, self.keys, settings, bar_seconds)

    async def on_bar(self, ts_ns: int, bars: Sequence[LegBar]) -> list[StepReport]:
        """One closed bar of every leg (opening at ``ts_ns``): decide, then check, send and
        step every bar decided on and not yet journaled. Returns the steps journaled."""
        close_ns = ts_ns + self.bar_ns
        self.clock.now_ns = close_ns
        events = []
        for key, bar in zip(self.keys, bars):
            self.venue.on_bar(key, ts_ns, bar)
            events += self.monitor.on_mark(key, bar.close)
            events += self.monitor.on_bar(Bar(close_ns, key, self.bar_seconds, bar.open, bar.high, bar.low,
                                              bar.close, bar.volume))  # fmt: skip
        target = self.stream.push(ts_ns, bars)
        intents = self.intents.intents(close_ns, target, [b.close for b in bars])
        self._queue.append(_BarInFlight(close_ns, events, intents))
        self.counts.bars += 1
        return await self._drain()

    async def restart(self, engine: ExecutionEngine) -> list[StepReport]:
        """The execution side came back as ``engine`` (same journal and venue): re-deliver,
        reconcile, and go on with the bars in flight."""
        self.engine = engine
        self.counts.restarts += 1
        return await self._drain()

    def result(self) -> BacktestResult:
        """The session's metrics table, the backtest's (open positions marked at the last close)."""
        if self._queue or self._undelivered:
            raise RuntimeError(f"{self.name}: {len(self._queue)} bar(s) not journaled yet ({self.paused or 'in flight'})")
        return self.venue.finish(self.name, self.strategy)

    # --- inside -------------------------------------------------------------------------

    async def _drain(self) -> list[StepReport]:
        delivered: list[StepReport] = []
        try:
            if self.engine.paused:
                while self._undelivered:  # what the venue said that is not journaled yet
                    delivered.append(await self._deliver(self._undelivered[0]))
                await self.engine.reconcile()
                self.paused = None
            while self._queue:
                delivered += await self._finish(self._queue[0])
                self._queue.popleft()
        except TradingPaused as exc:
            if self.paused is None:
                self.counts.pauses += 1
            self.paused = str(exc)
        return delivered

    async def _finish(self, bar: _BarInFlight) -> list[StepReport]:
        while bar.risk_events:
            await self._risk_event(bar.risk_events[0].kind, bar.close_ns, detail=bar.risk_events[0].as_journal())
            bar.risk_events.pop(0)
        while bar.done < len(bar.intents):
            intent = bar.intents[bar.done]
            if bar.verdict is None:
                bar.verdict = self.monitor.check(intent)
                self.counts.intents += 1
            verdict = bar.verdict
            if verdict.accepted:
                result = await self.engine.submit(intent)
                self.counts.sent += int(result.sent)
            else:
                await self.engine.deny(intent, verdict.message, venue=intent.instrument.partition(":")[0])
                await self._risk_event("reject", bar.close_ns, rule=verdict.rule, detail=verdict.as_journal())
                self.counts.denied += 1
                self.counts.denied_by[verdict.rule] = self.counts.denied_by.get(verdict.rule, 0) + 1
            self.monitor.set_open_orders(self.name, self.engine.open_orders(self.name))
            bar.done += 1
            bar.verdict = None
        if not bar.stepped:
            self._undelivered.extend(self.venue.close_bar(self.name, bar.close_ns))
            bar.stepped = True
        delivered = []
        while self._undelivered:
            delivered.append(await self._deliver(self._undelivered[0]))
        return delivered

    async def _deliver(self, report: StepReport) -> StepReport:
        await self.engine.on_step(report)  # idempotent: a report delivered twice journals once
        self._undelivered.popleft()
        self._after_step(report)
        return report

    def _after_step(self, report: StepReport) -> None:
        fills = [e for e in report.events if isinstance(e, Fill)]
        fills += [f for _, fs in report.venue_orders for f in fs]
        for fill in fills:
            self.counts.fills += 1
            self.intents.on_fill(fill)
            self.monitor.on_fill(self.name, fill)  # its events are watched, not acted on (module doc)
        # the journal's word on what is still open, not a count kept beside it
        self.monitor.set_open_orders(self.name, self.engine.open_orders(self.name))
        self.intents.equity = report.equity

    async def _risk_event(self, kind: str, ts_ns: int, *, rule: str | None = None, detail: dict | None = None) -> None:
        await self.engine.record_risk_event(kind, ts_ns=ts_ns, strategy=self.name, rule=rule, detail=detail)
        self.counts.risk_events += 1
