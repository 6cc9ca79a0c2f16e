"""Walk-forward (time-ordered) validation of the selector model, and the report's figures.

The usable hours are cut into ``folds + 1`` consecutive blocks. Fold k trains on every hour
before block k (less an embargo of the longest horizon, so that no training label's holding
period reaches into the test block) and tests on block k: the model is always judged on a
period after everything it learnt from. Folds run as Ray tasks across the cluster.

Per held-out request, the realised all-in cost (bps) of:
  model         the candidate with the lowest predicted cost
  rule          the whitepaper's choose_execution_venue
  always perp   the perp that is cheapest to execute for this size (fees + concession)
  always spot   the spot market that is cheapest to execute for this size
  hindsight     the cheapest candidate after the fact (the floor; no strategy can know it)
and accuracy: how often the model's pick is the hindsight pick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from jobs.train_selector.dataset import Dataset
from serve.selector.features import FEATURES

STRATEGIES = ("model", "rule", "always_perp", "always_spot", "hindsight")


@dataclass(frozen=True)
class TrainSettings:
    folds: int = 4
    n_estimators: int = 300
    max_depth: int = 6
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.9
    min_child_weight: float = 5.0
    seed: int = 0

    def params(self) -> dict:
        return {
            "objective": "reg:squarederror",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "seed": self.seed,
            "nthread": 1,
        }


def fit(X: np.ndarray, y: np.ndarray, settings: TrainSettings):
    import xgboost as xgb

    return xgb.train(settings.params(), xgb.DMatrix(X, label=y, feature_names=FEATURES), num_boost_round=settings.n_estimators)


def fit_predict(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, settings: TrainSettings) -> np.ndarray:
    return fit(X_train, y_train, settings).inplace_predict(X_test)


def fold_plan(dataset: Dataset, folds: int, embargo_h: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train row mask, test row mask) per fold, in time order."""
    hours = np.unique(dataset.hour)
    blocks = np.array_split(hours, folds + 1)
    plan = []
    for k in range(1, folds + 1):
        test_start, test_end = blocks[k][0], blocks[k][-1]
        train = dataset.hour < test_start - embargo_h
        test = (dataset.hour >= test_start) & (dataset.hour <= test_end)
        if train.any() and test.any():
            plan.append((train, test))
    if not plan:
        raise ValueError(f"{len(hours)} usable hours cannot make {folds} walk-forward folds")
    return plan


def picks(dataset: Dataset, rows: np.ndarray, predicted: np.ndarray | None) -> pd.DataFrame:
    """One line per request in ``rows``: each strategy's pick and its realised cost."""
    ex = FEATURES.index("execution_bps")
    perp = FEATURES.index("is_perp")
    df = pd.DataFrame({
        "request": dataset.request[rows],
        "hour": dataset.hour[rows],
        "key": dataset.candidate[rows],
        "y": dataset.y[rows],
        "execution": dataset.X[rows, ex],
        "is_perp": dataset.X[rows, perp] > 0.5,
        "notional": 10 ** dataset.X[rows, FEATURES.index("log10_notional_usd")],
        "horizon": dataset.X[rows, FEATURES.index("horizon_h")],
    })
    if predicted is not None:
        df["pred"] = predicted
    out = df.groupby("request").agg(hour=("hour", "first"), notional=("notional", "first"), horizon=("horizon", "first"))
    cost = df.set_index(["request", "key"])["y"]

    def pick(frame: pd.DataFrame, column: str, name: str) -> None:
        chosen = frame.loc[frame.groupby("request")[column].idxmin()]
        out[name] = chosen.set_index("request")["key"]
        out[f"{name}_bps"] = chosen.set_index("request")["y"]

    if predicted is not None:
        pick(df, "pred", "model")
    pick(df[df.is_perp], "execution", "always_perp")
    pick(df[~df.is_perp], "execution", "always_spot")
    pick(df, "y", "hindsight")
    out["rule"] = dataset.rule_pick[out.index.to_numpy()]
    out["rule_bps"] = cost.loc[list(zip(out.index, out["rule"]))].to_numpy()
    return out


def summarise(per_request: pd.DataFrame) -> dict:
    """Mean realised cost per strategy (bps), the model's accuracy and its edge over the rule."""
    summary = {"requests": int(len(per_request))}
    for name in STRATEGIES:
        if f"{name}_bps" in per_request:
            summary[f"{name}_bps"] = float(per_request[f"{name}_bps"].mean())
    if "model" in per_request:
        summary["accuracy"] = float((per_request["model"] == per_request["hindsight"]).mean())
        summary["rule_accuracy"] = float((per_request["rule"] == per_request["hindsight"]).mean())
        summary["model_minus_rule_bps"] = summary["model_bps"] - summary["rule_bps"]
        summary["model_picks"] = per_request["model"].value_counts().to_dict()
    summary["rule_picks"] = per_request["rule"].value_counts().to_dict()
    summary["hindsight_picks"] = per_request["hindsight"].value_counts().to_dict()
    return summary


def settings_dict(settings: TrainSettings) -> dict:
    return asdict(settings)
