"""EMA crossover momentum: the whitepaper's ema_short / ema_long as a trading rule.

Long while the fast EMA of the close is above the slow one; below it, flat
(``long_only``) or short (``long_short``). Both EMAs are pandas-style ``adjust=False``
with ``span`` bars of warm-up, during which the strategy has no opinion (NaN).
"""

from __future__ import annotations

from typing import Annotated, Literal, Sequence

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from strategies.base import Choice, FloatRange, IntRange, Params, Strategy
from strategies.frame import Frame
from strategies.indicators import StreamingEma, ema
from strategies.stream import LegBar, SignalStream, StreamLeg


class EmaCrossParams(Params):
    fast: Annotated[int, Field(ge=1), IntRange(5, 55, 2)] = 12
    slow: Annotated[int, Field(ge=2), IntRange(20, 220, 8)] = 48
    direction: Annotated[Literal["long_only", "long_short"], Choice(("long_only", "long_short"))] = "long_short"
    exposure: Annotated[float, Field(gt=0, le=20), FloatRange(0.5, 2.0, 0.5)] = 1.0

    @model_validator(mode="after")
    def _fast_below_slow(self) -> EmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


class EmaCross(Strategy):
    name = "ema_cross"
    Params = EmaCrossParams

    def warmup_bars(self) -> int:
        return self.params.slow

    def signals(self, frame: Frame) -> np.ndarray:
        p = self.params
        close = frame.leg(0).close
        fast = frame.cached(("ema", 0, p.fast), lambda: ema(close, p.fast))
        slow = frame.cached(("ema", 0, p.slow), lambda: ema(close, p.slow))
        below = 0.0 if p.direction == "long_only" else -p.exposure
        return _cross_target(fast, slow, p.exposure, below, max(p.fast, p.slow) - 1).reshape(1, -1)

    def stream(self, legs: Sequence[StreamLeg], bar_seconds: float) -> SignalStream:
        return _EmaCrossStream(self.params, legs, bar_seconds)


class _EmaCrossStream(SignalStream):
    """``signals`` one bar at a time: two streaming EMAs of the close."""

    def __init__(self, params: EmaCrossParams, legs: Sequence[StreamLeg], bar_seconds: float) -> None:
        super().__init__(legs, bar_seconds)
        self.fast = StreamingEma(params.fast)
        self.slow = StreamingEma(params.slow)
        self.above = params.exposure
        self.below = 0.0 if params.direction == "long_only" else -params.exposure
        self.warmup = max(params.fast, params.slow) - 1

    def _push(self, ts_ns: int, bars: Sequence[LegBar]) -> np.ndarray:
        close = bars[0].close
        fast = self.fast.push(close)
        slow = self.slow.push(close)
        if self.bars < self.warmup:
            return np.array([np.nan])
        return np.array([self.above if fast > slow else self.below])


@njit(cache=True)
def _cross_target(fast: np.ndarray, slow: np.ndarray, above: float, below: float, warmup: int) -> np.ndarray:
    """``above`` where fast > slow, else ``below``; NaN for the first ``warmup`` bars."""
    out = np.empty(fast.shape[0])
    for i in range(fast.shape[0]):
        out[i] = np.nan if i < warmup else (above if fast[i] > slow[i] else below)
    return out
