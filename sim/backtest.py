"""Run a strategy over a frame through the compiled kernel.

``backtest`` records the equity curve and the trade list; ``evaluate`` is the sweep's
path: same kernel, no recording, metrics only, market inputs built once per frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from sim import kernel as k
from sim.market import MarketArrays
from sim.metrics import Metrics, metrics_from_stats
from sim.settings import SimSettings
from strategies.base import Params, Strategy
from strategies.frame import Frame

EXIT_REASONS = {
    k.EXIT_SIGNAL: "signal",
    k.EXIT_STOP: "stop",
    k.EXIT_AUTOCLOSE: "auto_close",
    k.EXIT_LIQUIDATION: "liquidation",
    k.EXIT_KILL: "kill_switch",
    k.EXIT_OPEN: "open",
}


@dataclass(frozen=True)
class Trade:
    instrument: str
    side: str
    entry_ts: np.datetime64
    exit_ts: np.datetime64
    entry_price: float
    exit_price: float  # NaN while open
    size: float  # largest absolute size held, base units
    pnl: float  # quote, after fees and funding; an open trade is marked at the last close
    fees: float
    funding: float
    exit_reason: str
    liquidation_price: float  # at entry; NaN for spot or when none exists


@dataclass(frozen=True)
class BacktestResult:
    strategy: str
    params: dict
    metrics: Metrics
    ts: np.ndarray  # bar open times, int64 ns
    equity: np.ndarray  # equity at each bar's close
    trades: list[Trade]
    notes: tuple[str, ...]


def trade_from_row(r: np.ndarray, settings: SimSettings, ts, bar_ns: int) -> Trade:
    """One row of the kernel's trade list (``sim.kernel.TR_*``); ``ts`` holds the bars'
    open times by bar number, so a trade exits at its exit bar's close."""
    return Trade(
        instrument=settings.legs[int(r[k.TR_LEG])].key,
        side="long" if r[k.TR_SIDE] > 0 else "short",
        entry_ts=np.datetime64(int(ts[int(r[k.TR_ENTRY_I])]), "ns"),
        exit_ts=np.datetime64(int(ts[int(r[k.TR_EXIT_I])]) + bar_ns, "ns"),
        entry_price=float(r[k.TR_ENTRY_PX]),
        exit_price=float(r[k.TR_EXIT_PX]),
        size=float(r[k.TR_SIZE]),
        pnl=float(r[k.TR_PNL]),
        fees=float(r[k.TR_FEES]),
        funding=float(r[k.TR_FUNDING]),
        exit_reason=EXIT_REASONS[int(r[k.TR_REASON])],
        liquidation_price=float(r[k.TR_LIQ_PX]),
    )


def _run(strategy: Strategy, frame: Frame, settings: SimSettings, market: MarketArrays, record: bool, kernel_params=None):
    target = np.ascontiguousarray(strategy.signals(frame), dtype=np.float64)
    if target.shape != (len(frame.legs), len(frame)):
        raise ValueError(
            f"{strategy.name}.signals returned shape {target.shape}, expected {(len(frame.legs), len(frame))}"
        )
    return k.simulate(
        market.open,
        market.high,
        market.low,
        market.close,
        market.sigma,
        market.volume,
        market.stop_sigma,
        market.funding,
        market.book_off,
        market.book_size,
        target,
        *(kernel_params or (settings.leg_params(), settings.account_params(frame.bar_seconds))),
        record,
    )


def backtest(strategy: Strategy, frame: Frame, settings: SimSettings, market: MarketArrays | None = None) -> BacktestResult:
    market = market or MarketArrays.build(frame, settings)
    st, equity, rows = _run(strategy, frame, settings, market, record=True)
    bar_ns = int(frame.bar_seconds * 1e9)
    trades = [trade_from_row(r, settings, frame.ts, bar_ns) for r in rows]
    return BacktestResult(
        strategy=strategy.name,
        params=strategy.params.model_dump(),
        metrics=metrics_from_stats(st, settings.initial_cash, len(frame), frame.bar_seconds),
        ts=frame.ts,
        equity=equity,
        trades=trades,
        notes=frame.notes,
    )


def evaluate(
    strategy_cls: type[Strategy], combos: Iterable[Params], frame: Frame, settings: SimSettings, market: MarketArrays | None = None
) -> Iterator[Metrics]:
    """Metrics for each parameter set, in order; the frame's indicator cache is shared."""
    market = market or MarketArrays.build(frame, settings)
    kernel_params = (settings.leg_params(), settings.account_params(frame.bar_seconds))
    for params in combos:
        st, _, _ = _run(strategy_cls(params), frame, settings, market, record=False, kernel_params=kernel_params)
        yield metrics_from_stats(st, settings.initial_cash, len(frame), frame.bar_seconds)
