"""Bars built from the stream: OHLC from trades when the interval had any, else from
quote mids; volume from trades (0 for a quote-built bar).

A bar covers ``[open, open + interval)`` of event time and is emitted when an event for the
same instrument at or after its end arrives, or when ``close_due`` finds it over (the
staleness timer calls that with wall time for live feeds, so a quiet market still gets its
bar). Bars replayed from the lake pass through the MDS unchanged and are not rebuilt.

A bar is emitted only for an interval this builder saw from its start: the first bar of an
instrument whose first event comes after the interval began (the MDS started, or restarted
after its process died, mid-interval) would be missing that interval's earlier trades, so it
is left out (counted in ``partial_skipped``) rather than stored as if complete. An interval
is emitted at most once: an event for an interval already emitted (closed by the timer, then
a late event) is counted in ``late_dropped`` and changes no bar.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.domain import Bar, Quote, Trade


@dataclass(slots=True)
class _Open:
    start_ns: int
    trade_ohlc: list[float] | None  # open, high, low, close
    mid_ohlc: list[float] | None
    volume: float
    partial: bool = False  # begun before this builder saw the instrument: not emitted


class BarBuilder:
    def __init__(self, interval_s: int) -> None:
        self.interval_ns = interval_s * 1_000_000_000
        self.interval_s = interval_s
        self._open: dict[str, _Open] = {}
        self._seen: set[str] = set()
        self.partial_skipped = 0
        self.late_dropped = 0
        self._emitted: dict[str, int] = {}  # the start of the last interval emitted, per instrument

    def on_trade(self, trade: Trade) -> Bar | None:
        done, bar = self._bar_for(trade.instrument, trade.ts_ns)
        if bar is None:
            return done
        p = trade.price
        if bar.trade_ohlc is None:
            bar.trade_ohlc = [p, p, p, p]
        else:
            o = bar.trade_ohlc
            o[1] = max(o[1], p)
            o[2] = min(o[2], p)
            o[3] = p
        bar.volume += trade.size
        return done

    def on_quote(self, quote: Quote) -> Bar | None:
        done, bar = self._bar_for(quote.instrument, quote.ts_ns)
        if bar is None:
            return done
        p = 0.5 * (quote.bid + quote.ask)
        if bar.mid_ohlc is None:
            bar.mid_ohlc = [p, p, p, p]
        else:
            o = bar.mid_ohlc
            o[1] = max(o[1], p)
            o[2] = min(o[2], p)
            o[3] = p
        return done

    def close_due(self, now_ns: int) -> list[Bar]:
        """Every open bar whose interval ended by ``now_ns``."""
        out = []
        for key, bar in list(self._open.items()):
            if bar.start_ns + self.interval_ns <= now_ns:
                del self._open[key]
                done = self._finish(key, bar)
                if done is not None:
                    out.append(done)
        return out

    def _bar_for(self, key: str, ts_ns: int) -> tuple[Bar | None, _Open | None]:
        """The bar this event finished (if any), and the open bar it goes into (None: its
        interval was emitted already)."""
        start = ts_ns - ts_ns % self.interval_ns
        bar = self._open.get(key)
        done = None
        if bar is not None and bar.start_ns != start:
            if start < bar.start_ns:
                return None, bar  # a late event for a bar already past: folded into the open one
            done = self._finish(key, bar)
            bar = None
        if bar is None:
            if start <= self._emitted.get(key, -1):
                self.late_dropped += 1
                return done, None
            first = key not in self._seen
            self._seen.add(key)
            bar = self._open[key] = _Open(start, None, None, 0.0, partial=first and ts_ns > start)
        return done, bar

    def _finish(self, key: str, bar: _Open) -> Bar | None:
        self._emitted[key] = bar.start_ns
        if bar.partial:
            self.partial_skipped += 1
            return None
        o, h, lo, c = bar.trade_ohlc if bar.trade_ohlc is not None else bar.mid_ohlc
        return Bar(bar.start_ns, key, self.interval_s, o, h, lo, c, bar.volume)
