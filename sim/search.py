"""Parameter combos for a sweep: a grid or a seeded random sample of a search space.

Dimensions come from the command line (``fast=5:55:2``, ``direction=long_only,long_short``,
``exposure=1.5``) or, where not given, from the ``Search`` annotations of the strategy's
``Params``. Combos the parameter model rejects (``fast >= slow``) are dropped and counted.
Enumeration is deterministic, so a combo's index is its id and a resumed sweep can skip
the ids already stored.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from strategies.base import Params, Strategy


class SearchSpecError(ValueError):
    """A ``--grid`` dimension that cannot be parsed or names an unknown parameter."""


def _number(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_dimension(spec: str) -> tuple[str, list]:
    """``name=start:stop:step`` (stop inclusive), ``name=a,b,c`` or ``name=value``."""
    name, sep, body = spec.partition("=")
    name = name.strip()
    if not sep or not name or not body:
        raise SearchSpecError(f"{spec!r}: expected name=start:stop:step, name=a,b,c or name=value")
    if ":" in body:
        parts = body.split(":")
        if len(parts) not in (2, 3):
            raise SearchSpecError(f"{spec!r}: a range is start:stop or start:stop:step")
        values = [_number(p) for p in parts]
        if any(isinstance(v, str) for v in values):
            raise SearchSpecError(f"{spec!r}: range bounds must be numbers")
        start, stop = values[0], values[1]
        step = values[2] if len(values) == 3 else 1
        if step <= 0 or stop < start:
            raise SearchSpecError(f"{spec!r}: need start <= stop and step > 0")
        if all(isinstance(v, int) for v in (start, stop, step)):
            return name, list(range(start, stop + 1, step))
        n = int(np.floor((stop - start) / step + 1e-9)) + 1
        return name, [round(start + k * step, 12) for k in range(n)]
    return name, [_number(p.strip()) for p in body.split(",") if p.strip()]


@dataclass(frozen=True)
class SearchPlan:
    mode: str  # "grid" or "random"
    dimensions: dict[str, list]
    fixed: dict  # parameters held constant (from strategies.yaml or name=value)
    samples: int | None = None
    seed: int = 0

    def describe(self) -> dict:
        return {"mode": self.mode, "dimensions": self.dimensions, "fixed": self.fixed, "samples": self.samples, "seed": self.seed}


def plan(
    strategy: type[Strategy], specs: list[str], fixed: dict | None = None, samples: int | None = None, seed: int = 0
) -> SearchPlan:
    known = strategy.Params.model_fields
    dims: dict[str, list] = {}
    for spec in specs:
        name, values = parse_dimension(spec)
        if name not in known:
            raise SearchSpecError(f"{strategy.name} has no parameter {name!r} (parameters: {', '.join(known)})")
        dims[name] = values
    fixed = {k: v for k, v in (fixed or {}).items() if k not in dims}
    if not specs:
        space = strategy.Params.search_space()
        if not space:
            raise SearchSpecError(f"{strategy.name} declares no search space: give --grid dimensions")
        dims = {name: dim.grid() for name, dim in space.items() if name not in fixed}
    return SearchPlan("random" if samples else "grid", dims, fixed, samples, seed)


@dataclass(frozen=True)
class Combos:
    params: list[Params]  # valid combos; the index is the combo id
    rejected: int  # combos the parameter model refused


def enumerate_combos(strategy: type[Strategy], search: SearchPlan) -> Combos:
    names = list(search.dimensions)
    if search.mode == "grid":
        raw = itertools.product(*(search.dimensions[n] for n in names))
    else:
        rng = np.random.default_rng(search.seed)
        picks = [rng.integers(len(search.dimensions[n]), size=search.samples) for n in names]
        seen, raw = set(), []
        for row in zip(*picks, strict=True):
            if row not in seen:
                seen.add(row)
                raw.append(tuple(search.dimensions[n][j] for n, j in zip(names, row, strict=True)))
    valid, rejected = [], 0
    for values in raw:
        try:
            valid.append(strategy.Params(**search.fixed, **dict(zip(names, values, strict=True))))
        except ValidationError:
            rejected += 1
    return Combos(valid, rejected)
