"""What the model sees for one candidate venue of one request.

A ``VenueState`` is the market on one venue at decision time (from the MDS live, from the
lake's history, or carried in the request); ``model_row`` turns it, the request and the
candidate into the model's feature vector. Direction-dependent features are multiplied by
the side (+1 buy, -1 sell), so "funding a long pays" and "funding a short receives" look the
same to the model, and one model serves both sides.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve.selector.candidates import Candidate
from serve.selector.costs import CostModel

FEATURES = [
    "is_perp",
    "side",
    "log10_notional_usd",
    "horizon_h",
    "fee_bps",
    "impact_bps",  # one-way concession for this size (cost model)
    "execution_bps",  # fees and concession, both ways
    "funding_bps_h",  # latest settled funding, per hour, x side (perps; 0 for spot)
    "funding_mean_24h_bps_h",  # mean over the last 24 h, per hour, x side
    "carry_estimate_bps",  # funding_mean_24h x horizon: what persistence would predict
    "premium_bps",  # perp mark over its index, x side
    "momentum_short_bps",  # price over its 10 h EMA - 1, x side
    "momentum_long_bps",  # price over its 50 h EMA - 1, x side
    "volatility_bps",  # std of hourly log returns over the last 24 h
    "staleness_s",  # age of the venue's newest data
]


class VenueState(BaseModel):
    """The market on one venue at decision time. Units: bps of price (or of notional per
    hour for funding), seconds, base units. NaN and infinities are refused by name."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    price: float = Field(gt=0, description="mid or index price, quote per base unit")
    funding_bps_h: float = Field(0.0, ge=-1e4, le=1e4, description="latest settled funding rate per hour, bps (perps)")
    funding_mean_24h_bps_h: float = Field(0.0, ge=-1e4, le=1e4, description="mean funding per hour over 24 h, bps")
    premium_bps: float = Field(0.0, ge=-1e4, le=1e4, description="perp mark over its index, bps")
    volatility_bps: float = Field(0.0, ge=0, le=1e4, description="std of hourly log returns over 24 h, bps")
    momentum_short_bps: float = Field(0.0, ge=-1e5, le=1e5, description="price / EMA(10 h) - 1, bps")
    momentum_long_bps: float = Field(0.0, ge=-1e5, le=1e5, description="price / EMA(50 h) - 1, bps")
    volume: float = Field(0.0, ge=0, description="mean hourly volume in base units (0: not recorded)")
    staleness_s: float = Field(0.0, ge=0, description="age of the venue's newest data")


def model_row(cost_model: CostModel, candidate: Candidate, side: int, size: float, horizon_h: float, state: VenueState) -> np.ndarray:
    perp = candidate.is_perp
    sigma = state.volatility_bps / 1e4
    impact = cost_model.impact_bps(candidate, side, size, state.price, sigma, state.volume)
    execution = 2.0 * (candidate.fee_bps + impact)
    funding_now = side * state.funding_bps_h if perp else 0.0
    funding_mean = side * state.funding_mean_24h_bps_h if perp else 0.0
    return np.array(
        [
            1.0 if perp else 0.0,
            float(side),
            math.log10(max(size * state.price, 1e-9)),
            horizon_h,
            candidate.fee_bps,
            impact,
            execution,
            funding_now,
            funding_mean,
            funding_mean * horizon_h,
            side * state.premium_bps if perp else 0.0,
            side * state.momentum_short_bps,
            side * state.momentum_long_bps,
            state.volatility_bps,
            state.staleness_s,
        ]
    )


def estimated_cost_bps(row: np.ndarray) -> float:
    """The transparent estimate used without a model: execution plus funding persisting."""
    return float(row[FEATURES.index("execution_bps")] + row[FEATURES.index("carry_estimate_bps")])
