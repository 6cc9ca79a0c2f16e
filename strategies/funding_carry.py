"""Perp-vs-spot funding carry on one base asset (e.g. Drift SOL-PERP against SOL spot).

Assumes a two-leg frame, legs in the order ``("perp", "spot")``: leg 0 a perpetual whose
``funding_known`` is the latest hourly funding rate published at or before each bar's
close (positive: longs pay shorts), leg 1 the spot asset (or a spot proxy such as the
perp's oracle price, see ``sim.history``). The rate is read as an hourly fraction of
notional, whatever the bar length; the backtest settles the actual payments from the
perp leg's ``funding`` series. No borrowing is assumed: the spot leg is only ever long.
"""

from __future__ import annotations

from typing import Annotated, Sequence

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from strategies.base import FloatRange, IntRange, Params, Strategy
from strategies.frame import Frame
from strategies.indicators import StreamingMean, rolling_mean
from strategies.stream import LegBar, SignalStream, StreamLeg

HOUR_S = 3600.0


class FundingCarryParams(Params):
    enter_hourly_rate: Annotated[float, FloatRange(0.0, 0.0001, 0.00001)] = 0.00002
    exit_hourly_rate: Annotated[float, FloatRange(-0.00005, 0.00005, 0.00001)] = 0.0
    lookback_hours: Annotated[int, Field(ge=1, le=24 * 30), IntRange(1, 25, 4)] = 1
    exposure: Annotated[float, Field(gt=0, le=0.5), FloatRange(0.15, 0.45, 0.15)] = 0.45

    @model_validator(mode="after")
    def _enter_above_exit(self) -> FundingCarryParams:
        if self.enter_hourly_rate <= self.exit_hourly_rate:
            raise ValueError(
                f"enter_hourly_rate ({self.enter_hourly_rate}) must be above exit_hourly_rate ({self.exit_hourly_rate})"
            )
        return self


@njit(cache=True)
def _hysteresis(rate: np.ndarray, enter: float, exit_: float) -> np.ndarray:
    """1.0 while in the carry, 0.0 while flat, NaN where the rate is not yet defined.

    Enters when the rate rises above ``enter``, leaves when it falls below ``exit_``;
    in between it keeps its state. Starts flat."""
    n = rate.shape[0]
    out = np.empty(n)
    held = False
    for i in range(n):
        r = rate[i]
        if np.isnan(r):
            out[i] = np.nan
            continue
        if not held and r > enter:
            held = True
        elif held and r < exit_:
            held = False
        out[i] = 1.0 if held else 0.0
    return out


class FundingCarry(Strategy):
    """Short the perp and hold the same notional of spot while funding pays the shorts.

    Signal: the perp leg's ``funding_known`` (an hourly rate, positive when longs pay
    shorts), optionally smoothed by a causal mean over the last ``lookback_hours`` hours
    of bars (``max(1, round(lookback_hours * 3600 / bar_seconds))`` bars; 1 hour on an
    hourly frame is the raw rate). Flat at the start. When the rate is above
    ``enter_hourly_rate`` the targets become ``-exposure`` on the perp and ``+exposure``
    on spot (equal notional, delta neutral at entry); the position is kept while the rate
    stays inside the band and unwound (both targets 0) when it falls below
    ``exit_hourly_rate``. ``enter > exit`` (validated) is the hysteresis that stops the
    strategy from churning fees on a rate that hovers around one threshold. No opinion
    (NaN) while the smoothing window fills.

    It earns the funding the longs pay the short perp for as long as the rate stays
    positive, and pays it when the rate turns negative before the exit fires. The two
    legs cancel the asset's price move only as far as perp and spot move together:
    the basis between them (and the drift of the hedge ratio, since the kernel does not
    rebalance a held position) is the remaining risk, alongside fees on both legs at
    each entry and exit. With ``exposure <= 0.5`` the two legs together stay within 1x
    of equity.

    The state depends on the path since the start of the frame; a live rolling window
    that starts inside the band starts flat, so give it a history that reaches back to
    the last crossing.
    """

    name = "funding_carry"
    Params = FundingCarryParams
    legs = ("perp", "spot")

    def _window(self, frame: Frame) -> int:
        return self._window_for(frame.bar_seconds)

    def _window_for(self, bar_seconds: float) -> int:
        bar_s = bar_seconds if bar_seconds > 0 else HOUR_S
        return max(1, int(round(self.params.lookback_hours * HOUR_S / bar_s)))

    def warmup_bars(self) -> int:
        return self.params.lookback_hours  # in bars on an hourly frame

    def rate(self, frame: Frame) -> np.ndarray:
        """The hourly funding rate the decision at each bar's close is based on."""
        if len(frame.legs) != 2:
            raise ValueError(f"funding_carry trades two legs (perp, spot), the frame has {len(frame.legs)}")
        perp = frame.leg(0)
        if perp.kind != "perp":
            raise ValueError(f"funding_carry: leg 0 ({perp.key}) must be a perp, not {perp.kind}")
        window = self._window(frame)
        known = np.ascontiguousarray(perp.funding_known, dtype=np.float64)
        if window == 1:
            return known
        return frame.cached(("funding_known_mean", 0, window), lambda: rolling_mean(known, window))

    def signals(self, frame: Frame) -> np.ndarray:
        p = self.params
        held = _hysteresis(self.rate(frame), p.enter_hourly_rate, p.exit_hourly_rate)
        return np.vstack([0.0 - p.exposure * held, p.exposure * held])  # 0.0 - : no -0.0

    def stream(self, legs: Sequence[StreamLeg], bar_seconds: float) -> SignalStream:
        if len(legs) != 2:
            raise ValueError(f"funding_carry trades two legs (perp, spot), the stream has {len(legs)}")
        if legs[0].kind != "perp":
            raise ValueError(f"funding_carry: leg 0 ({legs[0].key}) must be a perp, not {legs[0].kind}")
        return _FundingCarryStream(self.params, legs, bar_seconds, self._window_for(bar_seconds))


class _FundingCarryStream(SignalStream):
    """``signals`` one bar at a time: the (smoothed) known rate through the hysteresis."""

    def __init__(self, params: FundingCarryParams, legs: Sequence[StreamLeg], bar_seconds: float, window: int) -> None:
        super().__init__(legs, bar_seconds)
        self.params = params
        self.mean = StreamingMean(window) if window > 1 else None
        self.held = False

    def _push(self, ts_ns: int, bars: Sequence[LegBar]) -> np.ndarray:
        p = self.params
        r = bars[0].funding_known
        if self.mean is not None:
            r = self.mean.push(r)
        if r != r:  # NaN: the window is filling
            return np.array([np.nan, np.nan])
        if not self.held and r > p.enter_hourly_rate:
            self.held = True
        elif self.held and r < p.exit_hourly_rate:
            self.held = False
        held = 1.0 if self.held else 0.0
        return np.array([0.0 - p.exposure * held, p.exposure * held])
