"""Which listings can carry a trade: the same base asset as a perp or as USD-quoted spot."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import BotmainConfig
from sim.settings import LegCosts

USD_QUOTES = frozenset({"USD", "USDC", "USDT"})


class SelectorError(ValueError):
    """A request the selector cannot serve (unknown instrument, no candidate venue)."""


@dataclass(frozen=True)
class Candidate:
    key: str  # venue:SYMBOL
    venue: str
    symbol: str
    kind: str  # perp | spot
    base: str
    costs: LegCosts  # the simulator's cost settings for this listing
    stale_after_s: float = 10.0  # venues.yaml: silent longer than this past a due row -> not a candidate (the MDS's rule)

    @property
    def is_perp(self) -> bool:
        return self.kind == "perp"

    @property
    def fee_bps(self) -> float:
        return self.costs.fee * 1e4


def base_asset(config: BotmainConfig, instrument: str) -> str:
    """``SOL-PERP``, ``drift:SOL-PERP``, ``SOL-USDC`` or ``SOL`` -> ``SOL``."""
    name = instrument.split(":", 1)[1] if ":" in instrument else instrument
    listed = config.instruments()
    for inst in listed:
        if inst.symbol == name or inst.key == instrument:
            return inst.base
    bases = {inst.base for inst in listed}
    if name in bases:
        return name
    known = sorted({inst.symbol for inst in listed} | bases)
    raise SelectorError(f"unknown instrument {instrument!r}: venues.yaml lists {', '.join(known)}")


def candidates(config: BotmainConfig, instrument: str, venues: list[str] | None = None) -> list[Candidate]:
    """Every perp of the instrument's base asset and every spot market of it quoted in a USD
    stablecoin, optionally only on ``venues``; sorted by key."""
    base = base_asset(config, instrument)
    out = []
    for inst in config.instruments():
        if inst.base != base or (venues is not None and inst.venue not in venues):
            continue
        kind = inst.kind.value
        if kind == "spot" and inst.quote not in USD_QUOTES:
            continue
        out.append(Candidate(inst.key, inst.venue, inst.symbol, kind, base, LegCosts.from_config(config, inst.key),
                             config.venues.venues[inst.venue].stale_after_s))
    if not out:
        raise SelectorError(f"no venue lists {base} as a perp or USD-quoted spot market")
    return sorted(out, key=lambda c: c.key)
