"""The training set: decision requests at every recorded hour, each candidate's features at
that hour, and the all-in cost it actually realised over the request's horizon.

Requests are drawn per hour (``requests_per_hour``): side at random, notional log-uniform
between ``min_notional_usd`` and ``max_notional_usd``, horizon from ``horizons_h``. An hour
is usable once the features have warmed up (the long EMA's span) and while the horizon's
end is still inside the recording. The label of a candidate is

    execution (fees + concession, both ways, the state at the decision)
    + funding settled over (t, t + horizon] + the perp premium's change     (serve.selector.costs)

so a label never uses the future of anything but the holding period itself, and a feature
never uses anything after the decision time. A candidate of a request is a venue that is
current at the decision hour and stays current through the end of the holding period
(``MarketHistory``: its recording neither ends nor has a gap before then), so no label is
priced from rows carried past a recording's end; an hour where no venue is current gives no
request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serve.selector.costs import CostModel
from serve.selector.features import FEATURES, model_row
from serve.selector.history import EMA_LONG_H, MarketHistory
from serve.selector.rule import rule_pick


@dataclass(frozen=True)
class DatasetSettings:
    requests_per_hour: int = 4
    horizons_h: tuple[int, ...] = (1, 8, 24, 72)
    min_notional_usd: float = 500.0
    max_notional_usd: float = 250_000.0
    seed: int = 0


@dataclass
class Dataset:
    X: np.ndarray  # rows x FEATURES, one row per (request, candidate)
    y: np.ndarray  # realised all-in cost, bps
    request: np.ndarray  # request id of each row
    hour: np.ndarray  # grid index of each row's decision
    candidate: np.ndarray  # candidate key of each row
    rule_pick: np.ndarray  # per request: the candidate key the whitepaper rule picks
    keys: list[str]

    @property
    def n_requests(self) -> int:
        return len(self.rule_pick)


def build_dataset(history: MarketHistory, settings: DatasetSettings) -> Dataset:
    rng = np.random.default_rng(settings.seed)
    keys = sorted(history.venues)
    cands = [history.venues[k].candidate for k in keys]
    cost_model = CostModel(cands)
    max_h = max(settings.horizons_h)
    hours = np.arange(EMA_LONG_H, len(history.grid) - max_h - 1)
    if len(hours) < 10:
        raise ValueError(f"{history.base}: {len(history.grid)} recorded hours is too short for horizons up to {max_h} h")
    rows, req_ids, row_hours, row_keys, row_sides, row_horizons, rule_picks = [], [], [], [], [], [], []
    ex = FEATURES.index("execution_bps")
    rid = 0
    run_end = {k: history.venues[k].run_end for k in keys}
    for i in hours:
        states = history.states(int(i))
        if not states:
            continue
        for _ in range(settings.requests_per_hour):
            side = 1 if rng.random() < 0.5 else -1
            notional = float(np.exp(rng.uniform(np.log(settings.min_notional_usd), np.log(settings.max_notional_usd))))
            horizon = int(rng.choice(settings.horizons_h))
            usable = [c for c in cands if c.key in states and run_end[c.key][i] >= i + horizon]  # current through the holding period
            if not usable:
                continue
            size = notional / states[usable[0].key].price  # one size in base units for every venue
            request_rows = [model_row(cost_model, c, side, size, horizon, states[c.key]) for c in usable]
            rule_picks.append(rule_pick(usable, side, states, request_rows).key)
            for c, row in zip(usable, request_rows):
                rows.append(row)
                req_ids.append(rid)
                row_hours.append(i)
                row_keys.append(c.key)
                row_sides.append(side)
                row_horizons.append(horizon)
            rid += 1
    if not rows:
        raise ValueError(f"{history.base}: no hour has a venue whose recording covers a holding period "
                         f"(candidate spans: {history.spans_text()})")
    X = np.vstack(rows)
    row_keys_a, row_hours_a = np.asarray(row_keys), np.asarray(row_hours)
    sides_a, horizons_a = np.asarray(row_sides), np.asarray(row_horizons)
    y = X[:, ex].copy()
    for key in keys:
        m = row_keys_a == key
        y[m] += history.realised_carry_bps(key, row_hours_a[m], horizons_a[m], sides_a[m])
    return Dataset(X, y, np.asarray(req_ids), row_hours_a, row_keys_a, np.asarray(rule_picks), keys)
