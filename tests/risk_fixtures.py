"""A Risk Rules Monitor on the shipped configuration (both strategies enabled), changed per
test through plain dicts; a clock the test moves; intents and fills in few words."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from functools import lru_cache

from cluster.config import BotmainConfig, load_config
from cluster.config.loader import DEFAULT_CONFIG_DIR
from cluster.config.models import RiskConfig, StrategiesConfig, VenuesConfig
from cluster.domain import Fill, OrderIntent, OrderType, Side

from actors.risk import RiskMonitor

T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01 00:00 UTC
SECOND = 1_000_000_000
DAY = 86_400 * SECOND

EMA = "sol_ema_cross"  # binanceusdm:SOL-PERP, 10,000 allocated on binanceusdm
CARRY = "sol_funding_carry"  # drift:SOL-PERP + jupiter:SOL-USDC, 5,000 allocated on each
BINANCE_SOL = "binanceusdm:SOL-PERP"
DRIFT_SOL = "drift:SOL-PERP"
JUPITER_SOL = "jupiter:SOL-USDC"


@lru_cache(maxsize=1)
def shipped() -> BotmainConfig:
    return load_config(DEFAULT_CONFIG_DIR)


def merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config(risk: dict | None = None, venues: dict | None = None) -> BotmainConfig:
    """The shipped configuration with the funding carry enabled, ``risk`` merged into
    risk.yaml and ``venues`` applied to venues.yaml (``{"SOL-PERP": {"drift": {...}}}``
    changes a listing)."""
    base = shipped()
    strategies = StrategiesConfig.model_validate(
        {"strategies": [{**s.model_dump(), "enabled": True} for s in base.strategies.strategies]}
    )
    risk_cfg = RiskConfig.model_validate(merge(base.risk.model_dump(exclude_unset=True), risk or {}))
    venues_cfg = base.venues
    if venues:
        data = base.venues.model_dump(exclude_unset=True)
        for inst in data["instruments"]:
            for venue, change in venues.get(inst["symbol"], {}).items():
                inst["listings"][venue].update(change)
        venues_cfg = VenuesConfig.model_validate(data)
    return dataclasses.replace(base, risk=risk_cfg, strategies=strategies, venues=venues_cfg)


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def monitor(risk: dict | None = None, venues: dict | None = None, clock: Clock | None = None,
            price: float = 250.0) -> RiskMonitor:
    """A monitor whose SOL instruments are marked at ``price`` (consolidated mids too)."""
    mon = RiskMonitor(config(risk, venues), clock=clock or Clock())
    move(mon, price)
    return mon


def move(mon: RiskMonitor, price: float) -> list:
    """SOL moves to ``price`` everywhere: marks and consolidated mids. Returns the events."""
    events = []
    for key in ("binanceusdm:SOL-PERP", "drift:SOL-PERP", "hyperliquid:SOL-PERP", "jupiter:SOL-USDC",
                "raydium:SOL-USDC", "binance:SOL-USDT"):
        events += mon.on_mark(key, price)
    mon.on_best("SOL-PERP", price - 0.05, price + 0.05)
    mon.on_best("SOL-USDC", price - 0.05, price + 0.05)
    return events


def intent(side: str = "buy", size: float = 1.0, strategy: str = EMA, instrument: str = BINANCE_SOL,
           limit: float | None = None, **kw) -> OrderIntent:
    return OrderIntent(
        strategy=strategy, instrument=instrument, side=Side(side), size=size,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET, limit_price=limit, **kw,
    )


_fill_ids = itertools.count()


def fill(mon: RiskMonitor, side: str, size: float, price: float, strategy: str = EMA,
         instrument: str = BINANCE_SOL, fee: float = 0.0) -> list:
    """Book a fill as the Execution Server would report it; returns the monitor's events."""
    n = next(_fill_ids)
    return mon.on_fill(strategy, Fill(f"o{n}", instrument.split(":")[0], f"f{n}", mon._clock(), instrument, Side(side), size, price, fee))


def refused(verdict, rule: str) -> str:
    assert not verdict.accepted, f"expected {rule} to refuse, it was accepted"
    assert verdict.rule == rule, f"expected {rule}, got {verdict.message}"
    assert verdict.message.startswith(f"{rule}: ")
    return verdict.message
