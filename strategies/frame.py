"""Market history handed to a strategy: aligned bars per leg, funding, and an indicator cache.

The same object serves a backtest (the whole history), a sweep (shared read-only by every
task through the Ray object store) and paper/live trading (a rolling window that grows as
bars close). Arrays are float64 prices in human units and int64 UTC nanoseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class LegData:
    key: str  # venue:SYMBOL
    kind: str  # "perp" or "spot"
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    funding: np.ndarray  # rate settled at each bar's close (fraction of notional), 0 elsewhere
    funding_known: np.ndarray  # latest hourly funding rate published at or before each close

    def head(self, n: int) -> LegData:
        return replace(self, **{name: getattr(self, name)[:n] for name in SERIES})


# The per-bar series of a leg, in the order ``strategies.stream.LegBar`` takes them
SERIES = ("open", "high", "low", "close", "volume", "funding", "funding_known")


@dataclass
class Frame:
    ts: np.ndarray  # bar open times, int64 ns UTC
    bar_seconds: float
    legs: tuple[LegData, ...]
    notes: tuple[str, ...] = ()  # how the data was assembled (fallbacks, gaps, missing funding)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ts)

    def __getstate__(self) -> dict:  # the cache is per process: never shipped to workers
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def leg(self, index: int = 0) -> LegData:
        return self.legs[index]

    def head(self, n: int) -> Frame:
        """The first ``n`` bars: what a live strategy would have seen at bar ``n - 1``."""
        return Frame(self.ts[:n], self.bar_seconds, tuple(leg.head(n) for leg in self.legs), self.notes)

    def cached(self, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Memoise an indicator for this frame (a sweep computes each EMA span once)."""
        value = self._cache.get(key)
        if value is None:
            value = compute()
            self._cache[key] = value
        return value
