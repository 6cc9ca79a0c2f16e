"""The compiled forest predicts exactly what xgboost predicts, or refuses the model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xgboost as xgb

from serve.selector.features import FEATURES
from serve.selector.forest import TOLERANCE, Uncompilable, compile_forest, probe_rows
from serve.selector.model import SelectorModel


def _data(n: int = 4000, seed: int = 0, missing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))) * rng.choice([0.01, 1, 100, 1e4], size=len(FEATURES))
    y = 3 * x[:, 0] / (1 + abs(x[:, 0])) + np.sin(x[:, 3]) * 10 + np.sign(x[:, 9]) * x[:, 2] ** 2 / 1e4 + rng.normal(size=n)
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
    return x, y


def _train(params: dict, rounds: int, x: np.ndarray, y: np.ndarray) -> xgb.Booster:
    booster = xgb.train({"nthread": 1, "seed": 1, **params}, xgb.DMatrix(x, label=y), num_boost_round=rounds)
    booster.set_param({"nthread": 1})
    return booster


@pytest.mark.parametrize(
    "params, rounds",
    [
        ({"objective": "reg:squarederror", "max_depth": 6, "eta": 0.05, "subsample": 0.8}, 300),  # the selector's shape
        ({"objective": "reg:squarederror", "max_depth": 2, "eta": 0.3}, 20),
        ({"objective": "reg:squarederror", "grow_policy": "lossguide", "max_leaves": 9, "max_depth": 0, "eta": 0.1}, 40),
        ({"objective": "reg:squarederror", "max_depth": 1, "base_score": -123.5}, 5),
    ],
    ids=["depth6x300", "depth2", "lossguide-unbalanced", "stumps-base-score"],
)
def test_compiled_predictions_equal_xgboosts(params: dict, rounds: int):
    x, y = _data(missing=0.02)  # trained with gaps: nodes get default directions
    booster = _train(params, rounds, x, y)
    forest = compile_forest(booster)
    fresh, _ = _data(n=3000, seed=5)
    for rows in (fresh, probe_rows(forest, seed=3), fresh[:1], fresh[:5]):
        expected = booster.inplace_predict(rows)
        np.testing.assert_allclose(forest.predict(rows), expected, rtol=0, atol=TOLERANCE)
    assert forest.predict(np.empty((0, len(FEATURES)))).shape == (0,)


def test_the_probe_rows_catch_a_split_that_goes_the_wrong_way():
    x, y = _data()
    booster = _train({"objective": "reg:squarederror", "max_depth": 4}, 30, x, y)
    forest = compile_forest(booster)
    # move the root split of the first tree to just above its threshold: rows equal to the
    # threshold now go left, as if the comparison were ">" instead of ">="
    thresholds = forest.thresholds.copy()
    thresholds[0, 0] = np.nextafter(thresholds[0, 0], np.float32(np.inf))
    wrong = dataclasses.replace(forest, thresholds=thresholds)
    rows = probe_rows(forest)
    assert np.max(np.abs(wrong.predict(rows) - booster.inplace_predict(rows))) > TOLERANCE


def test_models_it_cannot_evaluate_exactly_are_refused_by_name():
    x, y = _data()
    logistic = _train({"objective": "reg:logistic", "max_depth": 3}, 5, x, (y > 0).astype(float))
    with pytest.raises(Uncompilable, match="reg:logistic"):
        compile_forest(logistic)
    linear = _train({"booster": "gblinear"}, 5, x, y)
    with pytest.raises(Uncompilable, match="objective|gblinear"):
        compile_forest(linear)
    deep = _train({"objective": "reg:squarederror", "max_depth": 16, "min_child_weight": 0, "lambda": 0}, 2, x, y)
    with pytest.raises(Uncompilable, match="depth"):
        compile_forest(deep)


def test_the_selector_model_compiles_and_falls_back_to_xgboost():
    x, y = _data()
    raw = bytes(_train({"objective": "reg:squarederror", "max_depth": 6}, 50, x, y).save_raw("ubj"))
    model = SelectorModel.from_bytes("v1", raw, FEATURES)
    assert model.forest is not None and model.uncompiled_reason is None
    rows = x[:7].copy()
    np.testing.assert_allclose(model.predict(rows), model.booster.inplace_predict(rows), rtol=0, atol=TOLERANCE)
    # a missing value takes xgboost's default directions, so xgboost answers
    rows[2, 4] = np.nan
    np.testing.assert_array_equal(model.predict(rows), model.booster.inplace_predict(rows))

    raw = bytes(_train({"objective": "reg:logistic", "max_depth": 3}, 5, x, (y > 0).astype(float)).save_raw("ubj"))
    fallback = SelectorModel.from_bytes("v2", raw, FEATURES)
    assert fallback.forest is None and "reg:logistic" in fallback.uncompiled_reason
    np.testing.assert_array_equal(fallback.predict(x[:3]), fallback.booster.inplace_predict(x[:3]))
