"""Trading states, per strategy and global.

* ACTIVE: every rule applies as configured;
* REDUCING: only orders that reduce the position in their instrument are accepted (a
  flip is refused: it opens the other side);
* HALTED: nothing new; cancels are always allowed.

The global state overrides in the stricter direction: a strategy trades in the stricter of
its own state and the global one, so a global HALTED stops everyone and a global resume
leaves a halted strategy halted. A manual call always returns its ``Transition`` (the
journal keeps the operator's word even when the state stays); an automatic one returns one
only when the state changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from actors.risk.events import Action, journal

GLOBAL = "global"


class TradingState(str, enum.Enum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


@dataclass(frozen=True, slots=True)
class Transition:
    """``scope`` is a strategy's name or ``global``; ``cause`` is ``manual`` or the rule that
    tripped (``daily_loss_limit``, ``max_drawdown``, ``equity_wiped``), ``inputs`` its
    numbers, ``actions`` what the actor must do now."""

    kind: ClassVar[str] = "transition"
    scope: str
    previous: TradingState
    state: TradingState
    cause: str
    reason: str
    ts_ns: int
    inputs: dict[str, Any]
    actions: tuple[Action, ...]

    def as_journal(self) -> dict[str, Any]:
        return journal(self)


class TradingStates:
    __slots__ = ("_state", "_reason", "_cause", "_restricted")

    def __init__(self, strategies: list[str]) -> None:
        scopes = [GLOBAL, *strategies]
        self._state = dict.fromkeys(scopes, TradingState.ACTIVE)
        self._reason = dict.fromkeys(scopes, "")
        self._cause = dict.fromkeys(scopes, "")
        self._restricted: set[str] = set()  # the scopes not ACTIVE

    def own(self, scope: str) -> TradingState:
        """The state of ``scope`` (a strategy, or ``global``) itself."""
        return self._state[scope]

    def cause(self, scope: str) -> str:
        """What put ``scope`` in its state: ``manual``, a rule's name, or '' (never moved)."""
        return self._cause[scope]

    def active(self, strategy: str) -> bool:
        """Whether ``strategy`` trades ACTIVE (the check's first question, so a cheap one)."""
        restricted = self._restricted
        return not restricted or (GLOBAL not in restricted and strategy not in restricted)

    def effective(self, strategy: str) -> tuple[TradingState, str, str]:
        """The state ``strategy`` trades in, which scope set it, and why."""
        own = self._state[strategy]
        g = self._state[GLOBAL]
        if g.severity > own.severity:
            return g, GLOBAL, self._reason[GLOBAL]
        return own, strategy, self._reason[strategy]

    def move(self, scope: str, state: TradingState, cause: str, reason: str, ts_ns: int,
             inputs: dict[str, Any] | None = None, actions: tuple[Action, ...] = ()) -> Transition:
        previous = self._state[scope]
        self._state[scope], self._reason[scope], self._cause[scope] = state, reason, cause
        if state is TradingState.ACTIVE:
            self._restricted.discard(scope)
        else:
            self._restricted.add(scope)
        return Transition(scope, previous, state, cause, reason, ts_ns, dict(inputs or {}), actions)

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {s: {"state": self._state[s].value, "reason": self._reason[s], "cause": self._cause[s]} for s in self._state}

    def restore(self, saved: dict[str, dict[str, str]]) -> None:
        for scope, row in saved.items():
            if scope in self._state:
                self.move(scope, TradingState(row["state"]), row["cause"], row["reason"], 0)
