"""The paper venue: orders filled by the simulator, stepped one closed bar at a time.

``SimVenue`` holds one ``sim.paper.PaperAccount`` per strategy (its legs are the strategy's
instruments) and is a ``VenueClient`` for every venue those legs are on. It takes the
market's closed bars (``on_bar``) and the strategy's orders (``submit``), and steps an
account's bar only when the Execution Server says the strategy has decided on it
(``close_bar``: the per-bar watermark that comes through risk and execution after that
bar's intents). So at any replay speed each bar is stepped exactly once, with exactly the
decisions the strategy made at its close, and paper fills what the backtest fills.

How orders meet the kernel:

* a target order decided at a bar's close (``decision_ts_ns`` = the close) becomes that
  bar's target for its leg, the way the backtest's target array does; an order decided
  inside a bar (a protective close) waits for the next close. A reduce-only quantity order
  for the whole position is a target of 0; anything else is refused (the kernel trades to
  targets: limit orders and partial quantities are for the live venues);
* it is acknowledged on receipt; the kernel then fills it (at the next open, moved by the
  latency, or at the close with ``fill_price: close``), or, when the kernel's sizing leaves
  nothing to trade (the target equals what it already holds, a size below the lot, the
  kill switch has fired), the venue expires it and says why;
* exits the kernel makes by itself (trailing stop, auto-close, liquidation, kill switch)
  are fills of venue-originated orders, reported with them (``StepReport.venue_orders``)
  so that the journal holds every fill under an order;
* funding the kernel settled on a leg in a step is reported per leg.

Fill ids are ``{run}-{strategy}-{bar}-{n}``, the same however often a bar's
report is re-read, so a re-delivered fill is a no-op in the journal. Fill times are the
bar's open (plus the latency) for fills at the open, its close for fills at the close and
for intrabar exits (the bar says which price was reached, not when).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from actors.execution.venue import (
    VenueBalance,
    VenueClient,
    VenueOrderReport,
    VenuePosition,
    VenueRejected,
)
from cluster.domain import Fill, FillReason, OrderType, Side
from cluster.orders import Accepted, Canceled, Expired, Order, OrderEvent, Route, client_order_id
from sim import kernel as k
from sim.backtest import BacktestResult
from sim.paper import PaperAccount, PaperFill
from sim.settings import SimSettings
from strategies.stream import LegBar

_REL = 1e-9


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one stepped bar did to a strategy's account."""

    strategy: str
    bar: int
    ts_ns: int  # the bar's open
    close_ts_ns: int
    equity: float
    cash: float
    events: tuple[OrderEvent, ...]  # for orders the strategy sent (acks came at submit)
    venue_orders: tuple[tuple[Order, tuple[Fill, ...]], ...]  # exits the kernel made itself
    funding: tuple[tuple[str, float], ...]  # (instrument, amount paid; < 0 received)
    positions: tuple[float, ...]  # base units per leg after the bar


@dataclass
class _Account:
    strategy: str
    legs: tuple[str, ...]
    paper: PaperAccount
    bar_ns: int
    lat_ns: int
    next_open: bool
    bars: dict[int, dict[int, LegBar]] = field(default_factory=dict)  # bar open ts -> leg -> bar
    waiting: dict[int, dict[int, Order]] = field(default_factory=dict)  # decision ts -> leg -> order
    working: dict[int, Order] = field(default_factory=dict)  # leg -> order the kernel holds as pending
    last_close_ns: int = -1  # close time of the last bar stepped
    reports: list[StepReport] = field(default_factory=list)
    rebalances: list = field(default_factory=list)  # venue orders of the step being built


