"""What the monitor knows of each listing, resolved once from the configuration so that a
check reads plain attributes: venues.yaml's tick, lot, size and notional limits, and
simulation.yaml's margin ratios (``CostsConfig.resolve``, as the simulator takes them)."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import BotmainConfig
from cluster.domain import MarketKind


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    key: str  # venue:SYMBOL
    venue: str
    symbol: str
    base: str
    quote: str
    perp: bool
    tick_size: float | None
    lot_size: float | None
    min_size: float | None
    max_size: float | None
    min_notional: float | None
    # Collateral a position takes per unit of notional: the initial margin ratio for a
    # perp, 1 for spot (paid for in full).
    usage_ratio: float
    # Maintenance margin ratio (perps); 0 for spot, which has no liquidation.
    maintenance_ratio: float

    @property
    def usage_kind(self) -> str:
        return "margin" if self.perp else "notional"


def instrument_specs(config: BotmainConfig) -> dict[str, InstrumentSpec]:
    """Every venue:SYMBOL listed in venues.yaml."""
    out: dict[str, InstrumentSpec] = {}
    for inst in config.instruments():
        perp = inst.kind is MarketKind.PERP
        costs = config.simulation.costs.resolve(inst.venue, inst.key)
        out[inst.key] = InstrumentSpec(
            key=inst.key,
            venue=inst.venue,
            symbol=inst.symbol,
            base=inst.base,
            quote=inst.quote,
            perp=perp,
            tick_size=inst.tick_size,
            lot_size=inst.lot_size,
            min_size=inst.min_size,
            max_size=inst.max_size,
            min_notional=inst.min_notional,
            usage_ratio=costs.margin_ratio_initial if perp else 1.0,
            maintenance_ratio=costs.margin_ratio_maintenance if perp else 0.0,
        )
    return out
