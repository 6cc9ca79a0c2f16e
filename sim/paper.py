"""The simulator one bar at a time: the paper venue's account.

``PaperAccount`` holds one kernel account (``sim.kernel.new_account``) and advances it with
the same ``sim.kernel.step`` the backtest loop calls, one closed bar at a time, with the
strategy's target for that bar. Fees, impact, latency, funding, margin, stops, the kill
switch and liquidation are the kernel's: there is no second implementation of any of
them. The market inputs the kernel reads besides the bar (return volatility and mean
volume over the impact window, volatility over the stop window, each known before the
bar opens) are kept incrementally by ``MarketStream``, with the same arithmetic as
``sim.market.MarketArrays``' arrays.

So a paper session fed the bars, funding and targets a backtest sees reproduces that
backtest's fills, trades and equity (``tests/test_paper.py`` holds it to that). What
paper cannot take from the backtest is the data: where a live feed's bars differ from the
lake's, so do the fills.

Simplifications (beside the kernel's own, docs/simulator.md):

* one kernel account per strategy: its legs share one margin account, as in the
  backtest, even when they are on different venues (a real deployment funds each venue
  separately; the Risk Rules Monitor checks margin per venue);
* the recorded-book impact model (``impact: book``) is not fed to the paper account: it
  prices with the square-root model over the same window, as a backtest without books does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sim import kernel as k
from sim.backtest import BacktestResult, Trade, trade_from_row
from sim.metrics import metrics_from_stats
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.frame import SERIES, Frame
from strategies.indicators import StreamingMean, StreamingReturnStd
from strategies.stream import LegBar, StreamLeg

FILL_REASONS = {
    k.EXIT_SIGNAL: "signal",
    k.EXIT_STOP: "stop",
    k.EXIT_AUTOCLOSE: "auto_close",
    k.EXIT_LIQUIDATION: "liquidation",
    k.EXIT_KILL: "kill_switch",
}


class MarketStream:
    """``MarketArrays``' sigma, volume and stop_sigma, one bar at a time: the values known
    before each bar opens (the windows up to the previous close)."""

    def __init__(self, settings: SimSettings) -> None:
        self._sigma = [StreamingReturnStd(leg.impact_window_bars) for leg in settings.legs]
        self._volume = [StreamingMean(leg.impact_window_bars) for leg in settings.legs]
        self._stop = [StreamingReturnStd(settings.risk.stop_window) for _ in settings.legs]
        n = len(settings.legs)
        self.sigma = np.full(n, np.nan)
        self.volume = np.full(n, np.nan)
        self.stop_sigma = np.full(n, np.nan)

    def after(self, bars: Sequence[LegBar]) -> None:
        """Take the bar that just closed into the windows: the next bar's values."""
        for l, bar in enumerate(bars):
            self.sigma[l] = self._sigma[l].push(bar.close)
            self.volume[l] = self._volume[l].push(bar.volume)
            self.stop_sigma[l] = self._stop[l].push(bar.close)


@dataclass(frozen=True, slots=True)
class PaperFill:
    """One fill the account booked in a step, as the paper venue reports it."""

    bar: int  # the bar counter it happened in
    leg: int
    qty: float  # signed, base units
    price: float
    reference_price: float  # the price before impact
    fee: float
    reason: str  # signal | stop | auto_close | liquidation | kill_switch


@dataclass(frozen=True, slots=True)
class StepResult:
    bar: int
    equity: float  # at the bar's close, costs included
    fills: tuple[PaperFill, ...]
    trades: tuple[Trade, ...]  # round trips the bar closed
    positions: tuple[float, ...]  # base units per leg after the bar


