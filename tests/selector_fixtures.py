"""A small trained venue-selector model and decision payloads, for the Serve tests and
bench/serve.py, without the training job: random market states per candidate, the model's
feature rows (``features.model_row``), and an xgboost regressor of the label the training
job approximates (execution + funding carried over the horizon, plus noise)."""

from __future__ import annotations

import numpy as np

from cluster.config import BotmainConfig
from serve import registry
from serve.selector.candidates import Candidate, candidates
from serve.selector.costs import CostModel
from serve.selector.features import FEATURES, VenueState, model_row

MODEL_NAME = "venue_selector"
ARTIFACT_FORMAT = "xgboost-ubj"
INSTRUMENTS = ("SOL-PERP", "BTC-PERP")
PRICES = {"SOL": 150.0, "BTC": 60_000.0}


def random_state(rng: np.random.Generator, candidate: Candidate) -> VenueState:
    price = PRICES.get(candidate.base, 100.0) * float(np.exp(rng.normal(0, 0.002)))
    funding = float(rng.normal(0, 0.6)) if candidate.is_perp else 0.0
    return VenueState(
        price=price,
        funding_bps_h=funding,
        funding_mean_24h_bps_h=funding * 0.7 + float(rng.normal(0, 0.2)) if candidate.is_perp else 0.0,
        premium_bps=float(rng.normal(0, 4)) if candidate.is_perp else 0.0,
        volatility_bps=float(rng.uniform(10, 90)),
        momentum_short_bps=float(rng.normal(0, 40)),
        momentum_long_bps=float(rng.normal(0, 80)),
        volume=float(rng.lognormal(8, 1)) if rng.random() < 0.5 else 0.0,
        staleness_s=float(rng.uniform(0, 20)),
    )


def random_states(config: BotmainConfig, instrument: str, rng: np.random.Generator) -> dict[str, VenueState]:
    return {c.key: random_state(rng, c) for c in candidates(config, instrument)}


def decide_payload(config: BotmainConfig, instrument: str = "SOL-PERP", side: str = "buy", size: float = 10.0,
                   horizon_h: float = 24.0, seed: int = 0) -> dict:
    """A ``POST /v1/decide`` body carrying its own market state for every candidate."""
    states = random_states(config, instrument, np.random.default_rng(seed))
    return {"instrument": instrument, "side": side, "size": size, "horizon_h": horizon_h,
            "features": {k: v.model_dump() for k, v in states.items()}}


def training_set(config: BotmainConfig, n_requests: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    ex, carry = FEATURES.index("execution_bps"), FEATURES.index("carry_estimate_bps")
    for instrument in INSTRUMENTS:
        cands = candidates(config, instrument)
        cost_model = CostModel(cands)
        for _ in range(n_requests // len(INSTRUMENTS)):
            side = 1 if rng.random() < 0.5 else -1
            size = float(rng.lognormal(1.5, 1.2)) * (1.0 if instrument == "SOL-PERP" else 0.01)
            horizon = float(rng.choice([1, 4, 8, 24, 72]))
            for c in cands:
                row = model_row(cost_model, c, side, size, horizon, random_state(rng, c))
                rows.append(row)
                labels.append(row[ex] + row[carry] + rng.normal(0, 1.0))
    return np.vstack(rows), np.asarray(labels)


def train_model(config: BotmainConfig, seed: int = 0, trees: int = 50, max_depth: int = 4) -> bytes:
    """An xgboost regressor of the all-in cost, as UBJ bytes (the registry's artifact format)."""
    import xgboost as xgb

    x, y = training_set(config, seed=seed)
    booster = xgb.train({"max_depth": max_depth, "eta": 0.2, "nthread": 1, "seed": seed},
                        xgb.DMatrix(x, label=y, feature_names=FEATURES), num_boost_round=trees)
    return bytes(booster.save_raw("ubj"))


async def register_model(conn, version: str, raw: bytes, activate: bool = False) -> registry.ModelEntry:
    return await registry.register(conn, MODEL_NAME, version, {"trees": 50, "source": "tests.selector_fixtures"},
                                   FEATURES, raw, ARTIFACT_FORMAT, activate=activate)
