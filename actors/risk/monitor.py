"""The Risk Rules Monitor's logic: pre-trade checks, trading states and the continuous
checks, with no Ray and no I/O, so that tests and benchmarks drive it directly; the risk
actor hosts it, journals what it returns and carries out the actions in it.

What the actor feeds in, and when:

* ``check(intent)`` for every order intent before any venue sees it, ``check_cancel`` for a
  cancel (always accepted). An accepted intent counts as an open order of its strategy and
  takes a slot of its order rate; ``order_closed(strategy)`` when that order is done
  (filled, cancelled, rejected, expired), ``set_open_orders`` to reconcile the count;
* ``on_mark(instrument, price)`` for each mark or oracle price (a mid where a venue has
  neither), ``on_best(symbol, bid, ask)`` for each consolidated best-price change, and
  ``set_stale_venues`` whenever the MDS's list of stale venues changes;
* ``on_fill(strategy, fill)`` for each fill of a strategy's orders (the monitor's own
  closes too), ``on_funding(funding)`` for each settlement, ``on_bar(bar)`` for each closed
  bar of an instrument a strategy holds (the trailing stops' volatility and moves);
* ``set_treasury_balance(venue, balance)`` when a venue reports its balance;
* ``halt`` / ``reduce`` / ``resume`` from an operator.

``on_mark``, ``on_fill``, ``on_funding`` and ``on_bar`` return the events of the continuous
checks (``Transition``, ``AutoClose``, ``StopHit``, ``StopMoved``), each with the actions
to carry out; ``halt``, ``reduce`` and ``resume`` return their ``Transition``. A close the
monitor asked for is not asked again on the next mark: a fill in the instrument, or
``close_failed``, makes it look afresh.

Time comes from ``clock`` (int ns since the epoch, UTC; wall time by default): a paper or
replay session passes its event clock, so that the rate throttle and the UTC day follow
the replayed time. The monitor is single-threaded: one call at a time.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable

from cluster.config import BotmainConfig
from cluster.domain import Bar, Fill, FundingRate, OrderIntent

from actors.risk.account import Holding, PositionIndex, StrategyAccount
from actors.risk.continuous import Breach, auto_close, breach, close_of
from actors.risk.events import AutoClose, CancelOpenOrders, StopHit, StopMoved
from actors.risk.exposure import AssetExposure, Exposure
from actors.risk.instruments import InstrumentSpec, instrument_specs
from actors.risk.limits import StrategyLimits
from actors.risk.market import MarketView
from actors.risk.rules import OrderCheck, Rule, rules_for
from actors.risk.states import GLOBAL, TradingState, TradingStates, Transition
from actors.risk.stops import ReturnVolatility, TrailingStop
from actors.risk.throttle import OrderRate
from actors.risk.treasury import Treasury, TreasurySummary
from actors.risk.verdict import Verdict

Event = Transition | AutoClose | StopHit | StopMoved

BREACHES = frozenset({"equity_wiped", "max_drawdown", "daily_loss_limit"})


class RiskMonitor:
    def __init__(self, config: BotmainConfig, *, clock: Callable[[], int] = time.time_ns) -> None:
        risk = config.risk
        self._clock = clock
        now = clock()
        self.specs: dict[str, InstrumentSpec] = instrument_specs(config)
        self.market = MarketView()
        self._index = PositionIndex()
        names = [s.name for s in config.strategies.strategies]
        self._disabled_strategies = frozenset(s.name for s in config.strategies.strategies if not s.enabled)
        self._disabled_venues = frozenset(risk.disabled_venues)
        self.limits: dict[str, StrategyLimits] = {n: StrategyLimits.from_limits(risk.limits_for(n)) for n in names}
        self.accounts: dict[str, StrategyAccount] = {
            n: StrategyAccount(n, risk.allocations.get(n, {}), self.market.marks, self._index, now) for n in names
        }
        self.rates: dict[str, OrderRate] = {n: OrderRate(lim.max_orders_per_s) for n, lim in self.limits.items()}
        self.states = TradingStates(names)
        self.exposure = Exposure(risk.exposure, self._index, self.market.marks)
        # per strategy and instrument: the rules switched on that can apply there
        self.rules: dict[tuple[str, str], tuple[Rule, ...]] = {
            (n, key): rules_for(lim, spec, self.exposure) for n, lim in self.limits.items() for key, spec in self.specs.items()
        }
        self.treasury = Treasury({v: a.balance for v, a in risk.treasury.items()}, risk.allocations,
                                 self.specs.values(), self._index)
        self._stop_windows = sorted({lim.stop_window for lim in self.limits.values() if lim.stop_multiple is not None})
        self._vols: dict[tuple[str, int], ReturnVolatility] = {}
        self._stops: dict[tuple[str, str], TrailingStop] = {}

    # --- pre-trade -------------------------------------------------------------------

    def check(self, intent: OrderIntent) -> Verdict:
        """Accept or refuse ``intent``; the first rule it breaks refuses it."""
        name = intent.strategy
        account = self.accounts.get(name)
        if account is None or name in self._disabled_strategies:
            return self._refuse_strategy(intent)
        spec = self.specs.get(intent.instrument)
        if spec is None or spec.venue in self._disabled_venues:
            return self._refuse_instrument(intent, spec)
        c = OrderCheck(self, intent, spec, account, self.limits[name], self._clock())
        if c.price is None:
            return Verdict(False, intent, "price", None, None,
                           f"price: no price to judge {intent.instrument} at: a market order without a reference_price, "
                           f"no mark and no consolidated mid for {spec.symbol}")
        for rule in self.rules[(name, spec.key)]:
            verdict = rule(c)
            if verdict is not None:
                return verdict
        account.open_orders += 1
        self.rates[name].record(c.now_ns)
        return Verdict(True, intent)

    def check_cancel(self, strategy: str, order_id: str | None = None) -> Verdict:
        """Cancels are always allowed, whatever the state or the rules."""
        return Verdict(True, None, message="cancel", inputs={"strategy": strategy, "order_id": order_id})

    def _refuse_strategy(self, intent: OrderIntent) -> Verdict:
        if intent.strategy in self._disabled_strategies:
            why = f"{intent.strategy!r} is disabled in strategies.yaml"
        else:
            why = f"{intent.strategy!r} is not in strategies.yaml"
        return Verdict(False, intent, "strategy", None, None, f"strategy: {why}")

    def _refuse_instrument(self, intent: OrderIntent, spec: InstrumentSpec | None) -> Verdict:
        if spec is None:
            why = f"{intent.instrument!r} is not listed in venues.yaml"
        else:
            why = f"{spec.venue} is disabled (risk.yaml disabled_venues)"
        return Verdict(False, intent, "instrument", None, None, f"instrument: {why}")

    # --- what the actor tells it -----------------------------------------------------

    def order_closed(self, strategy: str) -> None:
        """An order ``check`` accepted is done: filled, cancelled, rejected or expired."""
        acct = self._account(strategy)
        acct.open_orders = max(acct.open_orders - 1, 0)

    def set_open_orders(self, strategy: str, count: int) -> None:
        """What the Execution Server counts (after a restart, a reconciliation)."""
        if count < 0:
            raise ValueError(f"open order count must be >= 0, got {count}")
        self._account(strategy).open_orders = count

    def close_failed(self, strategy: str, instrument: str) -> None:
        """A close the monitor asked for ended without closing (rejected, expired): the
        next mark asks again if it is still needed."""
        h = self._account(strategy).holdings.get(instrument)
        if h is not None:
            h.closing = False

    def set_stale_venues(self, venues: Iterable[str]) -> None:
        self.market.set_stale(venues)

    def set_treasury_balance(self, venue: str, balance: float) -> None:
        self.treasury.set_balance(venue, balance)

    def on_best(self, symbol: str, bid: float | None, ask: float | None) -> None:
        self.market.set_best(symbol, bid, ask)

    def on_mark(self, instrument: str, price: float) -> list[Event]:
        """A new mark: the stops, then each holder's loss rules and auto-close on its venue."""
        self.market.set_mark(instrument, price)
        holdings = self._index.by_instrument.get(instrument)
        if not holdings:
            return []
        now = self._clock()
        events: list[Event] = []
        held = []
        for h in holdings:
            if h.position.size == 0.0:
                continue
            held.append(h)
            stop = self._stops.get((h.strategy, instrument))
            if stop is not None and not h.closing and stop.reached(price, price):
                events.append(self._stop_hit(h, stop, price, now))
        for h in held:
            events.extend(self._evaluate(self.accounts[h.strategy], h.spec.venue, now))
        return events

    def on_fill(self, strategy: str, fill: Fill) -> list[Event]:
        acct = self._account(strategy)
        spec = self._spec(fill.instrument)
        before = acct.size(spec.key)
        acct.apply_fill(spec, fill)
        now = self._clock()
        events: list[Event] = self._restop(acct.holdings[spec.key], before, fill.price, now)
        events.extend(self._evaluate(acct, spec.venue, now))
        return events

    def on_funding(self, funding: FundingRate) -> list[Event]:
        """Charge a settlement to every holder, at the settlement's mark (else the monitor's)."""
        holdings = self._index.by_instrument.get(funding.instrument, ())
        now = self._clock()
        events: list[Event] = []
        for h in holdings:
            if h.position.size == 0.0:
                continue
            acct = self.accounts[h.strategy]
            acct.apply_funding(funding, funding.mark_price or h.mark())
            events.extend(self._evaluate(acct, h.spec.venue, now))
        return events

    def on_bar(self, bar: Bar) -> list[Event]:
        """A closed bar: a stop its low (long) or high (short) reached fires; the others
        tighten on its close with the volatility up to the bar before; then the bar's
        return joins the volatility."""
        key = bar.instrument
        now = self._clock()
        events: list[Event] = []
        for h in self._index.by_instrument.get(key, ()):
            stop = self._stops.get((h.strategy, key))
            if stop is None or h.position.size == 0.0 or h.closing:
                continue
            if stop.reached(bar.low, bar.high):
                price = min(bar.open, stop.level) if stop.side > 0 else max(bar.open, stop.level)
                events.append(self._stop_hit(h, stop, price, now))
                continue
            lim = self.limits[h.strategy]
            sigma = self._sigma(key, lim.stop_window)
            previous = stop.level
            if stop.tighten(bar.close, sigma, lim.stop_multiple):
                events.append(StopMoved(h.strategy, key, now, stop.level, None if math.isnan(previous) else previous,
                                        bar.close, sigma, lim.stop_multiple))
        for window in self._stop_windows:
            vol = self._vols.get((key, window))
            if vol is None:
                vol = self._vols[(key, window)] = ReturnVolatility(window)
            vol.update(bar.close)
        return events

    # --- trading states --------------------------------------------------------------

    def state(self, strategy: str) -> TradingState:
        """The state ``strategy`` trades in (the stricter of its own and the global one)."""
        self._account(strategy)
        return self.states.effective(strategy)[0]

    def halt(self, reason: str, strategy: str | None = None) -> Transition:
        """Nothing new for ``strategy`` (None: for every strategy); its open orders are to be
        cancelled, its positions stay."""
        return self._manual(TradingState.HALTED, reason, strategy)

    def reduce(self, reason: str, strategy: str | None = None) -> Transition:
        """Only orders that reduce; open orders are to be cancelled (reducing ones may be
        placed again)."""
        return self._manual(TradingState.REDUCING, reason, strategy)

    def resume(self, reason: str, strategy: str | None = None) -> Transition:
        """Back to ACTIVE. A strategy that a loss rule stopped has its peak and its day's
        start re-based at its equity now: the loss already taken would trip the rule again
        at the next mark otherwise."""
        scope = GLOBAL if strategy is None else strategy
        inputs: dict[str, Any] = {}
        if strategy is not None:
            acct = self._account(strategy)
            if self.states.cause(strategy) in BREACHES:
                equity = acct.equity()
                inputs = {"equity": equity, "peak_equity_before": acct.peak_equity,
                          "day_start_equity_before": acct.day_start_equity}
                acct.rebase(equity, self._clock())
        return self.states.move(scope, TradingState.ACTIVE, "manual", reason, self._clock(), inputs)

    def _manual(self, state: TradingState, reason: str, strategy: str | None) -> Transition:
        if strategy is not None:
            self._account(strategy)
        scope = GLOBAL if strategy is None else strategy
        actions = (CancelOpenOrders(strategy, f"{state.value}: {reason}"),)
        return self.states.move(scope, state, "manual", reason, self._clock(), actions=actions)

    # --- reports ---------------------------------------------------------------------

    def summary(self) -> TreasurySummary:
        """Per strategy and venue: allocation, equity, usage, PnL; per venue: the
        treasury's balance, allocated, in use and free (``botmain positions``)."""
        return self.treasury.summary(self.accounts.values())

    def exposures(self) -> list[AssetExposure]:
        return self.exposure.summary()

    def stop_level(self, strategy: str, instrument: str) -> float | None:
        stop = self._stops.get((strategy, instrument))
        return None if stop is None or math.isnan(stop.level) else stop.level

    # --- a restart ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What a restarted monitor needs to carry on, as JSON-able data: the trading
        states, each strategy's positions, open orders, peak and day, the recent accepts of
        its order rate, the stops and the volatility behind them, the treasury's balances.
        Not the market: marks, mids and stale venues come again from the MDS."""
        return {
            "states": self.states.as_dict(),
            "accounts": {
                name: {
                    "open_orders": acct.open_orders,
                    "peak_equity": acct.peak_equity,
                    "day_start_equity": acct.day_start_equity,
                    "day": acct.day,
                    "recent_orders": list(self.rates[name].times),
                    "positions": [{**h.position.as_dict(), "closing": h.closing} for h in acct.holdings.values()],
                }
                for name, acct in self.accounts.items()
            },
            "stops": [{"strategy": s, "instrument": i, "side": stop.side, "level": stop.level}
                      for (s, i), stop in self._stops.items()],
            "volatility": [{"instrument": i, "window": w, "returns": list(v.returns), "s": v.s, "s2": v.s2,
                            "last_close": v.last_close, "sigma": v.sigma} for (i, w), v in self._vols.items()],
            "treasury": dict(self.treasury.balances),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Take up a ``snapshot`` on a monitor just built from the same configuration.
        Strategies or instruments the configuration no longer has are left out."""
        self.states.restore(saved["states"])
        for name, row in saved["accounts"].items():
            acct = self.accounts.get(name)
            if acct is None:
                continue
            acct.open_orders = row["open_orders"]
            acct.peak_equity, acct.day_start_equity, acct.day = row["peak_equity"], row["day_start_equity"], row["day"]
            self.rates[name].times.extend(row["recent_orders"])
            for pos in row["positions"]:
                spec = self.specs.get(pos["instrument"])
                if spec is None:
                    continue
                h = acct.holding(spec)
                h.closing = pos["closing"]
                for field in ("size", "avg_entry_price", "realized_pnl", "fees_paid", "funding_paid"):
                    setattr(h.position, field, pos[field])
        for row in saved["stops"]:
            if row["strategy"] in self.accounts and row["instrument"] in self.specs:
                stop = TrailingStop(row["side"], 0.0, math.nan, 0.0)
                stop.level = row["level"]
                self._stops[(row["strategy"], row["instrument"])] = stop
        for row in saved["volatility"]:
            vol = ReturnVolatility(row["window"])
            vol.returns.extend(row["returns"])
            vol.s, vol.s2, vol.last_close, vol.sigma = row["s"], row["s2"], row["last_close"], row["sigma"]
            self._vols[(row["instrument"], row["window"])] = vol
        for venue, balance in saved["treasury"].items():
            self.treasury.set_balance(venue, balance)

    # --- inside ----------------------------------------------------------------------

    def _account(self, strategy: str) -> StrategyAccount:
        acct = self.accounts.get(strategy)
        if acct is None:
            raise KeyError(f"unknown strategy {strategy!r} (strategies.yaml has {', '.join(sorted(self.accounts))})")
        return acct

    def _spec(self, instrument: str) -> InstrumentSpec:
        spec = self.specs.get(instrument)
        if spec is None:
            raise KeyError(f"unknown instrument {instrument!r}: not listed in venues.yaml")
        return spec

    def _sigma(self, instrument: str, window: int) -> float:
        vol = self._vols.get((instrument, window))
        return math.nan if vol is None else vol.sigma

    def _restop(self, h: Holding, before: float, price: float, now: int) -> list[Event]:
        """A position opened (or flipped) gets its stop; a closed one loses it."""
        key = (h.strategy, h.spec.key)
        q = h.position.size
        if q == 0.0:
            self._stops.pop(key, None)
            return []
        lim = self.limits[h.strategy]
        opened = before == 0.0 or (before > 0.0) != (q > 0.0)
        if not opened or lim.stop_multiple is None:
            return []
        sigma = self._sigma(h.spec.key, lim.stop_window)
        stop = self._stops[key] = TrailingStop(1 if q > 0.0 else -1, price, sigma, lim.stop_multiple)
        if math.isnan(stop.level):
            return []
        return [StopMoved(h.strategy, h.spec.key, now, stop.level, None, price, sigma, lim.stop_multiple)]

    def _stop_hit(self, h: Holding, stop: TrailingStop, price: float, now: int) -> StopHit:
        h.closing = True
        return StopHit(h.strategy, h.spec.key, now, stop.level, price, (close_of(h, "trailing_stop", price),))

    def _evaluate(self, acct: StrategyAccount, venue: str, now: int) -> list[Event]:
        """The loss rules on the strategy's equity, then auto-close on ``venue``."""
        events: list[Event] = []
        lim = self.limits[acct.strategy]
        equity = acct.equity()
        acct.observe(equity, now)
        hit = breach(acct, lim, equity)
        if hit is not None:
            target = TradingState.HALTED if hit.rule == "equity_wiped" else lim.on_breach
            if self.states.own(acct.strategy).severity < target.severity:
                events.append(self._breach(acct, hit, target, now))
        closing = auto_close(acct, venue, lim.liquidation_buffer, now)
        if closing is not None:
            for action in closing.actions:
                acct.holdings[action.instrument].closing = True
            events.append(closing)
        return events

    def _breach(self, acct: StrategyAccount, hit: Breach, target: TradingState, now: int) -> Transition:
        """HALTED is the simulator's kill switch: open orders cancelled, every position
        closed, nothing new. REDUCING cancels the open orders and lets the strategy reduce."""
        actions: list = [CancelOpenOrders(acct.strategy, hit.rule)]
        if target is TradingState.HALTED:
            for h in acct.holdings.values():
                if h.position.size != 0.0 and not h.closing:
                    actions.append(close_of(h, hit.rule))
                    h.closing = True
        reason = f"{hit.rule}: equity {hit.equity:,.2f} <= {hit.threshold:,.2f}"
        return self.states.move(acct.strategy, target, hit.rule, reason, now, hit.inputs(), tuple(actions))
