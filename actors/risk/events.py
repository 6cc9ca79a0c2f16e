"""What the monitor reports from its continuous checks, and the actions it asks for.

Each event is plain data for the journal (``as_journal``); the ``actions`` inside one are
what the actor must carry out. The actions are the monitor's own, not a strategy's: the
actor hands them to the Execution Server directly, without checking them again (a HALTED
state refuses every new intent, the monitor's own closes included, if they were checked).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from cluster.domain import OrderIntent, Side


def journal(obj: Any) -> dict[str, Any]:
    """A frozen event as JSON-able data: enums by value, nested events and actions too."""
    out: dict[str, Any] = {"kind": obj.kind}
    for f in fields(obj):
        out[f.name] = _plain(getattr(obj, f.name))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "kind") and hasattr(value, "__dataclass_fields__"):
        return journal(value)
    return value


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelOpenOrders:
    """Cancel every open order of ``strategy`` (None: of every strategy)."""

    kind: ClassVar[str] = "cancel_open_orders"
    strategy: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ClosePosition:
    """Close ``strategy``'s whole position in ``instrument``: ``size`` base units on
    ``side``, market, reduce-only; ``reference_price`` is the mark it was decided at."""

    kind: ClassVar[str] = "close_position"
    strategy: str
    instrument: str
    side: Side
    size: float
    reference_price: float
    reason: str

    def intent(self, ts_ns: int = 0) -> OrderIntent:
        """As a target-0 order (the venue client closes whatever the position is by then)."""
        return OrderIntent(
            strategy=self.strategy,
            instrument=self.instrument,
            side=self.side,
            size=self.size,
            reduce_only=True,
            ts_ns=ts_ns,
            target=0.0,
            reference_price=self.reference_price,
        )


Action = CancelOpenOrders | ClosePosition


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AutoClose:
    """Positions on ``venue`` whose distance to liquidation fell below the buffer: the
    venue equity is at or under ``(1 + buffer)`` x the maintenance margin. The perps close
    one by one, the largest maintenance margin first, until what is left clears it."""

    kind: ClassVar[str] = "auto_close"
    strategy: str
    venue: str
    ts_ns: int
    equity: float
    maintenance: float
    buffer: float
    liquidation_prices: dict[str, float]  # instrument -> price, before the closes
    auto_close_prices: dict[str, float]
    actions: tuple[ClosePosition, ...]

    def as_journal(self) -> dict[str, Any]:
        return journal(self)


@dataclass(frozen=True, slots=True)
class StopMoved:
    """A trailing stop set at entry (``previous`` None) or tightened after a close."""

    kind: ClassVar[str] = "stop_moved"
    strategy: str
    instrument: str
    ts_ns: int
    level: float
    previous: float | None
    price: float  # the entry or the close it was set from
    sigma: float
    multiple: float

    def as_journal(self) -> dict[str, Any]:
        return journal(self)


@dataclass(frozen=True, slots=True)
class StopHit:
    """A mark, or a closed bar's low/high, reached the trailing stop."""

    kind: ClassVar[str] = "stop_hit"
    strategy: str
    instrument: str
    ts_ns: int
    level: float
    price: float  # the mark, or the bar's low (long) / high (short)
    actions: tuple[ClosePosition, ...]

    def as_journal(self) -> dict[str, Any]:
        return journal(self)
