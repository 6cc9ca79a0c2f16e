"""The Execution Server's side of the per-bar flow (actors/bar_flow.py): journal a checked
bar's risk events, send its approved intents and journal its denied ones, step the paper
venue over the bar, journal the step, and answer with what the bar did.

A bar may take several calls. While the journal cannot be written the answer is
``paused`` and the monitor offers the same bar again; what was done of it (events
journaled, intents handled, the venue stepped) is kept here, so nothing is done twice:
and what is done again by a restarted server (which kept nothing) is a no-op in the
journal (orders by client order id, fills by venue fill id, the monitor's events by their
place in the bar). A paused engine first gets
the venue's reports that were not journaled, then reconciles, then goes on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from actors.bar_flow import BarOutcome, CheckedBar
from actors.execution.engine import ExecutionEngine, TradingPaused
from actors.execution.sim_venue import StepReport
from cluster.domain import Fill


@dataclass
class _Progress:
    close_ns: int
    events_done: int = 0
    intents_done: int = 0
    stepped: bool = False
    sent: int = 0
    denied: int = 0
    risk_events: int = 0


class BarExecutor:
    """``venue``: the paper venue (a ``SimVenue`` or the paper-venue actor's client),
    which takes a bar and steps it once told the strategy has decided on it (``step``)."""

    def __init__(self, engine: ExecutionEngine, venue, clock) -> None:
        self.engine = engine
        self.venue = venue
        self.clock = clock  # settable event clock (``now_ns``), shared with the engine
        self.undelivered: deque[StepReport] = deque()
        self._progress: dict[str, _Progress] = {}  # per strategy: its bar in hand
        self._held: dict[str, list[StepReport]] = {}  # per strategy: steps journaled, not yet answered with

    def redeliver(self, reports: list[StepReport]) -> None:
        """Steps the venue made that the journal may lack (a restarted server): they are
        journaled first, before the next bar."""
        self.undelivered.extend(reports)

    async def execute(self, checked: CheckedBar) -> BarOutcome:
        bar = checked.bar
        self.clock.now_ns = checked.now_ns
        try:
            if self.engine.paused:
                while self.undelivered:  # what the venue said that is not journaled yet
                    await self._deliver(self.undelivered[0])
                await self.engine.reconcile()
            p = self._progress.get(bar.strategy)
            if p is None or p.close_ns != bar.close_ns:
                p = self._progress[bar.strategy] = _Progress(bar.close_ns)
            await self._journal_and_send(checked, p)
            if not p.stepped:  # the bar's market data and its watermark, in one call
                self.undelivered.extend(await self.venue.step(bar.strategy, bar.legs, bar.ts_ns, bar.bars, bar.close_ns))
                p.stepped = True
            while self.undelivered:
                await self._deliver(self.undelivered[0])
        except TradingPaused as exc:
            return BarOutcome(bar.strategy, bar.close_ns, paused=str(exc))
        del self._progress[bar.strategy]
        steps = self._held.pop(bar.strategy, [])
        return _outcome(bar.strategy, bar.close_ns, steps, p, self.engine.open_orders(bar.strategy))

    async def _journal_and_send(self, checked: CheckedBar, p: _Progress) -> None:
        bar, engine = checked.bar, self.engine
        while p.events_done < len(checked.risk_events):
            kind, detail = checked.risk_events[p.events_done]
            await engine.record_risk_event(kind, ts_ns=bar.close_ns, strategy=bar.strategy, detail=detail,
                                           key=f"{bar.strategy}:{bar.close_ns}:mark:{p.events_done}")  # fmt: skip
            p.events_done += 1
            p.risk_events += 1
        while p.intents_done < len(bar.intents):
            intent, verdict = bar.intents[p.intents_done], checked.verdicts[p.intents_done]
            if verdict.accepted:
                p.sent += int((await engine.submit(intent)).sent)
            else:
                await engine.deny(intent, verdict.message, venue=intent.instrument.partition(":")[0])
                await engine.record_risk_event("reject", ts_ns=bar.close_ns, strategy=bar.strategy, rule=verdict.rule,
                                               detail=verdict.as_journal(),
                                               key=f"{bar.strategy}:{bar.close_ns}:intent:{p.intents_done}")  # fmt: skip
                p.denied += 1
                p.risk_events += 1
            p.intents_done += 1

    async def _deliver(self, report: StepReport) -> None:
        await self.engine.on_step(report)  # idempotent: a report delivered twice journals once
        self.undelivered.popleft()
        self._held.setdefault(report.strategy, []).append(report)  # answered with its strategy's next outcome


def _outcome(strategy: str, close_ns: int, steps: list[StepReport], p: _Progress, open_orders: int) -> BarOutcome:
    fills = []
    for report in steps:
        fills += [e for e in report.events if isinstance(e, Fill)]
        fills += [f for _, fs in report.venue_orders for f in fs]
    return BarOutcome(
        strategy, close_ns, fills=tuple(fills), equity=steps[-1].equity if steps else None, open_orders=open_orders,
        sent=p.sent, denied=p.denied, risk_events=p.risk_events, steps=tuple(steps),
    )  # fmt: skip
