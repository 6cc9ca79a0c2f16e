"""A strategy on a stream of closed bars: paper and live trading's side of the contract.

A backtest hands ``Strategy.signals`` the whole history at once; paper and live trading see
one closed bar at a time. ``Strategy.stream`` returns a ``SignalStream`` that takes each
bar (one ``LegBar`` per leg, in the strategy's leg order) and returns the target exposure
after it, which must equal, bit for bit, column ``i`` of ``signals`` over the first
``i + 1`` bars: paper reproduces the backtest only if the decisions are the same.

The built-in strategies stream incrementally (their indicators one value at a time, see
``strategies.indicators``). ``WindowStream`` is the fallback for any other strategy: it
keeps the history and recomputes ``signals`` over it on every bar, which is correct by
construction and costs O(history) per bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from strategies.frame import SERIES, Frame, LegData


class WindowSignals(Protocol):
    """What ``WindowStream`` needs of a strategy: its whole-history ``signals``
    (``strategies.base.Strategy`` has it; naming the protocol here keeps this module below it)."""

    def signals(self, frame: Frame) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class LegBar:
    """One leg's closed bar, with the funding the backtest's frame carries for it
    (``strategies.frame.LegData``'s columns at one index)."""

    open: float
    high: float
    low: float
    close: float
    volume: float
    funding: float = 0.0  # rate settled at this bar's close
    funding_known: float = 0.0  # latest hourly rate published at or before the close


@dataclass(frozen=True, slots=True)
class StreamLeg:
    key: str  # venue:SYMBOL
    kind: str  # perp | spot


class SignalStream:
    """Targets bar after bar; subclasses implement ``_push``."""

    def __init__(self, legs: Sequence[StreamLeg], bar_seconds: float) -> None:
        self.legs = tuple(legs)
        self.bar_seconds = bar_seconds
        self.bars = 0

    def push(self, ts_ns: int, bars: Sequence[LegBar]) -> np.ndarray:
        """The target per leg after this bar closed (NaN: no opinion)."""
        if len(bars) != len(self.legs):
            raise ValueError(f"a bar of {len(bars)} leg(s) for a stream of {len(self.legs)}")
        out = self._push(ts_ns, bars)
        self.bars += 1
        return out

    def _push(self, ts_ns: int, bars: Sequence[LegBar]) -> np.ndarray:
        raise NotImplementedError


class WindowStream(SignalStream):
    """Any strategy: ``signals`` over the whole history so far, its last column."""

    def __init__(self, strategy: WindowSignals, legs: Sequence[StreamLeg], bar_seconds: float) -> None:
        super().__init__(legs, bar_seconds)
        self.strategy = strategy
        self.ts: list[int] = []
        self.columns = [{c: [] for c in SERIES} for _ in self.legs]

    def _push(self, ts_ns: int, bars: Sequence[LegBar]) -> np.ndarray:
        self.ts.append(ts_ns)
        for cols, bar in zip(self.columns, bars):
            for c in SERIES:
                cols[c].append(getattr(bar, c))
        frame = Frame(
            ts=np.asarray(self.ts, dtype=np.int64),
            bar_seconds=self.bar_seconds,
            legs=tuple(
                LegData(key=leg.key, kind=leg.kind, **{c: np.asarray(cols[c], dtype=np.float64) for c in SERIES})
                for leg, cols in zip(self.legs, self.columns)
            ),
        )
        return np.asarray(self.strategy.signals(frame)[:, -1], dtype=np.float64)
