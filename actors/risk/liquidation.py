"""Liquidation and auto-close prices, by the simulator's formula (``sim.kernel.
_liquidation_price``, docs/simulator.md section 6) on one venue's margin account.

The price of one perp position at which its venue equity meets ``scale`` x the maintenance
margin, every other position on the venue held at its mark: ``scale`` 1 is the liquidation
price, ``1 + liquidation_buffer`` the auto-close price, always reached first.
"""

from __future__ import annotations

import math

from actors.risk.account import Holding, StrategyAccount


def liquidation_price(q: float, mmr: float, other: float, mm_other: float) -> float:
    """``other``: the venue equity without this position's value; ``mm_other``: the other
    perps' maintenance margin; ``mmr`` this one's ratio (both already scaled). Solves
    ``other + q p = mm_other + |q| p mmr``; NaN when no positive price does."""
    if q == 0.0:
        return math.nan
    denom = q - abs(q) * mmr
    if denom == 0.0:
        return math.nan
    p = (mm_other - other) / denom
    return p if p > 0.0 else math.nan


def position_liquidation_price(account: StrategyAccount, holding: Holding, scale: float = 1.0,
                               size: float | None = None, price: float | None = None) -> float:
    """For ``holding`` as it is, or as an order at ``price`` would leave it (``size``; the
    order's fee left out). NaN for spot and when none exists."""
    spec = holding.spec
    if not spec.perp:
        return math.nan
    mark = holding.mark()
    q0 = holding.position.size
    q = q0 if size is None else size
    p = mark if price is None else price
    equity = account.venue_equity(spec.venue) + q0 * (p - mark)
    mm_other = 0.0
    for h in account.holdings.values():
        if h is not holding and h.spec.venue == spec.venue:
            mm_other += h.maintenance()
    return liquidation_price(q, spec.maintenance_ratio * scale, equity - q * p, mm_other * scale)
