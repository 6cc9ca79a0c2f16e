"""One strategy's limits, resolved once from risk.yaml (``RiskConfig.limits_for``) into
plain attributes, so that a check reads numbers, not pydantic models."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config.models import RiskLimits

from actors.risk.states import TradingState


@dataclass(frozen=True, slots=True)
class StrategyLimits:
    max_position_notional: float
    max_order_notional: float
    max_leverage: float
    max_drawdown: float
    liquidation_buffer: float
    max_open_orders: int
    price_band_bps: float
    max_orders_per_s: int
    daily_loss_limit: float | None
    on_breach: TradingState
    stop_window: int
    stop_multiple: float | None  # None: no trailing stop
    checks: frozenset[str]  # the pre-trade rules switched on

    @classmethod
    def from_limits(cls, limits: RiskLimits) -> StrategyLimits:
        stop = limits.dynamic_stop
        return cls(
            max_position_notional=limits.max_position_notional,
            max_order_notional=limits.max_order_notional,
            max_leverage=limits.max_leverage,
            max_drawdown=limits.max_drawdown,
            liquidation_buffer=limits.liquidation_buffer,
            max_open_orders=limits.max_open_orders,
            price_band_bps=limits.price_band_bps,
            max_orders_per_s=limits.max_orders_per_s,
            daily_loss_limit=limits.daily_loss_limit,
            on_breach=TradingState(limits.on_breach),
            stop_window=stop.window if stop else 20,
            stop_multiple=stop.multiple if stop else None,
            checks=frozenset(name for name, on in limits.checks.model_dump().items() if on),
        )
