"""Run metrics from the kernel's online statistics.

Returns are per bar, annualised with 365 days of bars (crypto trades every day). Sharpe
and Sortino use a zero risk-free rate; Sortino's downside deviation is the root mean
square of the negative bar returns over all bars. CAGR uses the span from the first bar's
open to the last bar's close, and is NaN (as is Calmar) for spans under a day. ``trades`` counts round trips, including one still open at
the end; win rate and profit factor count closed round trips only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from sim import kernel as k

YEAR_S = 365.0 * 24 * 3600


@dataclass(frozen=True)
class Metrics:
    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    win_rate: float
    profit_factor: float
    exposure: float
    turnover: float  # traded notional / mean equity
    fees_paid: float
    funding_paid: float  # positive: paid, negative: received
    slippage_paid: float
    trades: int
    liquidations: int
    stops: int
    autocloses: int
    killed: bool
    final_equity: float

    def as_dict(self) -> dict:
        return asdict(self)


def _cagr(growth: float, years: float) -> float:
    """Compound annual growth; NaN for spans under a day (annualising minutes explodes)."""
    if growth <= 0:
        return -1.0
    if years < 1 / 365:
        return math.nan
    try:
        return math.exp(math.log(growth) / years) - 1.0
    except OverflowError:
        return math.inf


def metrics_from_stats(st: np.ndarray, initial_cash: float, n_bars: int, bar_seconds: float) -> Metrics:
    final = st[k.ST_EQUITY]
    total = final / initial_cash - 1.0
    years = n_bars * bar_seconds / YEAR_S
    cagr = _cagr(final / initial_cash, years)
    n = st[k.ST_N_R]
    bars_per_year = YEAR_S / bar_seconds
    mean = st[k.ST_SUM_R] / n if n else 0.0
    var = (st[k.ST_SUM_R2] - n * mean * mean) / (n - 1) if n > 1 else 0.0
    std = math.sqrt(var) if var > 0 else 0.0
    sharpe = mean / std * math.sqrt(bars_per_year) if std > 0 else 0.0
    down = math.sqrt(st[k.ST_SUM_DOWN2] / n) if n else 0.0
    sortino = mean / down * math.sqrt(bars_per_year) if down > 0 else 0.0
    mdd = st[k.ST_MAX_DD]
    closed = st[k.ST_CLOSED]
    mean_equity = st[k.ST_SUM_EQUITY] / n_bars if n_bars else initial_cash
    gross_loss = st[k.ST_GROSS_LOSS]
    return Metrics(
        total_return=float(total),
        cagr=float(cagr),
        sharpe=float(sharpe),
        sortino=float(sortino),
        calmar=float(cagr / mdd) if mdd > 0 else (math.nan if math.isnan(cagr) else 0.0),
        max_drawdown=float(mdd),
        win_rate=float(st[k.ST_WINS] / closed) if closed else 0.0,
        profit_factor=float(st[k.ST_GROSS_PROFIT] / gross_loss) if gross_loss > 0 else (math.inf if st[k.ST_GROSS_PROFIT] > 0 else 0.0),
        exposure=float(st[k.ST_EXPOSED_BARS] / n_bars) if n_bars else 0.0,
        turnover=float(st[k.ST_TURNOVER] / mean_equity) if mean_equity > 0 else 0.0,
        fees_paid=float(st[k.ST_FEES]),
        funding_paid=float(st[k.ST_FUNDING]),
        slippage_paid=float(st[k.ST_SLIPPAGE]),
        trades=int(st[k.ST_TRADES]),
        liquidations=int(st[k.ST_LIQUIDATIONS]),
        stops=int(st[k.ST_STOPS]),
        autocloses=int(st[k.ST_AUTOCLOSES]),
        killed=bool(st[k.ST_KILLED]),
        final_equity=float(final),
    )
