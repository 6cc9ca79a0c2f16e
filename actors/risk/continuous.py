"""The continuous checks, as pure functions of an account: what the monitor asks for on
each mark, fill, funding and closed bar.

* ``breach``: the drawdown kill switch (equity at or under ``peak x (1 - max_drawdown)``,
  or at or under 0, as in the simulator) and the daily loss limit (at or under the UTC day's
  start ``x (1 - daily_loss_limit)``). The simulator checks its kill switch at bar closes;
  the monitor on every mark, so an intrabar fall trips it too;
* ``auto_close``: a venue's perps whose distance to liquidation fell below the buffer, with
  the closes that bring the rest back above it;
* ``stop_closes``: the close of a position whose trailing stop was reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.domain import Side

from actors.risk.account import Holding, StrategyAccount
from actors.risk.events import AutoClose, ClosePosition
from actors.risk.limits import StrategyLimits
from actors.risk.liquidation import position_liquidation_price


@dataclass(frozen=True, slots=True)
class Breach:
    rule: str  # equity_wiped, max_drawdown or daily_loss_limit
    equity: float
    threshold: float  # the equity at or under which the rule trips
    reference: float  # the peak or the day's start
    fraction: float  # the configured fraction (0 for equity_wiped)

    def inputs(self) -> dict[str, float]:
        return {"equity": self.equity, "threshold": self.threshold, "reference": self.reference, "fraction": self.fraction}


def drawdown_floor(account: StrategyAccount, limits: StrategyLimits) -> float:
    return account.peak_equity * (1.0 - limits.max_drawdown)


def daily_loss_floor(account: StrategyAccount, limits: StrategyLimits) -> float | None:
    if limits.daily_loss_limit is None:
        return None
    return account.day_start_equity * (1.0 - limits.daily_loss_limit)


def breach(account: StrategyAccount, limits: StrategyLimits, equity: float) -> Breach | None:
    """The first loss rule ``equity`` breaks (after ``account.observe``), or None."""
    if equity <= 0.0:
        return Breach("equity_wiped", equity, 0.0, account.peak_equity, 0.0)
    floor = drawdown_floor(account, limits)
    if equity <= floor:
        return Breach("max_drawdown", equity, floor, account.peak_equity, limits.max_drawdown)
    floor = daily_loss_floor(account, limits)
    if floor is not None and equity <= floor:
        return Breach("daily_loss_limit", equity, floor, account.day_start_equity, limits.daily_loss_limit)
    return None


def close_of(holding: Holding, reason: str, price: float | None = None) -> ClosePosition:
    q = holding.position.size
    return ClosePosition(
        strategy=holding.strategy,
        instrument=holding.spec.key,
        side=Side.SELL if q > 0 else Side.BUY,
        size=abs(q),
        reference_price=holding.mark() if price is None else price,
        reason=reason,
    )


def auto_close(account: StrategyAccount, venue: str, buffer: float, ts_ns: int) -> AutoClose | None:
    """When the venue equity is at or under ``(1 + buffer)`` x the maintenance margin of
    the perps there: close them, the largest maintenance margin first, until the rest clears
    it (closing at the mark leaves the equity as it is and takes its margin away; spot has
    none). A holding with a close already outstanding counts as closed and is not asked for
    again. None when nothing is to be done."""
    perps = [h for h in account.holdings.values() if h.spec.venue == venue and h.spec.perp and h.position.size != 0.0]
    if not perps:
        return None
    equity = account.venue_equity(venue)
    maintenance = sum(h.maintenance() for h in perps)
    scale = 1.0 + buffer
    if equity > scale * maintenance:
        return None
    liquidation = {h.spec.key: position_liquidation_price(account, h, 1.0) for h in perps}
    at = {h.spec.key: position_liquidation_price(account, h, scale) for h in perps}
    closes = []
    left = maintenance
    for h in sorted(perps, key=Holding.maintenance, reverse=True):
        left -= h.maintenance()
        if not h.closing:
            closes.append(close_of(h, "auto_close"))
        if equity > scale * left:
            break
    if not closes:
        return None
    return AutoClose(account.strategy, venue, ts_ns, equity, maintenance, buffer, liquidation, at, tuple(closes))
