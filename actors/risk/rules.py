"""The pre-trade rules: each a small function of one ``OrderCheck`` that returns None to
let the intent through, or the refusing ``Verdict``, naming the rule and its numbers.

``OrderCheck`` works out once what every rule reads: the position now (``q0``), the change
(``dq``) and the position after (``q1``) in base units, the price the order is judged at
and whether it reduces. The price is the limit price, else the intent's reference price,
else the instrument's mark, else the symbol's consolidated mid. A quantity order trades
``size``; a target order is judged on its size estimate at its reference price, and a
target of 0 closes whatever the position is (a reducing order).

What "reduces" means: ``|q1| <= |q0|`` on the same side (a flip does not). The rules on a
book's measures (position notional, leverage, free collateral, liquidation distance,
exposure, the treasury's balance) refuse only an order that makes the measure worse, so a
strategy over a limit (prices moved) can always get back under it; the loss rules refuse
only orders that do not reduce; ``max_order_notional`` never caps a close to flat (the
simulator's rules). Position values use the instruments' marks, the order's own position
after it the order's price; fees are left out.

``RULES`` is the order they run in, cheapest and most structural first; the rate throttle
runs last, since an accepted order takes one of its slots. Rules that are not in a
strategy's ``checks`` (risk.yaml) are left out of its tuple at construction.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

from cluster.domain import OrderIntent, Side

from actors.risk.account import StrategyAccount
from actors.risk.continuous import daily_loss_floor, drawdown_floor
from actors.risk.exposure import Exposure
from actors.risk.instruments import InstrumentSpec
from actors.risk.limits import StrategyLimits
from actors.risk.liquidation import liquidation_price
from actors.risk.market import MarketView
from actors.risk.states import GLOBAL, TradingState, TradingStates
from actors.risk.throttle import OrderRate
from actors.risk.treasury import Treasury
from actors.risk.verdict import Verdict, amount, approx, money


class Book(Protocol):
    """What the rules read beyond the intent's own strategy: the monitor's shared views."""

    market: MarketView
    states: TradingStates
    exposure: Exposure
    treasury: Treasury
    rates: dict[str, OrderRate]


SNAP = 1e-9  # a position within this fraction of the one before is flat (float noise of sums)


class OrderCheck:
    """One intent's numbers, worked out once for all the rules."""

    __slots__ = ("monitor", "intent", "spec", "account", "limits", "now_ns", "q0", "dq", "q1",
                 "mark", "price", "price_source", "reducing", "_book", "_exposure")

    def __init__(self, monitor: Book, intent: OrderIntent, spec: InstrumentSpec,
                 account: StrategyAccount, limits: StrategyLimits, now_ns: int) -> None:
        self.monitor = monitor
        self.intent = intent
        self.spec = spec
        self.account = account
        self.limits = limits
        self.now_ns = now_ns
        h = account.holdings.get(spec.key)
        q0 = 0.0 if h is None else h.position.size
        market = monitor.market
        mark = market.marks.get(spec.key)
        if intent.limit_price is not None:
            price, source = intent.limit_price, "limit"
        elif intent.reference_price is not None:
            price, source = intent.reference_price, "reference"
        elif mark is not None:
            price, source = mark, "mark"
        else:
            price, source = market.best_mid.get(spec.symbol), "consolidated mid"
        if intent.target == 0.0:
            dq = -q0
        else:
            dq = intent.size if intent.side is Side.BUY else -intent.size
        q1 = q0 + dq
        if q1 != 0.0 and abs(q1) <= SNAP * abs(q0):
            q1 = 0.0
        self.q0, self.dq, self.q1 = q0, dq, q1
        self.price, self.price_source = price, source
        # The position now is valued at its mark (its entry price while there is none).
        self.mark = h.mark() if h is not None and q0 != 0.0 else (price or 0.0)
        self.reducing = abs(q1) <= abs(q0) and q1 * q0 >= 0.0
        self._book: tuple[float, float, float, float, float] | None = None
        self._exposure: tuple[float, float] | None = None

    def book(self) -> tuple[float, float, float, float, float]:
        """The strategy's equity and gross notional, and on the order's venue its equity,
        collateral in use and maintenance margin, at the marks, before the order; worked
        out once, on first need. The loss rules' peak and day see the equity."""
        if self._book is None:
            self._book = self.account.totals(self.spec.venue)
            self.account.observe(self._book[0], self.now_ns)
        return self._book

    def equity(self) -> float:
        return self.book()[0]

    def exposure(self) -> tuple[float, float]:
        """Net and gross of the order's base asset across every strategy and venue."""
        if self._exposure is None:
            self._exposure = self.monitor.exposure.totals(self.spec.base)
        return self._exposure

    def order_text(self) -> str:
        return f"{amount(abs(self.dq))} {self.spec.base} at {amount(self.price)}"

    def position_text(self) -> str:
        return f"{self.spec.key} from {amount(self.q0)} to {amount(self.q1)}"


