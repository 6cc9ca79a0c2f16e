"""The volatility-scaled trailing stop, as the simulator runs it (docs/simulator.md
section 7), one closed bar at a time.

``sigma`` is the standard deviation (ddof=1) of the last ``window`` close-to-close returns
ending at the previous bar; at entry the stop is ``fill * (1 - k sigma)`` for a long
(``1 + k sigma`` short), and after each close ``close * (1 - k sigma)`` if that is tighter:
it only ever tightens. No sigma yet (the first ``window + 1`` bars): no stop until a close
with one. The monitor checks marks against it between closes, and each closed bar's
low/high before moving it.
"""

from __future__ import annotations

import math
from collections import deque


class ReturnVolatility:
    """``strategies.indicators.rolling_return_std`` one close at a time: the same running
    sums, added and dropped in the same order, so it gives the simulator's value."""

    __slots__ = ("window", "returns", "s", "s2", "last_close", "sigma")

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"a volatility window needs at least 2 returns, got {window}")
        self.window = window
        self.returns: deque[float] = deque()
        self.s = 0.0
        self.s2 = 0.0
        self.last_close: float | None = None
        self.sigma = math.nan  # over the returns up to the last close

    def update(self, close: float) -> None:
        if self.last_close is not None:
            r = close / self.last_close - 1.0
            self.s += r
            self.s2 += r * r
            self.returns.append(r)
            if len(self.returns) > self.window:
                old = self.returns.popleft()
                self.s -= old
                self.s2 -= old * old
            if len(self.returns) >= self.window:
                var = (self.s2 - self.s * self.s / self.window) / (self.window - 1)
                self.sigma = math.sqrt(var) if var > 0.0 else 0.0
        self.last_close = close


class TrailingStop:
    """The stop of one position: ``side`` +1 long, -1 short; ``level`` NaN until a sigma."""

    __slots__ = ("side", "level")

    def __init__(self, side: int, entry: float, sigma: float, multiple: float) -> None:
        self.side = side
        self.level = entry * (1.0 - side * multiple * sigma) if sigma > 0.0 else math.nan

    def tighten(self, close: float, sigma: float, multiple: float) -> bool:
        """After a close; True when the level moved."""
        if not sigma > 0.0:
            return False
        level = close * (1.0 - self.side * multiple * sigma)
        if math.isnan(self.level) or (level > self.level if self.side > 0 else level < self.level):
            self.level = level
            return True
        return False

    def reached(self, low: float, high: float) -> bool:
        """Whether prices from ``low`` to ``high`` touched it (a mark: low = high)."""
        if math.isnan(self.level):
            return False
        return low <= self.level if self.side > 0 else high >= self.level
