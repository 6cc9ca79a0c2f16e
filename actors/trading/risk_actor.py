"""The Risk Rules Monitor as a named Ray actor (``risk``): one monitor over every strategy
(their exposure nets across them, their allocations share the treasury), with one
``RiskGate`` per strategy for its bars (actors/risk/gate.py), passing checked bars to the
Execution Server.

``halt``, ``reduce`` and ``resume`` (``botmain halt`` / ``botmain resume``) change the
trading state of one strategy or of all; each transition is journaled through the
Execution Server and its actions done (open orders cancelled on HALTED and REDUCING).

An Execution Server that cannot be reached (its process died; Ray is restarting it) is a
pause: the bar stays queued in the gate and is offered again with the next bar, or by
``drain``; nothing is guessed about what the dead server did with it (its successor
reconciles).
"""

from __future__ import annotations

import dataclasses
import gc

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from actors import names
from actors.bar_flow import BarOutcome, CheckedBar, DecidedBar
from actors.execution.paper_session import SessionClock
from actors.risk.gate import RiskGate
from actors.risk.monitor import RiskMonitor
from actors.risk.events import CancelOpenOrders
from actors.risk.states import GLOBAL, Transition
from cluster.config import BotmainConfig


@ray.remote
class RiskActor:
    def __init__(self, config: BotmainConfig, execution_name: str = names.EXECUTION) -> None:
        self.clock = SessionClock()  # event time: the close of the last bar seen
        self.monitor = RiskMonitor(config, clock=self.clock)
        self.execution_name = execution_name
        self._execution = None  # its handle, looked up once (it stays valid across Ray's restarts)
        self.gates: dict[str, RiskGate] = {}
        self.unreachable = 0
        gc.freeze()  # see actors/__init__.py

    async def open(self, strategy: str, bar_seconds: float) -> None:
        if strategy not in self.gates:
            self.monitor.state(strategy)  # a strategy the configuration does not know is refused here
            self.gates[strategy] = RiskGate(self.monitor, self.clock, self._execute, bar_seconds)

    async def on_decided(self, decided: DecidedBar) -> list[BarOutcome]:
        return await self._gate(decided.strategy).on_decided(decided)

    async def drain(self, strategy: str) -> list[BarOutcome]:
        """Offer ``strategy``'s queued bars again (after its last bar, while they wait)."""
        return await self._gate(strategy).drain()

    def _execution_server(self):
        if self._execution is None:
            self._execution = ray.get_actor(self.execution_name, namespace=names.NAMESPACE)
        return self._execution

    async def _execute(self, checked: CheckedBar) -> BarOutcome:
        try:
            return await self._execution_server().execute.remote(checked)
        except (RayActorError, ActorUnavailableError, ValueError) as exc:
            self.unreachable += 1
            why = f"the Execution Server is unreachable ({type(exc).__name__}); the bar waits for it"
            return BarOutcome(checked.bar.strategy, checked.bar.close_ns, paused=why)

    # --- trading states -----------------------------------------------------------------

    async def halt(self, reason: str, strategy: str | None = None) -> dict:
        return await self._apply(self.monitor.halt(reason, strategy))

    async def reduce(self, reason: str, strategy: str | None = None) -> dict:
        return await self._apply(self.monitor.reduce(reason, strategy))

    async def resume(self, reason: str, strategy: str | None = None) -> dict:
        return await self._apply(self.monitor.resume(reason, strategy))

    async def _apply(self, t: Transition) -> dict:
        execution = self._execution_server()
        strategy = None if t.scope == GLOBAL else t.scope
        await execution.record_risk_event.remote(t.kind, t.ts_ns, strategy, t.cause, t.as_journal())
        cancelled = 0
        for action in t.actions:
            if isinstance(action, CancelOpenOrders):
                cancelled += await execution.cancel_all.remote(action.strategy)
        return {"scope": t.scope, "previous": t.previous.value, "state": t.state.value, "reason": t.reason,
                "cancelled": cancelled}  # fmt: skip

    # --- reports ------------------------------------------------------------------------

    async def status(self) -> dict:
        return {
            "states": {name: self.monitor.state(name).value for name in self.monitor.accounts},
            "strategies": {
                name: {**dataclasses.asdict(g.counts), "queued": len(g.queue), "paused": g.paused}
                for name, g in self.gates.items()
            },
            "execution_unreachable": self.unreachable,
            "summary": dataclasses.asdict(self.monitor.summary()),
        }

    def _gate(self, strategy: str) -> RiskGate:
        gate = self.gates.get(strategy)
        if gate is None:
            raise KeyError(f"the risk monitor has not opened {strategy!r} (RiskActor.open)")
        return gate