Rule = Callable[[OrderCheck], "Verdict | None"]


def reject(c: OrderCheck, rule: str, limit: float | None, value: float | None, message: str, **inputs) -> Verdict:
    inputs.setdefault("position", c.q0)
    inputs.setdefault("position_after", c.q1)
    inputs.setdefault("price", c.price)
    inputs.setdefault("price_source", c.price_source)
    return Verdict(False, c.intent, rule, limit, value, f"{rule}: {message}", inputs)


# --- always on ------------------------------------------------------------------------


def trading_state(c: OrderCheck) -> Verdict | None:
    states = c.monitor.states
    if states.active(c.intent.strategy):
        return None
    state, scope, reason = states.effective(c.intent.strategy)
    who = "all trading" if scope == GLOBAL else c.intent.strategy
    because = f" ({reason})" if reason else ""
    if state is TradingState.HALTED:
        return reject(c, "trading_state", None, None, f"{who} is halted{because}; only cancels are accepted",
                      state=state.value, scope=scope, reason=reason)
    if c.reducing:
        return None
    return reject(c, "trading_state", None, None,
                  f"{who} is reducing{because}: only orders that reduce a position are accepted, "
                  f"this one takes {c.position_text()}", state=state.value, scope=scope, reason=reason)


# --- the venue and the intent's own shape -----------------------------------------------


def stale_venue(c: OrderCheck) -> Verdict | None:
    if c.spec.venue not in c.monitor.market.stale:
        return None
    return reject(c, "stale_venue", None, None, f"the MDS calls {c.spec.venue} stale; no new order goes there", venue=c.spec.venue)


def reduce_only(c: OrderCheck) -> Verdict | None:
    if not c.intent.reduce_only or c.reducing:
        return None
    if c.q0 == 0.0:
        why = "there is no position to reduce"
    elif c.q1 * c.q0 < 0.0:
        why = "a flip"
    else:
        why = "an increase"
    return reject(c, "reduce_only", abs(c.q0), abs(c.dq), f"would take {c.position_text()}: {why}")


def spot_inventory(c: OrderCheck) -> Verdict | None:
    if c.spec.perp or c.q1 >= 0.0:
        return None
    return reject(c, "spot_inventory", max(c.q0, 0.0), abs(c.dq),
                  f"selling {amount(abs(c.dq))} {c.spec.base} with {amount(max(c.q0, 0.0))} held on "
                  f"{c.spec.venue} (spot is long only: no borrowing)")


def _off_grid(x: float, step: float) -> tuple[float, float] | None:
    """The grid points either side of ``x`` when it is not on the grid of ``step``."""
    steps = x / step
    if abs(steps - round(steps)) <= 1e-6:
        return None
    return round(math.floor(steps) * step, 12), round(math.ceil(steps) * step, 12)


