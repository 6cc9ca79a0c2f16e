"""A strategy's closed bars from the Market Data Server's stream: each leg's ``Bar`` (stamped
with its open, published at its close) and the perp legs' ``FundingRate`` settlements, assembled into the
``LegBar``s of one bar time once every leg's bar closing then has arrived.

The rules are the lake's frame's (``sim.history``), so that a strategy fed by the MDS sees
the bars the backtest sees:

* a bar time is kept only when every leg has a bar closing then (the frame's common
  timestamps); a leg's bar that has no counterpart in the others is dropped once a later
  bar time completes;
* a funding settlement at ``t`` is the bar's whose ``(open, close]`` holds ``t``, and is
  added to that bar's ``funding``; one that falls in no kept bar (a gap) is not applied;
  ``funding_known`` is the hourly rate of the latest settlement applied, 0 before any;
* bars opening before ``start_ns`` or at or after ``end_ns`` are not emitted, and only
  settlements with ``start_ns <= t < end_ns`` count (the frame reads both on that span).

It relies on the stream's order: a settlement reaches it before the bar it belongs to
(the replay merges series by event time, funding before bars on a tie, and a live bar is
published at its close, after the settlements inside it). A settlement that arrives after
its bar was emitted is counted in ``late_funding`` and not applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.domain import Bar, FundingRate
from strategies.stream import LegBar

HOUR_S = 3600.0


class BarAssembler:
    def __init__(self, legs: Sequence[str], bar_seconds: float, start_ns: int | None = None, end_ns: int | None = None) -> None:
        self.legs = tuple(legs)
        self.bar_ns = int(bar_seconds * 1e9)
        self.start_ns = start_ns
        self.end_ns = end_ns
        self._index = {key: n for n, key in enumerate(self.legs)}
        self._bars: dict[int, dict[int, Bar]] = {}  # close ns -> leg -> bar
        self._funding: list[list[tuple[int, float, float]]] = [[] for _ in self.legs]  # (ts, rate, hourly) not applied yet
        self._known = [0.0] * len(self.legs)
        self.last_close_ns = -1
        self.emitted = 0
        self.dropped_bars = 0
        self.late_funding = 0
        self.outside_funding = 0

    def on_event(self, event) -> list[tuple[int, list[LegBar]]]:
        """Feed one event; returns the bar times it completed, as ``(open ns, bars)``."""
        if type(event) is FundingRate:
            self._on_funding(event)
            return []
        if type(event) is not Bar:
            return []
        leg = self._index.get(event.instrument)
        if leg is None or int(event.interval_s * 1e9) != self.bar_ns:
            return []
        open_ = event.ts_ns  # a bar is stamped with its open, and published at its close
        close = open_ + self.bar_ns
        if close <= self.last_close_ns or (self.start_ns is not None and open_ < self.start_ns) or (
            self.end_ns is not None and open_ >= self.end_ns
        ):
            return []
        self._bars.setdefault(close, {})[leg] = event
        if len(self._bars[close]) < len(self.legs):
            return []
        return [self._emit(close)]

    def _on_funding(self, f: FundingRate) -> None:
        leg = self._index.get(f.instrument)
        if leg is None:
            return
        if (self.start_ns is not None and f.ts_ns < self.start_ns) or (self.end_ns is not None and f.ts_ns >= self.end_ns):
            self.outside_funding += 1
            return
        if f.ts_ns <= self.last_close_ns:
            self.late_funding += 1
            return
        self._funding[leg].append((f.ts_ns, f.rate, f.rate * HOUR_S / f.interval_s))

    def _emit(self, close: int) -> tuple[int, list[LegBar]]:
        for older in [t for t in self._bars if t < close]:
            del self._bars[older]  # a leg's bar without its counterparts
            self.dropped_bars += 1
        legs = self._bars.pop(close)
        open_ = close - self.bar_ns
        out = []
        for leg in range(len(self.legs)):
            settled = 0.0
            keep = []
            for ts, rate, hourly in self._funding[leg]:
                if ts > close:
                    keep.append((ts, rate, hourly))
                elif ts > open_:
                    settled += rate
                    self._known[leg] = hourly
                else:
                    self.outside_funding += 1  # in a gap between kept bars: not applied
            self._funding[leg] = keep
            b = legs[leg]
            out.append(LegBar(b.open, b.high, b.low, b.close, b.volume, settled, self._known[leg]))
        self.last_close_ns = close
        self.emitted += 1
        return open_, out
