"""The Risk Rules Monitor's side of the per-bar flow (actors/bar_flow.py): mark each decided
bar, check each of its intents, pass the bar on to the execution side, learn from the
outcome.

Bars stay here, in order, until their outcome is journaled. While the execution side
answers ``paused`` (the journal cannot be written) each new bar is marked and queued and
the oldest is offered again; once execution answers, the queue drains in order. A bar's
verdicts are made once, when it first reaches the front of the queue (so after the fills
of every bar before it), and kept across retries: a retried bar is the same decision.

Between the intents of one bar the monitor counts each intent it accepted as an open
order (an upper bound: the execution side may still deny one on routing); the journal's
count replaces it with the outcome, after the whole bar.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.bar_flow import BarOutcome, CheckedBar, DecidedBar, FlowCounts
from actors.risk.monitor import RiskMonitor
from actors.risk.verdict import Verdict
from cluster.domain import Bar

Execute = Callable[[CheckedBar], Awaitable[BarOutcome]]


@dataclass
class _Pending:
    bar: DecidedBar
    risk_events: tuple[tuple[str, dict], ...]
    verdicts: tuple[Verdict, ...] | None = None


class RiskGate:
    def __init__(self, monitor: RiskMonitor, clock, execute: Execute, bar_seconds: float) -> None:
        self.monitor = monitor
        self.clock = clock  # settable event clock (``now_ns``), shared with the monitor
        self.execute = execute
        self.bar_seconds = bar_seconds
        self.counts = FlowCounts()
        self.paused: str | None = None
        self.queue: deque[_Pending] = deque()

    async def on_decided(self, decided: DecidedBar) -> list[BarOutcome]:
        """Mark ``decided``, queue it and drain: the outcomes journaled by this call, oldest first."""
        self.clock.now_ns = decided.close_ns
        events = []
        for key, bar in zip(decided.legs, decided.bars):
            events += self.monitor.on_mark(key, bar.close)
            events += self.monitor.on_bar(Bar(decided.close_ns, key, self.bar_seconds, bar.open, bar.high, bar.low,
                                              bar.close, bar.volume))  # fmt: skip
        self.queue.append(_Pending(decided, tuple((e.kind, e.as_journal()) for e in events)))
        self.counts.bars += 1
        return await self.drain()

    async def drain(self) -> list[BarOutcome]:
        """Offer the queued bars to the execution side, oldest first, until one is paused."""
        done = []
        while self.queue:
            pending = self.queue[0]
            if pending.verdicts is None:
                pending.verdicts = self._check(pending.bar)
            outcome = await self.execute(CheckedBar(pending.bar, self.clock.now_ns, pending.risk_events, pending.verdicts))
            if outcome.paused:
                if self.paused is None:
                    self.counts.pauses += 1
                self.paused = outcome.paused
                break
            self.paused = None
            self.queue.popleft()
            self._learn(outcome)
            done.append(outcome)
        return done

    def _check(self, bar: DecidedBar) -> tuple[Verdict, ...]:
        verdicts = []
        for intent in bar.intents:
            verdict = self.monitor.check(intent)  # an accepted one counts as open from here
            self.counts.intents += 1
            if not verdict.accepted:
                self.counts.denied += 1
                self.counts.denied_by[verdict.rule] = self.counts.denied_by.get(verdict.rule, 0) + 1
            verdicts.append(verdict)
        return tuple(verdicts)

    def _learn(self, outcome: BarOutcome) -> None:
        for fill in outcome.fills:
            self.monitor.on_fill(outcome.strategy, fill)  # its events are watched, not acted on (paper_session.py)
        self.monitor.set_open_orders(outcome.strategy, outcome.open_orders)
        c = self.counts
        c.sent += outcome.sent
        c.fills += len(outcome.fills)
        c.risk_events += outcome.risk_events
