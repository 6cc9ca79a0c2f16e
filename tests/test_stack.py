"""The resolved dependency stack works together in one process: Ray 2.60 and driftpy (with
its exact pins overridden in pyproject.toml) on NumPy 2, plus the rest of the stack."""

from __future__ import annotations

import importlib

import numpy as np
import packaging
import pytest
from packaging.version import Version

STACK = [
    "ray", "ray.serve", "driftpy", "solana", "solders", "xgboost", "numba", "asyncpg",
    "ccxt", "jwt", "pyarrow", "pandas", "prometheus_client",
]


@pytest.mark.parametrize("module", STACK)
def test_module_imports(module):
    assert importlib.import_module(module).__name__ == module


def test_ray_is_the_pinned_version():
    import ray

    assert ray.__version__ == "2.60.0"


def test_numpy_is_major_version_2():
    assert Version(np.__version__).major == 2


def test_packaging_override_is_at_least_24_2():
    # driftpy pins packaging==23.1; Ray 2.60 needs >=24.2 (pyproject override).
    assert Version(packaging.__version__) >= Version("24.2")


def sol_perp_market_index() -> int:
    from driftpy.constants.perp_markets import mainnet_perp_market_configs

    (market,) = [m for m in mainnet_perp_market_configs if m.symbol == "SOL-PERP"]
    return market.market_index


def test_driftpy_builds_sol_perp_limit_order_params():
    from driftpy.constants.numeric_constants import BASE_PRECISION, PRICE_PRECISION
    from driftpy.types import MarketType, OrderParams, OrderType, PositionDirection, is_variant

    assert (BASE_PRECISION, PRICE_PRECISION) == (10**9, 10**6)
    index = sol_perp_market_index()
    assert index == 0
    params = OrderParams(
        OrderType.Limit(),
        round(1.5 * BASE_PRECISION),  # 1.5 SOL
        index,
        PositionDirection.Long(),
        MarketType.Perp(),
        price=round(172.31 * PRICE_PRECISION),
    )
    assert params.base_asset_amount == 1_500_000_000
    assert params.price == 172_310_000
    assert params.market_index == 0
    assert is_variant(params.direction, "Long")
    assert not is_variant(params.direction, "Short")
    assert is_variant(params.order_type, "Limit")
    assert is_variant(params.market_type, "Perp")
    assert params.reduce_only is False


def test_driftpy_order_params_needs_market_type():
    from driftpy.types import OrderParams, OrderType, PositionDirection

    with pytest.raises(TypeError):
        OrderParams(OrderType.Limit(), 10**9, 0, PositionDirection.Long())  # type: ignore[call-arg]


def test_driftpy_standardize_price_rounds_long_down_short_up():
    from driftpy.math.orders import standardize_price
    from driftpy.types import PositionDirection

    tick = 100  # 0.0001 in PRICE_PRECISION
    price = 172_310_150
    assert standardize_price(price, tick, PositionDirection.Long()) == 172_310_100
    assert standardize_price(price, tick, PositionDirection.Short()) == 172_310_200
    assert standardize_price(172_310_100, tick, PositionDirection.Short()) == 172_310_100


def test_driftpy_standardize_base_asset_amount_rounds_down_to_step():
    from driftpy.math.orders import standardize_base_asset_amount

    step = 10_000_000  # 0.01 SOL in BASE_PRECISION
    assert standardize_base_asset_amount(1_234_567_890, step) == 1_230_000_000
    assert standardize_base_asset_amount(1_230_000_000, step) == 1_230_000_000


def test_numba_jits_over_numpy_2_arrays():
    from numba import njit

    @njit(cache=False)
    def weighted_sum(prices, sizes):
        total = 0.0
        for i in range(prices.shape[0]):
            total += prices[i] * sizes[i]
        return total

    prices = np.array([101.0, 102.0, 104.0])
    sizes = np.array([1.0, 2.0, 5.0])
    assert weighted_sum(prices, sizes) == pytest.approx(825.0)
    assert weighted_sum.signatures  # compiled, not falling back to Python


def test_xgboost_trains_a_tiny_classifier():
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.1 * rng.normal(size=200) > 0).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "verbosity": 0},
        xgb.DMatrix(x, label=y),
        num_boost_round=10,
    )
    pred = booster.predict(xgb.DMatrix(x))
    assert pred.shape == (200,)
    assert ((pred > 0.5) == (y > 0.5)).mean() > 0.9


def test_pandas_and_pyarrow_round_trip():
    import pandas as pd
    import pyarrow as pa

    df = pd.DataFrame({"ts_ns": np.array([1, 2], dtype=np.int64), "price": [172.31, 172.32]})
    back = pa.Table.from_pandas(df, preserve_index=False).to_pandas()
    pd.testing.assert_frame_equal(back, df)


def test_solders_pubkey_and_jwt_round_trip():
    import jwt
    from solders.pubkey import Pubkey

    mint = "So11111111111111111111111111111111111111112"
    assert str(Pubkey.from_string(mint)) == mint
    token = jwt.encode({"sub": "client"}, "k" * 32, algorithm="HS256")
    assert jwt.decode(token, "k" * 32, algorithms=["HS256"])["sub"] == "client"


def test_prometheus_counter_in_private_registry():
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    Counter("botmain_test_events", "events", registry=registry).inc(3)
    assert b"botmain_test_events_total 3.0" in generate_latest(registry)


def test_ccxt_knows_configured_exchanges_without_network():
    import ccxt

    for exchange_id in ("binance", "binanceusdm", "hyperliquid"):
        assert exchange_id in ccxt.exchanges