def tick_size(c: OrderCheck) -> Verdict | None:
    tick = c.spec.tick_size
    p = c.intent.limit_price
    if tick is None or p is None:
        return None
    near = _off_grid(p, tick)
    if near is None:
        return None
    return reject(c, "tick_size", tick, p,
                  f"{amount(p)} is not on {c.spec.key}'s tick of {amount(tick)} ({amount(near[0])} or {amount(near[1])})")


def lot_size(c: OrderCheck) -> Verdict | None:
    lot = c.spec.lot_size
    if lot is None or c.intent.target is not None:  # a target order is sized by the venue client
        return None
    near = _off_grid(c.intent.size, lot)
    if near is None:
        return None
    base = c.spec.base
    return reject(c, "lot_size", lot, c.intent.size,
                  f"{amount(c.intent.size)} {base} is not a multiple of {c.spec.key}'s lot of {amount(lot)} "
                  f"({amount(near[0])} or {amount(near[1])})")


def min_size(c: OrderCheck) -> Verdict | None:
    least = c.spec.min_size
    if least is None or c.intent.target is not None or c.intent.size >= least * (1 - 1e-9):
        return None
    return reject(c, "min_size", least, c.intent.size,
                  f"{amount(c.intent.size)} {c.spec.base} < {amount(least)} on {c.spec.venue}")


def max_size(c: OrderCheck) -> Verdict | None:
    most = c.spec.max_size
    size = abs(c.dq)
    if most is None or size <= most * (1 + 1e-9):
        return None
    return reject(c, "max_size", most, size, f"{amount(size)} {c.spec.base} > {amount(most)} on {c.spec.venue}")


def min_notional(c: OrderCheck) -> Verdict | None:
    least = c.spec.min_notional
    if least is None or c.intent.target is not None:
        return None
    notional = c.intent.size * c.price
    if notional >= least * (1 - 1e-9):
        return None
    return reject(c, "min_notional", least, notional,
                  f"{money(notional)} < {money(least)} on {c.spec.venue} ({c.order_text()})")


def price_band(c: OrderCheck) -> Verdict | None:
    market = c.monitor.market
    ref = market.best_mid.get(c.spec.symbol)
    source = "the consolidated mid"
    if ref is None:
        ref = market.marks.get(c.spec.key)
        source = "the mark"
    band = c.limits.price_band_bps
    if ref is None:
        return reject(c, "price_band", band, None,
                      f"no consolidated mid for {c.spec.symbol} and no mark for {c.spec.key} to compare {amount(c.price)} with")
    bps = abs(c.price - ref) / ref * 1e4
    if bps <= band:
        return None
    return reject(c, "price_band", band, bps,
                  f"{amount(c.price)} is {bps:,.0f} bps from {source} {approx(ref)} > {band:g} bps", reference=ref)


# --- the strategy's book ----------------------------------------------------------------


def max_open_orders(c: OrderCheck) -> Verdict | None:
    n, most = c.account.open_orders, c.limits.max_open_orders
    if n < most:
        return None
    return reject(c, "max_open_orders", most, n, f"{n} open, the limit is {most}")


def daily_loss_limit(c: OrderCheck) -> Verdict | None:
    fraction = c.limits.daily_loss_limit
    if c.reducing or fraction is None:
        return None
    c.equity()  # first: a new UTC day starts from it
    return _loss(c, "daily_loss_limit", daily_loss_floor(c.account, c.limits), fraction,
                 "the UTC day's start", "day_start_equity", c.account.day_start_equity)


def max_drawdown(c: OrderCheck) -> Verdict | None:
    if c.reducing:
        return None
    c.equity()  # first: it moves the peak up
    floor = max(drawdown_floor(c.account, c.limits), 0.0)
    return _loss(c, "max_drawdown", floor, c.limits.max_drawdown, "the peak", "peak_equity", c.account.peak_equity)


