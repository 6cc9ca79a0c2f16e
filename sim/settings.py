"""What a simulated run assumes: costs per leg, fill rule, latency and risk rules.

Built from ``configs/simulation.yaml`` (costs per venue and venue:SYMBOL), ``venues.yaml``
(fees, lot sizes) and ``risk.yaml`` (limits per strategy), or constructed directly in
tests and benchmarks. ``arrays`` turns it into the kernel's parameter arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from cluster.config.loader import BotmainConfig
from cluster.config.models import CostDefaults, RiskLimits
from sim import kernel as k

IMPACT_MODELS = {"none": k.IMPACT_NONE, "amm": k.IMPACT_AMM, "book": k.IMPACT_BOOK, "sqrt": k.IMPACT_SQRT}


@dataclass(frozen=True)
class LegCosts:
    key: str = "sim:ASSET"
    perp: bool = True
    fee: float = 0.0  # fraction of notional per fill (taker or maker, as configured)
    slippage_bps: float = 0.0
    impact: str = "none"  # none | amm | book | sqrt
    pool_depth_usd: float = 10_000_000.0
    impact_coef: float = 0.5
    impact_window_bars: int = 1440
    lot_size: float = 0.0  # 0: no rounding
    min_size: float = 0.0
    margin_ratio_initial: float = 0.1
    margin_ratio_maintenance: float = 0.05
    liquidation_fee: float = 0.01

    @classmethod
    def from_config(cls, config: BotmainConfig, key: str) -> LegCosts:
        instrument = config.instrument(key)
        venue = config.venues.venues[instrument.venue]
        costs: CostDefaults = config.simulation.costs.resolve(instrument.venue, key)
        return cls(
            key=key,
            perp=instrument.kind.value == "perp",
            fee=venue.taker_fee if costs.fee_side == "taker" else venue.maker_fee,
            slippage_bps=costs.slippage_bps,
            impact=costs.slippage,
            pool_depth_usd=costs.pool_depth_usd,
            impact_coef=costs.impact_coef,
            impact_window_bars=costs.impact_window_bars,
            lot_size=instrument.lot_size or 0.0,
            min_size=instrument.min_size or 0.0,
            margin_ratio_initial=costs.margin_ratio_initial,
            margin_ratio_maintenance=costs.margin_ratio_maintenance,
            liquidation_fee=costs.liquidation_fee,
        )


@dataclass(frozen=True)
class RiskRules:
    """Risk rules applied inside the simulation; ``None`` switches a rule off."""

    max_position_notional: float | None = None
    max_order_notional: float | None = None
    max_leverage: float | None = None
    stop_window: int = 20
    stop_multiple: float | None = None  # trailing stop at close -/+ multiple x sigma
    liquidation_buffer: float | None = None  # auto-close at (1 + buffer) x maintenance
    max_drawdown: float | None = None  # kill switch

    @classmethod
    def from_limits(cls, limits: RiskLimits) -> RiskRules:
        stop = limits.dynamic_stop
        return cls(
            max_position_notional=limits.max_position_notional,
            max_order_notional=limits.max_order_notional,
            max_leverage=limits.max_leverage,
            stop_window=stop.window if stop else 20,
            stop_multiple=stop.multiple if stop else None,
            liquidation_buffer=limits.liquidation_buffer,
            max_drawdown=limits.max_drawdown,
        )


@dataclass(frozen=True)
class SimSettings:
    legs: tuple[LegCosts, ...]
    initial_cash: float = 10_000.0
    fill_price: str = "next_open"  # or "close"
    latency_ms: float = 0.0
    risk: RiskRules = field(default_factory=RiskRules)

    def __post_init__(self) -> None:
        if self.fill_price not in ("next_open", "close"):
            raise ValueError(f"fill_price must be next_open or close, not {self.fill_price!r}")
        if self.fill_price == "close" and self.latency_ms > 0:
            raise ValueError("latency_ms applies only with fill_price next_open")
        for leg in self.legs:
            if leg.impact not in IMPACT_MODELS:
                raise ValueError(f"{leg.key}: unknown impact model {leg.impact!r} (one of {', '.join(IMPACT_MODELS)})")

    @classmethod
    def from_config(cls, config: BotmainConfig, instruments: list[str], strategy_name: str | None = None) -> SimSettings:
        sim = config.simulation
        limits = config.risk.limits_for(strategy_name) if strategy_name else config.risk.defaults
        return cls(
            legs=tuple(LegCosts.from_config(config, key) for key in instruments),
            initial_cash=sim.initial_cash,
            fill_price=sim.fill_price,
            latency_ms=sim.latency_ms,
            risk=RiskRules.from_limits(limits),
        )

    def with_(self, **changes) -> SimSettings:
        return replace(self, **changes)

    def leg_params(self) -> np.ndarray:
        lp = np.zeros((len(self.legs), k.N_LP))
        for i, leg in enumerate(self.legs):
            lp[i, k.LP_FEE] = leg.fee
            lp[i, k.LP_SLIP] = leg.slippage_bps / 1e4
            lp[i, k.LP_MODEL] = IMPACT_MODELS[leg.impact]
            lp[i, k.LP_POOL] = leg.pool_depth_usd
            lp[i, k.LP_IMPACT] = leg.impact_coef
            lp[i, k.LP_LOT] = leg.lot_size
            lp[i, k.LP_MIN] = leg.min_size
            lp[i, k.LP_PERP] = 1.0 if leg.perp else 0.0
            lp[i, k.LP_IMR] = leg.margin_ratio_initial
            lp[i, k.LP_MMR] = leg.margin_ratio_maintenance
            lp[i, k.LP_LIQ_FEE] = leg.liquidation_fee
        return lp

    def account_params(self, bar_seconds: float) -> np.ndarray:
        r = self.risk
        a = np.zeros(k.N_AS)
        a[k.AS_CASH] = self.initial_cash
        a[k.AS_NEXT_OPEN] = 1.0 if self.fill_price == "next_open" else 0.0
        delay = self.latency_ms / 1000.0 / bar_seconds if bar_seconds > 0 else 0.0
        a[k.AS_LAT_BARS] = math.floor(delay)
        a[k.AS_LAT_FRAC] = delay - math.floor(delay)
        a[k.AS_MAX_POS] = r.max_position_notional or np.inf
        a[k.AS_MAX_ORDER] = r.max_order_notional or np.inf
        a[k.AS_MAX_LEV] = r.max_leverage or np.inf
        a[k.AS_STOP_MULT] = r.stop_multiple or 0.0
        a[k.AS_LIQ_BUFFER] = r.liquidation_buffer or 0.0
        a[k.AS_MAX_DD] = r.max_drawdown or 0.0
        return a
