"""A strategy instance's trading side: its stream decides on each closed bar, the
simulator's sizing turns the decision into target intents, and its view of its positions
is built from the fills the execution side journaled.

The same ``Strategy`` class as the backtest, stepped incrementally (``Strategy.stream``:
no recomputation of the history per bar for the built-ins). ``decide`` makes the bar's
``DecidedBar`` for the monitor; ``learn`` takes a ``BarOutcome`` back.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.bar_flow import BarOutcome, DecidedBar
from actors.intents import TargetIntents
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.stream import LegBar, StreamLeg


class StrategyTrader:
    def __init__(
        self, name: str, strategy: Strategy, legs: Sequence[StreamLeg], bar_seconds: float, settings: SimSettings
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.legs = tuple(leg.key for leg in legs)
        self.bar_ns = int(bar_seconds * 1e9)
        self.stream = strategy.stream(tuple(legs), bar_seconds)
        r = settings.risk
        self.intents = TargetIntents(name, self.legs, settings.initial_cash, max_order_notional=r.max_order_notional,
                                     max_position_notional=r.max_position_notional, max_leverage=r.max_leverage)  # fmt: skip
        self.decided = 0

    def decide(self, ts_ns: int, bars: Sequence[LegBar]) -> DecidedBar:
        """The decision at the close of the bar of every leg opening at ``ts_ns``."""
        if len(bars) != len(self.legs):
            raise ValueError(f"{self.name}: {len(bars)} bar(s) for {len(self.legs)} leg(s) ({', '.join(self.legs)})")
        close_ns = ts_ns + self.bar_ns
        target = self.stream.push(ts_ns, bars)
        intents = self.intents.intents(close_ns, target, [b.close for b in bars])
        self.decided += 1
        return DecidedBar(self.name, ts_ns, close_ns, self.legs, tuple(bars), tuple(intents))

    def learn(self, outcome: BarOutcome) -> None:
        for fill in outcome.fills:
            self.intents.on_fill(fill)
        if outcome.equity is not None:
            self.intents.equity = outcome.equity