def _loss(c: OrderCheck, rule: str, floor: float, fraction: float, what: str, name: str, reference: float) -> Verdict | None:
    equity = c.equity()
    if equity > floor:
        return None
    return reject(c, rule, floor, equity,
                  f"equity {money(equity)} <= {money(floor)}, {fraction:.0%} below {what} of {money(reference)}; "
                  "only orders that reduce are accepted", **{name: reference})


def max_order_notional(c: OrderCheck) -> Verdict | None:
    if c.q1 == 0.0:  # a close to flat is never capped
        return None
    notional = abs(c.dq) * c.price
    most = c.limits.max_order_notional
    if notional <= most:
        return None
    return reject(c, "max_order_notional", most, notional, f"{money(notional)} > {money(most)} ({c.order_text()})")


def max_position_notional(c: OrderCheck) -> Verdict | None:
    after = abs(c.q1) * c.price
    most = c.limits.max_position_notional
    if after <= most or abs(c.q1) <= abs(c.q0):
        return None
    return reject(c, "max_position_notional", most, after,
                  f"{money(after)} > {money(most)} after the order ({amount(abs(c.q1))} {c.spec.base} at "
                  f"{amount(c.price)}; {amount(c.q0)} now)")


def max_leverage(c: OrderCheck) -> Verdict | None:
    equity, before = c.book()[:2]
    after = before - abs(c.q0) * c.mark + abs(c.q1) * c.price
    if after <= before:
        return None
    most = c.limits.max_leverage
    if equity > 0.0 and after <= most * equity:
        return None
    leverage = after / equity if equity > 0.0 else math.inf
    return reject(c, "max_leverage", most, leverage,
                  f"{leverage:.2f}x > {most:g}x (gross {money(after)} / equity {money(equity)} after the order)",
                  gross_notional=after, equity=equity)


def free_collateral(c: OrderCheck) -> Verdict | None:
    spec, acct = c.spec, c.account
    ratio = spec.usage_ratio
    _, _, equity, before, _ = c.book()
    after = before - abs(c.q0) * c.mark * ratio + abs(c.q1) * c.price * ratio
    if after <= before or after <= equity:
        return None
    what = f"initial margin (IMR {ratio:g})" if spec.perp else "spot held"
    note = "" if acct.allocations.get(spec.venue) else f"; {acct.strategy} has no allocation on {spec.venue}"
    return reject(c, "free_collateral", equity, after,
                  f"{what} {money(after)} > equity {money(equity)} on {spec.venue} after the order ({c.order_text()}{note})",
                  venue=spec.venue, usage_before=before)


def liquidation_buffer(c: OrderCheck) -> Verdict | None:
    spec = c.spec
    if not spec.perp:
        return None
    mmr = spec.maintenance_ratio
    _, _, venue_equity, _, before = c.book()
    mm_other = before - abs(c.q0) * c.mark * mmr
    after = mm_other + abs(c.q1) * c.price * mmr
    if after <= before:
        return None
    scale = 1.0 + c.limits.liquidation_buffer
    equity = venue_equity + c.q0 * (c.price - c.mark)
    if equity > scale * after:
        return None
    other = equity - c.q1 * c.price
    liq = liquidation_price(c.q1, mmr, other, mm_other)
    at = liquidation_price(c.q1, mmr * scale, other, mm_other * scale)
    return reject(c, "liquidation_buffer", scale * after, equity,
                  f"equity {money(equity)} <= {scale:g} x maintenance {money(after)} on {spec.venue} after the order: "
                  f"{spec.key} would auto-close at {approx(at)} (liquidation {approx(liq)}) with the price at {amount(c.price)}",
                  venue=spec.venue, maintenance=after, liquidation_price=liq, auto_close_price=at)


# --- the firm's book: exposure and the treasury ------------------------------------------


def net_exposure(c: OrderCheck) -> Verdict | None:
    exposure = c.monitor.exposure
    asset = c.spec.base
    most = exposure.max_net.get(asset)
    if most is None:
        return None
    before = c.exposure()[0]
    after = before - c.q0 * c.mark + c.q1 * c.price
    if abs(after) <= most or abs(after) <= abs(before):
        return None
    return reject(c, "net_exposure", most, after,
                  f"{asset} net {money(after)} is past ±{money(most)} across venues after the order (now {money(before)})",
                  asset=asset, net_before=before)


