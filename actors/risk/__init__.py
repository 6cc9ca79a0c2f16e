"""The Risk Rules Monitor's core: pure logic, no Ray, no I/O.

``monitor.RiskMonitor`` is what the risk actor hosts: ``check(intent) -> Verdict`` before
any venue sees an intent, the feeds of marks, fills, funding and bars that drive the
continuous checks, the trading states, and the treasury and exposure views. One concept a
module:

    rules.py        the pre-trade rules, one small function each, and the order they run in
    verdict.py      a decision, its numbers, how they read
    states.py       ACTIVE / REDUCING / HALTED per strategy and global; transitions
    continuous.py   the kill switch and daily loss limit, auto-close before liquidation
    stops.py        the volatility-scaled trailing stop, bar by bar
    liquidation.py  liquidation and auto-close prices (the simulator's formula)
    exposure.py     net and gross exposure per asset across venues
    treasury.py     the treasury's accounts per venue, allocations, the positions summary
    account.py      a strategy's book as the monitor sees it
    market.py       marks, consolidated mids, stale venues
    instruments.py  each listing's sizes, ticks and margin ratios, resolved once
    limits.py       each strategy's limits, resolved once
    throttle.py     the order rate window
    events.py       what the continuous checks report and the actions they ask for
"""

from actors.risk.events import AutoClose, CancelOpenOrders, ClosePosition, StopHit, StopMoved
from actors.risk.monitor import Event, RiskMonitor
from actors.risk.states import TradingState, Transition
from actors.risk.verdict import Verdict

__all__ = [
    "AutoClose",
    "CancelOpenOrders",
    "ClosePosition",
    "Event",
    "RiskMonitor",
    "StopHit",
    "StopMoved",
    "TradingState",
    "Transition",
    "Verdict",
]
