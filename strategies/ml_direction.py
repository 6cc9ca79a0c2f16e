"""The whitepaper's direction model, trained walk-forward with xgboost.

Assumes one leg (the first of the frame is the one traded and read): its closes, and its
``funding_known`` (the latest hourly funding rate published at or before each close; 0
where the lake has no funding for the instrument, which makes that feature constant and
unused). Bars are expected to be contiguous; the label is "the next bar closes higher",
whatever the bar length.

Features of bar ``i`` (all known at its close, all scale free so a model trained at one
price level applies at another):

- ``ema_short[i] / close[i] - 1`` and ``ema_long[i] / close[i] - 1`` (``adjust=False``
  EMAs of the close, the same ones ``ema_cross`` uses);
- the standard deviation of the last ``vol_window`` close-to-close returns;
- ``funding_known[i]``.

Label of bar ``j``: ``close[j + 1] > close[j]``. It is known only once bar ``j + 1`` has
closed.

Why not the whitepaper's sample: it fits one model on every row and then scores those
same rows, so the prediction for bar ``i`` comes from a model that has seen the labels
of bar ``i`` and of every bar after it, i.e. the answer. Its accuracy and any backtest
of it are lookahead artefacts. Here the frame is cut into blocks of ``retrain_every``
bars anchored at bar 0 (``[0, R), [R, 2R), ...``). For the block that starts at bar
``b`` a fresh model is fitted on at most the last ``train_window`` rows ``j <= b - 2``,
whose labels read closes up to ``close[b - 1]`` only (the model could be trained at the
close of bar ``b - 1``, before the block starts), and it then predicts bars ``b`` to the
block's end from their own features. The first block (and any block before enough rows
with finite features and both outcomes exist) has no model: no opinion (NaN). A block
that cannot be trained keeps the previous block's model. ``walk_forward_blocks`` is the
plan the implementation follows; tests check it.

xgboost runs single threaded with a fixed seed, so identical input gives an identical
model: the signals on a frame cut at bar ``n`` equal the first ``n`` signals on the whole
frame. Blocks are anchored at the frame's first bar, so a live window must grow from a
fixed start (``Frame.head``); a window that rolls forward re-anchors the blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from strategies.base import Choice, FloatRange, IntRange, Params, Strategy
from strategies.frame import Frame
from strategies.indicators import ema, rolling_return_std

FEATURES = ("ema_short", "ema_long", "volatility", "funding_rate")


class MlDirectionParams(Params):
    """The declared search space is kept small (288 combos, 48 distinct models: threshold
    and direction reuse the cached probabilities); widen it with ``--grid`` dimensions."""

    ema_short: Annotated[int, Field(ge=1), IntRange(5, 20, 5)] = 10
    ema_long: Annotated[int, Field(ge=2), IntRange(40, 120, 40)] = 50
    vol_window: Annotated[int, Field(ge=2), IntRange(5, 20, 5)] = 5
    train_window: Annotated[int, Field(ge=10)] = 10080  # bars
    retrain_every: Annotated[int, Field(ge=1)] = 1440  # bars
    min_train_rows: Annotated[int, Field(ge=10)] = 1000
    threshold: Annotated[float, Field(ge=0.5, lt=1.0), FloatRange(0.5, 0.6, 0.05)] = 0.55
    direction: Annotated[Literal["long_only", "long_short"], Choice(("long_only", "long_short"))] = "long_short"
    exposure: Annotated[float, Field(gt=0, le=20)] = 1.0
    n_estimators: Annotated[int, Field(ge=1, le=2000)] = 50
    max_depth: Annotated[int, Field(ge=1, le=12)] = 3
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.1
    random_state: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _consistent(self) -> MlDirectionParams:
        if self.ema_short >= self.ema_long:
            raise ValueError(f"ema_short ({self.ema_short}) must be below ema_long ({self.ema_long})")
        if self.min_train_rows > self.train_window:
            raise ValueError(f"min_train_rows ({self.min_train_rows}) must not exceed train_window ({self.train_window})")
        return self


@dataclass(frozen=True)
class Block:
    """One walk-forward step: a model fitted on rows ``train_lo <= j < train_hi`` (those
    with finite features) predicts bars ``start <= i < stop``. ``train_hi == start - 1``:
    the newest label used is that of row ``start - 2``, read from ``close[start - 1]``."""

    start: int
    stop: int
    train_lo: int
    train_hi: int


def walk_forward_blocks(n_bars: int, retrain_every: int, train_window: int) -> list[Block]:
    """The blocks after the first (which has nothing to train on), anchored at bar 0."""
    blocks = []
    for start in range(retrain_every, n_bars, retrain_every):
        hi = start - 1
        blocks.append(Block(start, min(start + retrain_every, n_bars), max(0, hi - train_window), hi))
    return blocks


def direction_labels(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(label, known)``: ``label[j] = close[j + 1] > close[j]``; ``known`` is False for
    the last bar and wherever either close is missing."""
    n = len(close)
    label = np.zeros(n, dtype=np.int8)
    known = np.zeros(n, dtype=bool)
    if n > 1:
        label[:-1] = close[1:] > close[:-1]
        known[:-1] = np.isfinite(close[1:]) & np.isfinite(close[:-1])
    return label, known


