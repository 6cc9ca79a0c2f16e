"""The whitepaper's sample rule (``choose_execution_venue``, bot-whitepaper.txt 4.1):

    if drift_funding_rate < 0 and spot_price_jupiter < spot_price_raydium: Jupiter
    elif drift_funding_rate > 0: Drift
    else: Raydium

"Jupiter's price below Raydium's" is read as "Jupiter's effective price for this trade is
better" (lower for a buy, higher for a sell), with each venue's concession for the size.
Where a named venue has no listing for the asset, its place is taken by the cheapest
candidate of the same kind by execution cost.
"""

from __future__ import annotations

import numpy as np

from serve.selector.candidates import Candidate
from serve.selector.features import FEATURES, VenueState


def choose_execution_venue(
    candidates: list[Candidate], side: int, drift_funding_bps_h: float, effective_price: dict[str, float], execution_bps: dict[str, float]
) -> Candidate:
    by_venue = {c.venue: c for c in candidates}

    def named(venue: str, kind: str) -> Candidate:
        if venue in by_venue and by_venue[venue].kind == kind:
            return by_venue[venue]
        same_kind = [c for c in candidates if c.kind == kind] or candidates
        return min(same_kind, key=lambda c: execution_bps[c.key])

    jupiter, raydium, drift = named("jupiter", "spot"), named("raydium", "spot"), named("drift", "perp")
    pj, pr = effective_price[jupiter.key], effective_price[raydium.key]
    jupiter_better = pj < pr if side > 0 else pj > pr
    if drift_funding_bps_h < 0 and jupiter_better:
        return jupiter
    if drift_funding_bps_h > 0:
        return drift
    return raydium


def rule_pick(candidates: list[Candidate], side: int, states: dict[str, VenueState], rows: np.ndarray) -> Candidate:
    """The rule's pick from the candidates' model rows (``features.model_row``, same order):
    effective price = price x (1 +/- (concession + fee)), Drift's latest funding."""
    ex, im = FEATURES.index("execution_bps"), FEATURES.index("impact_bps")
    execution = {c.key: float(r[ex]) for c, r in zip(candidates, rows)}
    effective = {c.key: states[c.key].price * (1 + side * (float(r[im]) + c.fee_bps) / 1e4) for c, r in zip(candidates, rows)}
    drift = next((c for c in candidates if c.venue == "drift" and c.is_perp), None)
    funding = states[drift.key].funding_bps_h if drift is not None else 0.0
    return choose_execution_venue(candidates, side, funding, effective, execution)