def gross_exposure(c: OrderCheck) -> Verdict | None:
    exposure = c.monitor.exposure
    asset = c.spec.base
    most = exposure.max_gross.get(asset)
    if most is None:
        return None
    before = c.exposure()[1]
    after = before - abs(c.q0) * c.mark + abs(c.q1) * c.price
    if after <= most or after <= before:
        return None
    return reject(c, "gross_exposure", most, after,
                  f"{asset} gross {money(after)} > {money(most)} across venues after the order (now {money(before)})",
                  asset=asset, gross_before=before)


def treasury(c: OrderCheck) -> Verdict | None:
    spec = c.spec
    t = c.monitor.treasury
    balance = t.balance(spec.venue)
    if balance is None:
        return reject(c, "treasury", None, None, f"the treasury has no account on {spec.venue} (risk.yaml treasury)", venue=spec.venue)
    ratio = spec.usage_ratio
    before = t.usage(spec.venue)
    after = before - abs(c.q0) * c.mark * ratio + abs(c.q1) * c.price * ratio
    if after <= balance or after <= before:
        return None
    return reject(c, "treasury", balance, after,
                  f"{money(after)} in use on {spec.venue} after the order > the treasury's balance of {money(balance)} "
                  f"(now {money(before)}, all strategies)", venue=spec.venue, usage_before=before)


def max_orders_per_s(c: OrderCheck) -> Verdict | None:
    rate = c.monitor.rates[c.intent.strategy]
    if not rate.full(c.now_ns):
        return None
    return reject(c, "max_orders_per_s", rate.limit, rate.recent(c.now_ns),
                  f"{rate.limit} orders accepted in the last 1 s, the limit")


RULES: tuple[tuple[str, Rule], ...] = (
    ("stale_venue", stale_venue),
    ("reduce_only", reduce_only),
    ("spot_inventory", spot_inventory),
    ("tick_size", tick_size),
    ("lot_size", lot_size),
    ("min_size", min_size),
    ("max_size", max_size),
    ("min_notional", min_notional),
    ("price_band", price_band),
    ("max_open_orders", max_open_orders),
    ("daily_loss_limit", daily_loss_limit),
    ("max_drawdown", max_drawdown),
    ("max_order_notional", max_order_notional),
    ("max_position_notional", max_position_notional),
    ("max_leverage", max_leverage),
    ("free_collateral", free_collateral),
    ("liquidation_buffer", liquidation_buffer),
    ("net_exposure", net_exposure),
    ("gross_exposure", gross_exposure),
    ("treasury", treasury),
    ("max_orders_per_s", max_orders_per_s),
)


def applies(name: str, spec: InstrumentSpec, exposure: Exposure) -> bool:
    """Whether rule ``name`` can refuse anything on ``spec``: a listing without a tick has no
    tick rule, a perp no spot inventory, spot no liquidation, an asset without an exposure
    limit no exposure rule. Leaving those out of the tuple saves their calls."""
    if name == "spot_inventory":
        return not spec.perp
    if name == "liquidation_buffer":
        return spec.perp
    if name in ("tick_size", "lot_size", "min_size", "max_size", "min_notional"):
        return getattr(spec, name) is not None
    if name == "net_exposure":
        return spec.base in exposure.max_net
    if name == "gross_exposure":
        return spec.base in exposure.max_gross
    return True


def rules_for(limits: StrategyLimits, spec: InstrumentSpec, exposure: Exposure) -> tuple[Rule, ...]:
    """The rules a strategy's intents on ``spec`` run through, in ``RULES`` order: those
    switched on that can apply; the trading state always comes first."""
    return (trading_state, *(rule for name, rule in RULES if name in limits.checks and applies(name, spec, exposure)))