class SimVenue(VenueClient):
    def __init__(self, run_id: str, venues: Sequence[str]) -> None:
        self.run_id = run_id
        self.venues = frozenset(venues)
        self._accounts: dict[str, _Account] = {}
        self._orders: dict[str, VenueOrderReport] = {}
        self._fills: list[Fill] = []
        self._ids = itertools.count(1)

    # --- set-up and market ------------------------------------------------------------

    def open_account(self, strategy: str, legs: Sequence[str], settings: SimSettings, bar_seconds: float) -> None:
        if strategy in self._accounts:
            raise ValueError(f"the paper venue has an account for {strategy} already")
        if [leg.key for leg in settings.legs] != list(legs):
            raise ValueError(f"settings for {[leg.key for leg in settings.legs]} do not describe the legs {list(legs)}")
        foreign = sorted({key.partition(":")[0] for key in legs} - self.venues)
        if foreign:
            raise ValueError(f"{strategy}: the paper venue does not stand in for {', '.join(foreign)}")
        paper = PaperAccount(settings, bar_seconds)
        bar_ns = int(bar_seconds * 1e9)
        self._accounts[strategy] = _Account(
            strategy, tuple(legs), paper, bar_ns, int(settings.latency_ms * 1e6), settings.fill_price == "next_open"
        )

    async def on_bar(self, instrument: str, ts_ns: int, bar: LegBar) -> None:
        """A closed bar of ``instrument`` opening at ``ts_ns``, for every account trading it."""
        for acct in self._accounts.values():
            if instrument in acct.legs and ts_ns + acct.bar_ns > acct.last_close_ns:
                acct.bars.setdefault(ts_ns, {})[acct.legs.index(instrument)] = bar

    async def on_bars(self, instruments: Sequence[str], ts_ns: int, bars: Sequence[LegBar]) -> None:
        """``on_bar`` for each of ``instruments`` (one call for a strategy's legs)."""
        for instrument, bar in zip(instruments, bars, strict=True):
            await self.on_bar(instrument, ts_ns, bar)

    async def step(self, strategy: str, instruments: Sequence[str], ts_ns: int, bars: Sequence[LegBar],
                   close_ts_ns: int) -> list[StepReport]:  # fmt: skip
        """``on_bars`` then ``close_bar``: one call for a bar the strategy has decided on."""
        await self.on_bars(instruments, ts_ns, bars)
        return await self.close_bar(strategy, close_ts_ns)

    async def close_bar(self, strategy: str, close_ts_ns: int) -> list[StepReport]:
        """The strategy has decided on every bar closing at or before ``close_ts_ns``:
        step those whose legs have all arrived, oldest first."""
        acct = self._account(strategy)
        out = []
        for ts in sorted(t for t in acct.bars if t + acct.bar_ns <= close_ts_ns):
            legs = acct.bars[ts]
            if len(legs) < len(acct.legs):
                missing = [acct.legs[l] for l in range(len(acct.legs)) if l not in legs]
                raise ValueError(f"{strategy}: the bar at {ts} ns has no {', '.join(missing)} bar to step with")
            out.append(self._step(acct, ts, [legs[l] for l in range(len(acct.legs))]))
            del acct.bars[ts]
        return out

    # --- VenueClient --------------------------------------------------------------------

    async def submit(self, order: Order) -> list[OrderEvent]:
        acct = self._accounts.get(order.strategy)
        if acct is None:
            raise VenueRejected(f"no paper account for strategy {order.strategy}")
        if order.instrument not in acct.legs:
            raise VenueRejected(f"{order.instrument} is not one of {order.strategy}'s legs ({', '.join(acct.legs)})")
        if order.client_order_id in self._orders:
            return []  # a retried submit: the venue dedups on the client order id
        leg = acct.legs.index(order.instrument)
        if order.order_type is not OrderType.MARKET:
            raise VenueRejected("the paper venue fills market orders (target or whole-position closes) only")
        if not order.is_target:
            held = acct.paper.S[leg, 0] if acct.paper.S is not None else 0.0
            closes = order.reduce_only and held != 0.0 and math.isclose(order.quantity, abs(held), rel_tol=_REL)
            if not closes or (order.side is Side.BUY) != (held < 0):
                raise VenueRejected(
                    f"the paper venue trades to targets: a quantity order must close the whole position "
                    f"({held:+g} held), reduce-only"
                )
        self._check_in_time(acct, order.decision_ts_ns)
        waiting = acct.waiting.setdefault(order.decision_ts_ns, {})
        earlier = waiting.get(leg)
        waiting[leg] = order
        venue_order_id = f"sim-{next(self._ids)}"
        self._orders[order.client_order_id] = VenueOrderReport(order.client_order_id, venue_order_id, "open",
                                                               order.quantity, 0.0)  # fmt: skip
        events: list[OrderEvent] = []
        if earlier is not None:  # two orders for one leg at one close: the later one stands
            events.append(self._cancel(earlier, order.decision_ts_ns, "replaced by a later order for the same bar"))
        events.append(Accepted(order.client_order_id, order.decision_ts_ns, venue_order_id))
        return events

    async def cancel(self, order: Order) -> list[OrderEvent]:
        acct = self._account(order.strategy)
        for orders in acct.waiting.values():
            for leg, waiting in list(orders.items()):
                if waiting.client_order_id == order.client_order_id:
                    del orders[leg]
                    return [self._cancel(order, order.decision_ts_ns, "canceled before its bar closed")]
        raise VenueRejected("too late to cancel: the kernel has taken the order (market orders fill at the next step)")

    async def modify(self, order: Order, quantity: float | None, limit_price: float | None) -> list[OrderEvent]:
        raise VenueRejected("the paper venue fills market orders, which cannot be modified")

    async def order_status(self, client_order_id: str) -> VenueOrderReport | None:
        return self._orders.get(client_order_id)

    async def fills_since(self, seq: int) -> tuple[list[Fill], int]:
        return list(self._fills[seq:]), len(self._fills)

    async def positions(self) -> list[VenuePosition]:
        out = []
        for acct in self._accounts.values():
            if acct.paper.S is None:
                continue
            for l, key in enumerate(acct.legs):
                out.append(VenuePosition(key, float(acct.paper.S[l, 0]), acct.strategy))
        return out

    async def balances(self) -> list[VenueBalance]:
        out = []
        for acct in self._accounts.values():
            if acct.paper.st is None:
                cash = acct.paper.settings.initial_cash
                out.append(VenueBalance("sim", acct.strategy, cash, cash))
            else:
                out.append(VenueBalance("sim", acct.strategy, float(acct.paper.st[k.ST_EQUITY]), float(acct.paper.st[k.ST_CASH])))
        return out

    def has_account(self, strategy: str) -> bool:
        return strategy in self._accounts

    def accounts(self) -> list[str]:
        return sorted(self._accounts)

    def finish(self, strategy: str, impl) -> BacktestResult:
        """End ``strategy``'s account: the backtest's result over the bars stepped."""
        return self._account(strategy).paper.finish(impl)

    def reports(self, strategy: str) -> list[StepReport]:
        """Every step's report since the account opened."""
        return list(self._account(strategy).reports)

    # --- stepping -----------------------------------------------------------------------

    def _account(self, strategy: str) -> _Account:
        acct = self._accounts.get(strategy)
        if acct is None:
            raise KeyError(f"no paper account for strategy {strategy}")
        return acct

    def _check_in_time(self, acct: _Account, decision_ts_ns: int) -> None:
        if decision_ts_ns <= acct.last_close_ns:
            raise VenueRejected(
                f"decided at {decision_ts_ns} ns, but the bar closing at {acct.last_close_ns} ns has been stepped: "
                "an order reaches the kernel at a close that is still to come"
            )

    def _step(self, acct: _Account, ts_ns: int, bars: list[LegBar]) -> StepReport:
        close_ns = ts_ns + acct.bar_ns
        # every order decided since the last close is this bar's (bars need not sit on a
        # grid: the funding series' hourly bars open a few seconds late at times)
        decided: dict[int, Order] = {}
        events: list[OrderEvent] = []
        for decision_ts in sorted(t for t in acct.waiting if t <= close_ns):
            for leg, order in acct.waiting.pop(decision_ts).items():
                earlier = decided.get(leg)
                if earlier is not None:  # the kernel takes one target per leg and bar: the later one stands
                    events.append(self._cancel(earlier, close_ns, "replaced by a later order for the same bar"))
                decided[leg] = order
        target = np.full(len(acct.legs), np.nan)
        for leg, order in decided.items():
            target[leg] = order.target if order.is_target else 0.0
        paper = acct.paper
        result = paper.step(ts_ns, bars, target)
        if not acct.next_open:  # filled at this close: the orders are the kernel's now
            for leg, order in decided.items():
                self._take(acct, leg, order, close_ns, events)
        by_leg: dict[int, list[tuple[int, PaperFill]]] = {}
        venue_fills: dict[tuple[int, str], list[tuple[int, PaperFill]]] = {}
        for n, f in enumerate(result.fills):
            if f.reason == "signal" and f.leg in acct.working:
                by_leg.setdefault(f.leg, []).append((n, f))
            else:
                venue_fills.setdefault((f.leg, f.reason), []).append((n, f))
        for leg, fills in by_leg.items():
            order = acct.working.pop(leg)
            events.extend(self._fills_of(acct, order, fills, result.bar, ts_ns, close_ns))
        pending = paper.S[:, k.S_PENDING_BAR]
        killed = paper.st[k.ST_KILLED] != 0.0
        for leg in list(acct.working):  # its fill bar passed and the kernel traded nothing
            if pending[leg] < 0 or killed:
                order = acct.working.pop(leg)
                events.append(self._expire(order, close_ns, "nothing to trade at the venue's sizing"))
        if acct.next_open:  # decided at this close, filled at a later open
            for leg, order in decided.items():
                self._take(acct, leg, order, close_ns, events)
                if pending[leg] < 0:  # the kernel saw no change, or trades no more
                    acct.working.pop(leg)
                    why = "the kill switch has fired" if paper.st[k.ST_KILLED] else "nothing to trade at the venue's sizing"
                    events.append(self._expire(order, close_ns, why))
        venue_orders = tuple(acct.rebalances) + tuple(
            self._venue_order(acct, leg, reason, fills, result.bar, ts_ns, close_ns)
            for (leg, reason), fills in venue_fills.items()
        )
        acct.rebalances.clear()
        funding = tuple((acct.legs[l], float(paper.S[l, k.S_FUND_STEP])) for l in range(len(acct.legs))
                        if paper.S[l, k.S_FUND_STEP] != 0.0)  # fmt: skip
        acct.last_close_ns = close_ns
        report = StepReport(acct.strategy, result.bar, ts_ns, close_ns, result.equity, float(paper.st[k.ST_CASH]),
                            tuple(events), venue_orders, funding, result.positions)  # fmt: skip
        acct.reports.append(report)
        return report

    def _take(self, acct: _Account, leg: int, order: Order, close_ns: int, events: list[OrderEvent]) -> None:
        earlier = acct.working.get(leg)
        if earlier is not None:  # the kernel holds one pending order per leg: the newer replaces it
            events.append(self._cancel(earlier, close_ns, "replaced by a later decision before it filled"))
        acct.working[leg] = order

    def _cancel(self, order: Order, ts_ns: int, why: str) -> Canceled:
        self._end(order.client_order_id, "canceled", why)
        return Canceled(order.client_order_id, ts_ns, why)

    def _expire(self, order: Order, ts_ns: int, why: str) -> Expired:
        self._end(order.client_order_id, "expired", why)
        return Expired(order.client_order_id, ts_ns, why)

    def _end(self, client_order_id: str, status: str, reason: str, filled: float = 0.0, quantity: float | None = None) -> None:
        old = self._orders[client_order_id]
        self._orders[client_order_id] = VenueOrderReport(client_order_id, old.venue_order_id, status,
                                                         quantity if quantity is not None else old.quantity,
                                                         filled, reason)  # fmt: skip

    def _fill_time(self, acct: _Account, reason: str, ts_ns: int, close_ns: int) -> int:
        if reason == "signal" and acct.next_open:
            return ts_ns + min(acct.lat_ns % acct.bar_ns if acct.bar_ns else 0, acct.bar_ns - 1)
        return close_ns

    def _make_fills(self, acct, client_id: str, fills, bar: int, ts_ns: int, close_ns: int):
        total = sum(abs(f.qty) for _, f in fills)
        done = 0.0
        out = []
        for n, f in fills:
            done += abs(f.qty)
            key = acct.legs[f.leg]
            out.append(Fill(
                client_order_id=client_id, venue=key.partition(":")[0], venue_fill_id=f"{self.run_id}-{acct.strategy}-{bar}-{n}",
                ts_ns=self._fill_time(acct, f.reason, ts_ns, close_ns), instrument=key,
                side=Side.BUY if f.qty > 0 else Side.SELL, qty=abs(f.qty), price=f.price, fee=f.fee,
                reason=FillReason(f.reason), leaves_qty=max(total - done, 0.0),
            ))  # fmt: skip
        self._fills.extend(out)
        return out, total

    def _fills_of(self, acct: _Account, order: Order, fills, bar: int, ts_ns: int, close_ns: int) -> list[OrderEvent]:
        if {f.qty > 0 for _, f in fills} != {order.side is Side.BUY}:
            # The kernel sized the target against the position it holds, which the
            # strategy's view (one step behind: a stop in the bar it decided on) did not
            # know: the order expires and the trade is the venue's, so the journal keeps it.
            why = "the venue's position differed from the strategy's view: it traded the other way"
            events: list[OrderEvent] = [self._expire(order, close_ns, why)]
            acct.rebalances.append(self._venue_order(acct, fills[0][1].leg, "signal", fills, bar, ts_ns, close_ns))
            return events
        out, total = self._make_fills(acct, order.client_order_id, fills, bar, ts_ns, close_ns)
        self._end(order.client_order_id, "filled", None, filled=total, quantity=total)
        return out

    def _venue_order(self, acct: _Account, leg: int, reason: str, fills, bar: int, ts_ns: int, close_ns: int):
        qty = sum(f.qty for _, f in fills)
        side = Side.BUY if qty > 0 else Side.SELL
        cid = client_order_id(self.run_id, f"{acct.strategy}#venue:{reason}", close_ns, leg, 0)
        key = acct.legs[leg]
        order = Order(
            client_order_id=cid, run_id=self.run_id, strategy=acct.strategy, venue=key.partition(":")[0],
            instrument=key, side=side, quantity=sum(abs(f.qty) for _, f in fills), reduce_only=True,
            decision_ts_ns=close_ns, route=Route.FIXED, reason=f"venue: {reason}",
        )  # fmt: skip
        self._orders[cid] = VenueOrderReport(cid, f"sim-{next(self._ids)}", "open", order.quantity, 0.0)
        out, total = self._make_fills(acct, cid, fills, bar, ts_ns, close_ns)
        self._end(cid, "filled", reason, filled=total, quantity=total)
        return order, tuple(out)
