"""The messages of the trading loop's per-bar flow: strategy -> Risk Rules Monitor ->
Execution Server -> paper venue, and back.

A closed bar travels as one message per hop, carrying every intent decided at its close,
so each hop costs one call per bar whatever the number of intents:

* ``DecidedBar``: the strategy's side, once it has decided on a closed bar (the bar of
  every leg, and the intents of that decision);
* ``CheckedBar``: the monitor's side, once it has marked the bar and checked each intent
  (the events its marks raised, to journal, and one verdict per intent);
* ``BarOutcome``: the execution side, once the bar's intents are journaled and sent and
  the venue's step is journaled: the fills the strategy and the monitor learn from, the
  equity, and the open orders the journal holds. ``paused`` set: nothing of the bar is
  done yet (the journal cannot be written); the monitor keeps the bar and sends it again.

The bar is also the watermark: the venue steps it only after its intents have passed both
hops, so every hop sees the bars in order and a step never misses a decision made at its
close.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.risk.verdict import Verdict
from cluster.domain import Fill, OrderIntent
from strategies.stream import LegBar


@dataclass(frozen=True, slots=True)
class DecidedBar:
    strategy: str
    ts_ns: int  # the bar's open
    close_ns: int
    legs: tuple[str, ...]
    bars: tuple[LegBar, ...]  # one per leg, in ``legs`` order
    intents: tuple[OrderIntent, ...]


@dataclass(frozen=True, slots=True)
class CheckedBar:
    bar: DecidedBar
    now_ns: int  # the monitor's clock when it passed the bar on (event time on a replay)
    risk_events: tuple[tuple[str, dict], ...]  # (kind, journal detail) of the monitor's events on its marks
    verdicts: tuple[Verdict, ...]  # one per intent of ``bar``


@dataclass(frozen=True, slots=True)
class BarOutcome:
    strategy: str
    close_ns: int
    paused: str | None = None  # the journal cannot be written: the bar is to be sent again
    fills: tuple[Fill, ...] = ()  # of the strategy's orders and of the venue's own exits, as journaled
    equity: float | None = None  # after the bar's step
    open_orders: int = 0  # of the strategy, as the journal holds them
    sent: int = 0  # orders that went to the venue
    denied: int = 0
    risk_events: int = 0  # journaled for this bar
    steps: tuple = field(default=())  # the venue's StepReports journaled for this bar


@dataclass
class FlowCounts:
    """What a strategy's bars did, counted once each however often a bar was retried."""

    bars: int = 0
    intents: int = 0
    denied: int = 0
    sent: int = 0
    fills: int = 0
    risk_events: int = 0
    pauses: int = 0
    restarts: int = 0
    denied_by: dict[str, int] = field(default_factory=dict)