class MlDirection(Strategy):
    """Long when the walk-forward model gives the next bar a probability of closing
    higher above ``threshold``; short below ``1 - threshold`` (flat if ``long_only``);
    flat in between; NaN before the first model or where a feature is undefined. See
    the module docstring for the features, the label and the walk-forward scheme."""

    name = "ml_direction"
    Params = MlDirectionParams

    def warmup_bars(self) -> int:
        p = self.params
        first_row = max(p.ema_long - 1, p.vol_window)  # first bar with every feature defined
        first_block = math.ceil((first_row + 1 + p.min_train_rows) / p.retrain_every)
        return max(1, first_block) * p.retrain_every

    def features(self, frame: Frame) -> np.ndarray:
        """(bars, 4) feature matrix, columns as in ``FEATURES``."""
        p = self.params
        leg = frame.leg(0)
        close = leg.close
        short = frame.cached(("ema", 0, p.ema_short), lambda: ema(close, p.ema_short))
        long_ = frame.cached(("ema", 0, p.ema_long), lambda: ema(close, p.ema_long))
        vol = frame.cached(("return_std", 0, p.vol_window), lambda: rolling_return_std(close, p.vol_window))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([short / close - 1.0, long_ / close - 1.0, vol, leg.funding_known])

    def _model(self):
        from xgboost import XGBClassifier

        p = self.params
        return XGBClassifier(
            n_estimators=p.n_estimators,
            max_depth=p.max_depth,
            learning_rate=p.learning_rate,
            tree_method="hist",
            n_jobs=1,
            random_state=p.random_state,
            eval_metric="logloss",
            verbosity=0,
        )

    def probabilities(self, frame: Frame) -> np.ndarray:
        """Walk-forward probability that each bar's next close is higher (NaN: no model
        yet, or undefined features). Cached per frame and model parameters, so a sweep
        over threshold, direction or exposure trains once."""
        p = self.params
        key = (
            "ml_direction_proba",
            p.ema_short,
            p.ema_long,
            p.vol_window,
            p.train_window,
            p.retrain_every,
            p.min_train_rows,
            p.n_estimators,
            p.max_depth,
            p.learning_rate,
            p.random_state,
        )
        return frame.cached(key, lambda: self._walk_forward(frame))

    def _walk_forward(self, frame: Frame) -> np.ndarray:
        p = self.params
        n = len(frame)
        x = self.features(frame)
        finite = np.isfinite(x).all(axis=1)
        label, known = direction_labels(frame.leg(0).close)
        trainable = finite & known
        proba = np.full(n, np.nan)
        model = None
        for block in walk_forward_blocks(n, p.retrain_every, p.train_window):
            assert block.train_hi <= block.start - 1  # newest label read: close[start - 1]
            rows = np.arange(block.train_lo, block.train_hi)[trainable[block.train_lo : block.train_hi]]
            y = label[rows]
            if len(rows) >= p.min_train_rows and 0 < int(y.sum()) < len(rows):
                model = self._model()
                model.fit(x[rows], y)
            if model is None:
                continue
            ahead = np.arange(block.start, block.stop)[finite[block.start : block.stop]]
            if len(ahead):
                proba[ahead] = model.predict_proba(x[ahead])[:, 1]
        return proba

    def signals(self, frame: Frame) -> np.ndarray:
        p = self.params
        proba = self.probabilities(frame)
        below = 0.0 if p.direction == "long_only" else -p.exposure
        target = np.where(proba > p.threshold, p.exposure, np.where(proba < 1.0 - p.threshold, below, 0.0))
        target[np.isnan(proba)] = np.nan
        return target.reshape(1, -1)
