"""Causal indicators compiled with numba: output ``i`` reads inputs ``0..i`` only."""

from __future__ import annotations

import math

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


# --- the same indicators one value at a time ---------------------------------------------
# For paper and live trading, which see one closed bar at a time: each class repeats its
# array twin's arithmetic operation for operation (same order, same float64 operations),
# so that a stream of values gives bit for bit the array's output at every bar; the
# strategy tests hold them to that.


class StreamingEma:
    """``ema`` one value at a time."""

    __slots__ = ("span", "alpha", "value", "count")

    def __init__(self, span: int) -> None:
        self.span = span
        self.alpha = 2.0 / (span + 1.0)
        self.value = float("nan")
        self.count = 0

    def push(self, v: float) -> float:
        if self.value != self.value:  # NaN: not seeded yet
            self.value = v
        elif v == v:
            self.value = (1.0 - self.alpha) * self.value + self.alpha * v
        self.count += 1
        return self.value if self.count >= self.span else float("nan")


class StreamingMean:
    """``rolling_mean`` one value at a time."""

    __slots__ = ("window", "values", "sum", "count")

    def __init__(self, window: int) -> None:
        self.window = window
        self.values = [0.0] * window  # ring of the last ``window`` values
        self.sum = 0.0
        self.count = 0

    def push(self, v: float) -> float:
        i = self.count
        self.sum += v
        if i >= self.window:
            self.sum -= self.values[i % self.window]
        self.values[i % self.window] = v
        self.count += 1
        return self.sum / self.window if i >= self.window - 1 else float("nan")


class StreamingReturnStd:
    """``rolling_return_std`` one close at a time."""

    __slots__ = ("window", "closes", "s", "s2", "count")

    def __init__(self, window: int) -> None:
        self.window = window
        self.closes = [0.0] * (window + 2)  # ring of the last ``window + 2`` closes
        self.s = 0.0
        self.s2 = 0.0
        self.count = 0

    def push(self, close: float) -> float:
        i = self.count
        w = self.window
        ring = self.closes
        n = w + 2
        ring[i % n] = close
        self.count += 1
        if i == 0:
            return float("nan")
        r = close / ring[(i - 1) % n] - 1.0
        self.s += r
        self.s2 += r * r
        if i > w:
            old = ring[(i - w) % n] / ring[(i - w - 1) % n] - 1.0
            self.s -= old
            self.s2 -= old * old
        if i >= w:
            var = (self.s2 - self.s * self.s / w) / (w - 1)
            return math.sqrt(var) if var > 0.0 else 0.0
        return float("nan")
