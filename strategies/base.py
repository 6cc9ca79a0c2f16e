"""The strategy contract: one class runs unchanged in backtests, sweeps, paper and live.

A strategy is a ``Strategy`` subclass with a frozen pydantic ``Params`` model beside it.
Parameters annotated with ``IntRange``/``FloatRange``/``Choice`` declare the sweep's
search space. Bar strategies implement ``signals`` vectorised over a ``Frame``; the live
path streams the same decisions one closed bar at a time (``stream``). Event strategies also get
quote, fill, funding and signal hooks. Nothing here knows which mode is running.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from cluster.domain import Fill, FundingRate, OrderIntent, Quote
from strategies.frame import Frame
from strategies.stream import SignalStream, StreamLeg, WindowStream


class Search:
    """A sweepable dimension of one parameter."""

    def grid(self) -> list[Any]:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class IntRange(Search):
    low: int
    high: int  # inclusive
    step: int = 1

    def grid(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.choice(self.grid()))


@dataclass(frozen=True)
class FloatRange(Search):
    low: float
    high: float  # inclusive
    step: float | None = None  # None: continuous for random search, 10 points for a grid

    def grid(self) -> list[float]:
        if self.step is None:
            return [float(v) for v in np.linspace(self.low, self.high, 10)]
        n = int(np.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + k * self.step, 12) for k in range(n)]

    def sample(self, rng: np.random.Generator) -> float:
        if self.step is None:
            return float(rng.uniform(self.low, self.high))
        return float(rng.choice(self.grid()))


@dataclass(frozen=True)
class Choice(Search):
    options: tuple[Any, ...]

    def grid(self) -> list[Any]:
        return list(self.options)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]


class Params(BaseModel):
    """Base of every strategy's parameters: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def search_space(cls) -> dict[str, Search]:
        space = {}
        for name, info in cls.model_fields.items():
            for meta in info.metadata:
                if isinstance(meta, Search):
                    space[name] = meta
        return space


class Strategy(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[Params]]
    legs: ClassVar[tuple[str, ...]] = ("market",)  # roles of the instruments, in order

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def signals(self, frame: Frame) -> np.ndarray:
        """Target exposure per leg and bar, shape (legs, bars): the fraction of equity to
        hold after each bar closes (+ long, - short), NaN for no opinion. Bar ``i`` may use
        only data up to and including bar ``i``; the lookahead tests hold every strategy
        to that."""

    def warmup_bars(self) -> int:
        """Bars of history ``signals`` needs before its output is meaningful."""
        return 0

    def on_bar(self, window: Frame) -> np.ndarray:
        """The target after the newest bar of a window (its ``signals``' last column)."""
        return self.signals(window)[:, -1]

    def stream(self, legs: Sequence[StreamLeg], bar_seconds: float) -> SignalStream:
        """Paper and live trading: targets one closed bar at a time, equal to ``signals``'
        (``strategies.stream``). This default recomputes ``signals`` over the history on
        every bar; a strategy overrides it with an incremental stream."""
        return WindowStream(self, legs, bar_seconds)

    # Event hooks for event-driven strategies; bar strategies ignore them.
    def on_quote(self, quote: Quote) -> list[OrderIntent]:
        return []

    def on_fill(self, fill: Fill) -> list[OrderIntent]:
        return []

    def on_funding(self, funding: FundingRate) -> list[OrderIntent]:
        return []

    def on_signal(self, name: str, value: float, ts_ns: int) -> list[OrderIntent]:
        return []
