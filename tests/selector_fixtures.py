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


# --- a lake where a second perp venue and its spot market stop halfway -------------------


def write_freqtrade_files(datadir, funding_csv, until: str, base: str = "SOL", glitch: dict[str, float] | None = None) -> dict[str, object]:
    """freqtrade files as a user downloads them for Binance: USD-M funding (8 h), futures
    candles (1 h) and spot candles (1 h) of ``base``, following Drift's recorded oracle (a
    few bps of premium) from the start of ``funding_csv`` until ``until``; ``glitch``: hour ->
    factor on that futures candle. Returns the paths."""
    from pathlib import Path

    import pandas as pd
    import pyarrow as pa
    import pyarrow.feather as feather

    drift = pd.read_csv(funding_csv)
    oracle = pd.Series(drift["oraclePriceTwap"].to_numpy(), index=pd.to_datetime(drift["ts"], unit="s", utc=True).dt.floor("h"))
    oracle = oracle[~oracle.index.duplicated(keep="last")]
    oracle = oracle[oracle.index < pd.Timestamp(until, tz="UTC")]
    rng = np.random.default_rng(7)

    def candles(price: pd.Series, premium_bps: float) -> pa.Table:
        close = price.to_numpy() * (1 + premium_bps / 1e4) * np.exp(rng.normal(0, 2e-4, len(price)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        return pa.table({"date": pa.array(price.index.tz_convert(None).to_numpy(), pa.timestamp("ms", tz="UTC")),
                         "open": open_, "high": np.maximum(open_, close) * 1.001, "low": np.minimum(open_, close) * 0.999,
                         "close": close, "volume": rng.lognormal(8, 0.5, len(price))})

    futures_dir = Path(datadir) / "binance" / "futures"
    futures_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "funding": futures_dir / f"{base}_USDT_USDT-8h-funding_rate.feather",
        "futures": futures_dir / f"{base}_USDT_USDT-1h-futures.feather",
        "spot": Path(datadir) / "binance" / f"{base}_USDT-1h.feather",
    }
    settlements = oracle[oracle.index.hour % 8 == 0]
    rates = rng.normal(0.0001, 0.00005, len(settlements))
    feather.write_feather(pa.table({"date": pa.array(settlements.index.tz_convert(None).to_numpy(), pa.timestamp("ms", tz="UTC")),
                                    "open": rates, "high": rates, "low": rates, "close": rates, "volume": np.zeros(len(rates))}),
                          paths["funding"])
    futures = oracle.copy()
    for hour, factor in (glitch or {}).items():
        futures[pd.Timestamp(hour, tz="UTC")] *= factor
    feather.write_feather(candles(futures, 3.0), paths["futures"])
    feather.write_feather(candles(oracle, 0.0), paths["spot"])
    return paths


def ingest_into_lake(config: BotmainConfig, paths) -> None:
    """The files into ``config``'s lake with the project's own readers and lake writer."""
    from cluster.lake import Lake
    from jobs.ingest.formats import read_file
    from jobs.ingest.naming import InstrumentResolver

    lake, resolver = Lake(config.lake_root), InstrumentResolver(config)
    for path in paths:
        for series in read_file(path, resolver, None).series:
            lake.write(series.kind, series.instrument.venue, series.instrument.symbol, series.table)


ENDED_AT = "2025-10-07"  # about halfway through the sample's Drift funding (2025-04-14 -> 2026-04-01)


def ended_venue_config(session_config_dir, base, glitch: dict[str, float] | None = None):
    """A copy of the session configuration whose lake (under ``base``) holds the sample's Drift
    SOL-PERP funding and Binance USD-M SOL-PERP funding and futures candles and Binance
    SOL-USDT spot candles that end at ``ENDED_AT``: (its directory, the loaded configuration)."""
    import shutil
    from pathlib import Path

    import yaml

    from cluster.config import load_config
    from tests.conftest import SAMPLE_FUNDING

    base = Path(base)
    directory = base / "configs"
    shutil.copytree(session_config_dir, directory)
    store = yaml.safe_load((directory / "store.yaml").read_text())
    store["lake"] = {**store.get("lake", {}), "root": str(base / "lake")}
    (directory / "store.yaml").write_text(yaml.safe_dump(store))
    config = load_config(directory)
    paths = write_freqtrade_files(base / "freqtrade", SAMPLE_FUNDING, ENDED_AT, glitch=glitch)
    ingest_into_lake(config, [*paths.values(), SAMPLE_FUNDING])
    return directory, config