class PaperAccount:
    """One strategy's kernel account, stepped bar by bar."""

    def __init__(self, settings: SimSettings, bar_seconds: float) -> None:
        self.settings = settings
        self.bar_seconds = bar_seconds
        self.bar_ns = int(bar_seconds * 1e9)
        L = len(settings.legs)
        self.legs = L
        self.lp = settings.leg_params()
        self.AS = settings.account_params(bar_seconds)
        self.market = MarketStream(settings)
        # the kernel's inputs, one column: the bar being stepped
        self._col = {name: np.zeros((L, 1)) for name in ("open", "high", "low", "close", "funding", "target")}
        self._sigma = np.zeros((L, 1))
        self._volume = np.zeros((L, 1))
        self._stop_sigma = np.zeros((L, 1))
        self._book = np.zeros((L, 0, 0, 0))
        self._no_equity = np.zeros(0)  # step returns the one bar's equity
        # one bar books at most a pending order (close, open) and an exit per leg
        self._trades = np.zeros((4 * L, k.N_TR))
        self._fills = np.zeros((8 * L, k.N_FL))
        self.S: np.ndarray | None = None
        self.st: np.ndarray | None = None
        self.ts: list[int] = []  # bar open times, by bar counter
        self.equity: list[float] = []
        self.trades: list[Trade] = []
        self.fills: list[PaperFill] = []
        self._last_close = np.zeros(L)
        self._finished = False
        self._load_kernel()

    def _load_kernel(self) -> None:
        """Step a scratch account over no bars: numba loads the compiled kernel from its cache
        (about a second, once per process) now rather than at the first bar, which would be
        late by that much."""
        S, st = k.new_account(self.legs, self.AS, np.ones(self.legs))
        none = np.zeros((self.legs, 0))
        k.step(0, none, none, none, none, none, none, none, none, self._book, self._book, none, self.lp, self.AS, S, st,
               self._trades, self._fills, True, self._no_equity)  # fmt: skip

    @property
    def bars(self) -> int:
        return len(self.ts)

    def step(self, ts_ns: int, bars: Sequence[LegBar], target: np.ndarray) -> StepResult:
        """Advance by the bar opening at ``ts_ns`` (one ``LegBar`` per leg) with the
        strategy's ``target`` per leg at its close (NaN: no decision)."""
        if self._finished:
            raise RuntimeError("the paper account has finished")
        if len(bars) != self.legs or np.shape(target) != (self.legs,):
            raise ValueError(f"a step takes {self.legs} leg bar(s) and targets, got {len(bars)} and {np.shape(target)}")
        if self.ts and ts_ns <= self.ts[-1]:
            raise ValueError(f"bar at {ts_ns} ns is not after the previous one at {self.ts[-1]} ns")
        col = self._col
        for l, bar in enumerate(bars):
            col["open"][l, 0] = bar.open
            col["high"][l, 0] = bar.high
            col["low"][l, 0] = bar.low
            col["close"][l, 0] = bar.close
            col["funding"][l, 0] = bar.funding
            col["target"][l, 0] = target[l]
            self._last_close[l] = bar.close
        self._sigma[:, 0] = self.market.sigma
        self._volume[:, 0] = self.market.volume
        self._stop_sigma[:, 0] = self.market.stop_sigma
        if self.S is None:
            self.S, self.st = k.new_account(self.legs, self.AS, self._last_close.copy())
        st = self.st
        st[k.ST_N_TRADE_ROWS] = 0.0  # the step's rows start at the top of our buffers
        st[k.ST_N_FILL_ROWS] = 0.0
        i = len(self.ts)
        self.ts.append(ts_ns)
        equity = k.step(
            i, col["open"], col["high"], col["low"], col["close"], self._sigma, self._volume, self._stop_sigma,
            col["funding"], self._book, self._book, col["target"], self.lp, self.AS, self.S, st,
            self._trades, self._fills, True, self._no_equity,
        )  # fmt: skip
        self.market.after(bars)
        self.equity.append(float(equity))
        fills = tuple(self._fill(r) for r in self._fills[: int(st[k.ST_N_FILL_ROWS])])
        trades = tuple(self._trade(r) for r in self._trades[: int(st[k.ST_N_TRADE_ROWS])])
        self.fills.extend(fills)
        self.trades.extend(trades)
        return StepResult(i, float(equity), fills, trades, tuple(float(q) for q in self.S[:, k.S_Q]))

    def finish(self, strategy: Strategy, notes: tuple[str, ...] = ()) -> BacktestResult:
        """End the session: open positions are recorded as open trades marked at the last
        close, and the metrics are the backtest's."""
        if not self.ts:
            raise ValueError("a paper session needs at least one bar to report")
        if not self._finished:
            self.st[k.ST_N_TRADE_ROWS] = 0.0
            k.finish(self.S, self.st, self._trades, self._last_close.copy(), len(self.ts) - 1, True)
            self.trades.extend(self._trade(r) for r in self._trades[: int(self.st[k.ST_N_TRADE_ROWS])])
            self._finished = True
        return BacktestResult(
            strategy=strategy.name,
            params=strategy.params.model_dump(),
            metrics=metrics_from_stats(self.st, self.settings.initial_cash, len(self.ts), self.bar_seconds),
            ts=np.asarray(self.ts, dtype=np.int64),
            equity=np.asarray(self.equity),
            trades=list(self.trades),
            notes=notes,
        )

    def _fill(self, r: np.ndarray) -> PaperFill:
        return PaperFill(
            bar=int(r[k.FL_BAR]), leg=int(r[k.FL_LEG]), qty=float(r[k.FL_QTY]), price=float(r[k.FL_PRICE]),
            reference_price=float(r[k.FL_REF]), fee=float(r[k.FL_FEE]), reason=FILL_REASONS[int(r[k.FL_REASON])],
        )  # fmt: skip

    def _trade(self, r: np.ndarray) -> Trade:
        return trade_from_row(r, self.settings, self.ts, self.bar_ns)


def frame_bars(frame: Frame) -> Iterator[tuple[int, list[LegBar]]]:
    """A frame as the closed bars a replayed paper session sees, oldest first."""
    legs = frame.legs
    cols = [[getattr(leg, c) for c in SERIES] for leg in legs]
    for i in range(len(frame)):
        yield int(frame.ts[i]), [LegBar(*(float(c[i]) for c in leg_cols)) for leg_cols in cols]


def paper_replay(strategy: Strategy, frame: Frame, settings: SimSettings) -> BacktestResult:
    """A paper session in one process: the strategy's stream and the paper account over a
    frame's bars, in order. What the actors do across processes, without them."""
    stream = strategy.stream([StreamLeg(leg.key, leg.kind) for leg in frame.legs], frame.bar_seconds)
    account = PaperAccount(settings, frame.bar_seconds)
    for ts_ns, bars in frame_bars(frame):
        account.step(ts_ns, bars, stream.push(ts_ns, bars))
    return account.finish(strategy, frame.notes)
