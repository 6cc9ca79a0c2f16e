"""A strategy's targets as order intents, the way the simulator decides to trade.

The kernel trades a leg when the target at a close differs from the last target it took
(NaN: no decision), whatever the position is; ``TargetIntents`` emits a target order on
exactly those closes, so paper sends the orders the backtest would have made. The venue
sizes the order; the intent carries the strategy's estimate of its size at the close, with
the simulator's caps (the risk limits' order and position notional, leverage), for the
pre-trade checks. The position the estimate starts from is the strategy's view, built from
the fills reported so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cluster.domain import Fill, OrderIntent, Side


class TargetIntents:
    def __init__(
        self,
        strategy: str,
        legs: Sequence[str],
        equity: float,
        *,
        max_order_notional: float | None = None,
        max_position_notional: float | None = None,
        max_leverage: float | None = None,
    ) -> None:
        self.strategy = strategy
        self.legs = tuple(legs)
        self.last = [0.0] * len(self.legs)  # the kernel's last target per leg starts at 0
        self.positions = [0.0] * len(self.legs)
        self.equity = equity
        self.max_order = max_order_notional or math.inf
        self.max_position = max_position_notional or math.inf
        self.max_leverage = max_leverage or math.inf

    def on_fill(self, fill: Fill) -> None:
        if fill.instrument in self.legs:
            self.positions[self.legs.index(fill.instrument)] += fill.signed_qty

    def intents(self, close_ts_ns: int, target: np.ndarray, prices: Sequence[float]) -> list[OrderIntent]:
        """The intents of the decision at the close ``close_ts_ns`` (``prices``: the closes)."""
        out = []
        for leg, t in enumerate(target):
            t = float(t)
            if t != t or t == self.last[leg]:
                continue
            self.last[leg] = t
            price = float(prices[leg])
            held = self.positions[leg]
            want = t * self.equity / price
            cap = _units_within(min(self.max_position, self.max_leverage * self.equity), price)
            want = max(-cap, min(cap, want))
            dq = want - held
            if abs(dq) * price > self.max_order:
                dq = math.copysign(_units_within(self.max_order, price), dq)
            side = Side.BUY if dq > 0 or (dq == 0 and held < 0) else Side.SELL
            out.append(OrderIntent(
                strategy=self.strategy, instrument=self.legs[leg], side=side, size=abs(dq), ts_ns=close_ts_ns,
                target=t, reference_price=price, leg=leg, seq=0, reduce_only=t == 0.0,
            ))  # fmt: skip
        return out


def _units_within(notional: float, price: float) -> float:
    """The most base units whose notional at ``price`` is within ``notional``, exactly
    (``notional / price * price`` can round one ulp above it, which a limit refuses)."""
    if math.isinf(notional):
        return notional
    units = notional / price
    while units * price > notional:
        units = math.nextafter(units, 0.0)
    return units
