"""All-in cost of a round trip on one candidate, in bps of the entry notional.

    cost = 2 x (fee + price concession)            opening now and closing after the horizon
         + funding paid while holding (perps)      side x sum of the settled rates, x 1e4
         + change of the perp's premium (perps)    -side x (premium at exit - premium at entry)

Fees and the price concession are the simulator's (``sim.kernel._impact`` with the
listing's ``simulation.yaml`` settings: fixed ``slippage_bps`` plus the amm / sqrt impact),
so a venue costs the same here as in a backtest. The spot leg's price move and the perp's
index move are the same exposure and cancel out of the comparison; what a perp adds is its
funding and its premium over the index.

Simplifications (also in docs/venue_selector.md): the exit pays the same concession as the
entry (the state at entry); a spot sell is the sale of inventory held (no borrow cost);
without recorded volume the sqrt model charges only the fixed slippage (as the simulator does).
"""

from __future__ import annotations

import numpy as np

from serve.selector.candidates import Candidate
from sim import kernel as k
from sim.settings import SimSettings

_NO_BOOK = np.zeros((1, 0, 2, 0))


def _leg_params(candidate: Candidate) -> np.ndarray:
    return SimSettings(legs=(candidate.costs,)).leg_params()


class CostModel:
    """Execution cost per candidate, with the kernel's parameter arrays built once."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self._lp = {c.key: _leg_params(c) for c in candidates}

    def impact_bps(self, candidate: Candidate, side: int, qty: float, price: float, sigma: float = 0.0, volume: float = 0.0) -> float:
        """One-way price concession (fixed slippage + size impact) for ``qty`` base units, bps.
        ``sigma``: per-hour return volatility (fraction); ``volume``: mean hourly volume (base)."""
        lp = self._lp[candidate.key]
        frac = k._impact(lp, 0, float(side), float(qty), float(price), 0, np.array([[sigma]]), np.array([[volume]]), _NO_BOOK, _NO_BOOK)
        return float(frac) * 1e4

    def execution_bps(self, candidate: Candidate, side: int, qty: float, price: float, sigma: float = 0.0, volume: float = 0.0) -> float:
        """Fees and concession, opening and closing."""
        return 2.0 * (candidate.fee_bps + self.impact_bps(candidate, side, qty, price, sigma, volume))


def funding_bps(side: int, settled_rates: np.ndarray) -> float:
    """Funding a position pays over its holding period: ``side`` +1 long, -1 short; rates are
    fractions of notional per settlement, positive when longs pay."""
    return float(side * np.sum(settled_rates) * 1e4)


def basis_bps(side: int, premium_entry_bps: float, premium_exit_bps: float) -> float:
    """What the perp's premium over its index costs: a long loses when the premium shrinks."""
    return float(-side * (premium_exit_bps - premium_entry_bps))
