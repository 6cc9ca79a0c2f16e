"""Causal indicators compiled with numba: output ``i`` reads inputs ``0..i`` only."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def ema(x: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average, alpha = 2 / (span + 1), seeded with the first value
    (pandas ``ewm(span, adjust=False, min_periods=span)``): NaN for the first span-1 bars."""
    n = x.shape[0]
    out = np.empty(n)
    alpha = 2.0 / (span + 1.0)
    value = np.nan
    for i in range(n):
        v = x[i]
        if np.isnan(value):
            value = v
        elif not np.isnan(v):
            value = (1.0 - alpha) * value + alpha * v
        out[i] = value if i >= span - 1 else np.nan
    return out


@njit(cache=True)
def rolling_return_std(close: np.ndarray, window: int) -> np.ndarray:
    """Standard deviation (ddof=1) of the last ``window`` close-to-close returns ending at
    bar ``i``; NaN until ``window`` returns exist."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    s = 0.0
    s2 = 0.0
    for i in range(1, n):
        r = close[i] / close[i - 1] - 1.0
        s += r
        s2 += r * r
        if i > window:
            old = close[i - window] / close[i - window - 1] - 1.0
            s -= old
            s2 -= old * old
        if i >= window:
            var = (s2 - s * s / window) / (window - 1)
            out[i] = np.sqrt(var) if var > 0.0 else 0.0
    return out


@njit(cache=True)
def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values ending at ``i``; NaN until there are ``window``."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    s = 0.0
    for i in range(n):
        s += x[i]
        if i >= window:
            s -= x[i - window]
        if i >= window - 1:
            out[i] = s / window
    return out


def shift_forward(x: np.ndarray, bars: int = 1) -> np.ndarray:
    """``out[i] = x[i - bars]``: a value known at a bar's close, used from the next bar on."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    if bars < len(x):
        out[bars:] = x[: len(x) - bars]
    return out
