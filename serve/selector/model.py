"""The trained model and the ``Selector`` that answers decision requests.

The model is an xgboost regressor of the realised all-in cost (bps) of one candidate for one
request, from ``features.FEATURES``. A decision ranks the request's candidates by predicted
cost and picks the cheapest. Without an active model the whitepaper rule picks, and the
ranking shows the transparent estimate (execution + funding persisting over the horizon).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cluster.config import BotmainConfig
from serve.selector.candidates import Candidate, SelectorError, candidates
from serve.selector.costs import CostModel
from serve.selector.features import FEATURES, VenueState, estimated_cost_bps, model_row
from serve.selector.forest import CompiledForest, Uncompilable, compile_forest
from serve.selector.rule import rule_pick

log = logging.getLogger(__name__)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    instrument: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-/:.]+$", description="SOL-PERP, drift:SOL-PERP, SOL-USDC or SOL")
    side: Literal["buy", "sell"]
    size: float = Field(gt=0, le=1e12, description="base units")
    horizon_h: float = Field(24.0, gt=0, le=24 * 365, description="intended holding time, hours")
    venues: list[str] | None = Field(None, max_length=32, description="only these venues")
    features: dict[str, VenueState] | None = Field(
        None, max_length=32, description="market state per candidate (venue:SYMBOL); default: live from the MDS, else the lake"
    )

    @property
    def sign(self) -> int:
        return 1 if self.side == "buy" else -1


class Alternative(BaseModel):
    venue: str
    market: str  # venue:SYMBOL
    kind: str  # perp | spot
    cost_bps: float


class Excluded(BaseModel):
    """A candidate left out of a decision, and why."""

    venue: str
    market: str  # venue:SYMBOL
    reason: str


class Decision(BaseModel):
    instrument: str
    side: str
    size: float
    horizon_h: float
    venue: str
    market: str
    kind: str
    expected_cost_bps: float
    alternatives: list[Alternative]  # every candidate decided on, cheapest first
    excluded: list[Excluded] = []  # candidates left out (no current or valid market state), with the reason
    decided_by: Literal["model", "rule"]
    model_version: str | None
    note: str | None = None
    features_from: str  # "request", "lake, as of ...", "MDS live (...)"
    features: dict[str, dict[str, float]]  # per candidate: FEATURES -> value


@dataclass(frozen=True)
class SelectorModel:
    version: str
    features: tuple[str, ...]
    booster: object  # xgboost.Booster
    forest: CompiledForest | None = None  # the same trees, compiled (serve.selector.forest)
    uncompiled_reason: str | None = None  # why not, if not: xgboost predicts

    @classmethod
    def from_bytes(cls, version: str, raw: bytes, features: list[str]) -> SelectorModel:
        import xgboost as xgb

        if list(features) != FEATURES:
            raise SelectorError(f"model {version} was trained on features {features}, this code computes {FEATURES}")
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        booster.set_param({"nthread": 1})
        try:
            return cls(version, tuple(features), booster, compile_forest(booster))
        except Uncompilable as exc:
            log.warning("model %s predicts through xgboost, not compiled: %s", version, exc)
            return cls(version, tuple(features), booster, None, str(exc))

    @property
    def predictor(self) -> str:
        return "compiled forest" if self.forest is not None else f"xgboost ({self.uncompiled_reason})"

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if self.forest is not None and np.isfinite(rows).all():
            return self.forest.predict(rows)
        return self.booster.inplace_predict(rows)  # NaN: xgboost's missing-value directions


StateProvider = Callable[[DecisionRequest, list[Candidate]], dict[str, VenueState]]


class NoCandidate(SelectorError):
    """No candidate of a request has a usable market state: each one's reason in ``excluded``.
    ``from_request``: the request carried the states (its own error), else the service's
    market data left them all out."""

    def __init__(self, message: str, excluded: list[Excluded], from_request: bool) -> None:
        super().__init__(message)
        self.excluded = excluded
        self.from_request = from_request

NO_MODEL_NOTE = "no trained model is active: the whitepaper rule chose; costs are the cost model's estimate"


class Selector:
    def __init__(self, config: BotmainConfig, model: SelectorModel | None = None) -> None:
        self.config = config
        self.model = model
        self._candidates: dict[tuple, list[Candidate]] = {}
        self._costs: dict[tuple, CostModel] = {}

    def candidates_for(self, request: DecisionRequest) -> list[Candidate]:
        key = (request.instrument, tuple(request.venues) if request.venues else None)
        if key not in self._candidates:
            found = candidates(self.config, request.instrument, request.venues)
            self._candidates[key] = found
            self._costs[key] = CostModel(found)
        return self._candidates[key]

    def decide_many(self, requests: list[DecisionRequest], provider: StateProvider) -> list[Decision]:
        """One model call for every candidate of every request."""
        prepared = []
        for request in requests:
            cands = self.candidates_for(request)
            cost_model = self._costs[(request.instrument, tuple(request.venues) if request.venues else None)]
            from_request = request.features is not None
            states = request.features if from_request else self._provided(provider, request, cands)
            unknown = sorted(set(states) - {c.key for c in cands})
            if from_request and unknown:
                raise SelectorError(f"features for {', '.join(unknown)}: not a candidate for {request.instrument} "
                                    f"(candidates: {', '.join(c.key for c in cands)})")
            usable = [c for c in cands if c.key in states]
            reasons = getattr(states, "excluded", {})
            default = "the request carries no features for it" if from_request else "no market state for it"
            excluded = [Excluded(venue=c.venue, market=c.key, reason=reasons.get(c.key, default)) for c in cands if c.key not in states]
            if not usable:
                raise NoCandidate(f"no candidate venue of {request.instrument} has a usable market state: "
                                  + "; ".join(f"{e.market}: {e.reason}" for e in excluded), excluded, from_request)
            rows = np.vstack([model_row(cost_model, c, request.sign, request.size, request.horizon_h, states[c.key]) for c in usable])
            source = "request" if from_request else getattr(states, "source", "") or "state provider"
            prepared.append((request, usable, states, rows, source, excluded))
        if self.model is not None and prepared:
            predicted = self.model.predict(np.vstack([p[3] for p in prepared]))
        out, at = [], 0
        for request, usable, states, rows, source, excluded in prepared:
            n = len(usable)
            if self.model is not None:
                costs = [float(x) for x in predicted[at : at + n]]
                chosen = usable[int(np.argmin(costs))]
            else:
                costs = [estimated_cost_bps(r) for r in rows]
                chosen = rule_pick(usable, request.sign, states, rows)
            at += n
            out.append(self._decision(request, usable, rows, costs, chosen, source, excluded))
        return out

    @staticmethod
    def _provided(provider: StateProvider, request: DecisionRequest, cands: list[Candidate]) -> dict[str, VenueState]:
        """The provider's states; a provider that fails leaves every candidate out, named."""
        try:
            return provider(request, cands)
        except Exception as exc:  # noqa: BLE001  (market data must never turn into a 500)
            log.exception("the state provider failed for %s", request.instrument)
            reason = f"market state unavailable: {type(exc).__name__}: {exc}"
            raise NoCandidate(f"no candidate venue of {request.instrument} has a usable market state: {reason}",
                              [Excluded(venue=c.venue, market=c.key, reason=reason) for c in cands], False) from None

    def _decision(self, request, usable, rows, costs, chosen, source: str, excluded: list[Excluded]) -> Decision:
        """Validated from plain dicts in one pydantic-core call: faster than building the
        nested models one by one in Python (or ``model_construct``), a decision's largest
        cost after the features."""
        ranked = sorted(zip(usable, costs), key=lambda x: x[1])
        return Decision.model_validate({
            "instrument": request.instrument,
            "side": request.side,
            "size": request.size,
            "horizon_h": request.horizon_h,
            "venue": chosen.venue,
            "market": chosen.key,
            "kind": chosen.kind,
            "expected_cost_bps": costs[usable.index(chosen)],
            "alternatives": [{"venue": c.venue, "market": c.key, "kind": c.kind, "cost_bps": cost} for c, cost in ranked],
            "decided_by": "model" if self.model is not None else "rule",
            "model_version": self.model.version if self.model is not None else None,
            "note": None if self.model is not None else NO_MODEL_NOTE,
            "features_from": source,
            "features": {c.key: dict(zip(FEATURES, r)) for c, r in zip(usable, rows.tolist())},
            "excluded": [e.model_dump() for e in excluded],
        })
