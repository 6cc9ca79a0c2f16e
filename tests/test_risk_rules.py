"""Pre-trade rules of the Risk Rules Monitor: each lets the good case through and refuses
the bad one, naming the rule and the numbers; every rule can be switched off; target
orders are judged on their estimate; cancels always pass."""

from __future__ import annotations

import math

import pytest

from cluster.config.models import RuleSwitches

from actors.risk import RiskMonitor
from actors.risk.rules import RULES
from tests.risk_fixtures import (
    BINANCE_SOL, CARRY, DRIFT_SOL, EMA, JUPITER_SOL, Clock, fill, intent, monitor, move, refused, shipped,
)


def test_a_plain_order_is_accepted_and_counted_open():
    mon = monitor()
    verdict = mon.check(intent(size=2))
    assert verdict.accepted and verdict.rule is None and bool(verdict)
    assert mon.accounts[EMA].open_orders == 1
    mon.order_closed(EMA)
    assert mon.accounts[EMA].open_orders == 0


def test_every_rule_has_a_switch_and_every_switch_a_rule():
    assert [name for name, _ in RULES] == list(RuleSwitches.model_fields)


# --- strategy, instrument, price ---------------------------------------------------------


def test_unknown_and_disabled_strategies_are_refused():
    mon = monitor()
    assert "'ghost' is not in strategies.yaml" in refused(mon.check(intent(strategy="ghost")), "strategy")
    shipped_monitor = RiskMonitor(shipped())  # strategies.yaml ships sol_funding_carry disabled
    assert refused(shipped_monitor.check(intent(strategy=CARRY, instrument=DRIFT_SOL, reference_price=250.0)), "strategy") == (
        "strategy: 'sol_funding_carry' is disabled in strategies.yaml")


def test_unknown_instrument_and_disabled_venue():
    mon = monitor()
    assert refused(mon.check(intent(instrument="ftx:SOL-PERP")), "instrument") == (
        "instrument: 'ftx:SOL-PERP' is not listed in venues.yaml")
    mon = monitor({"disabled_venues": ["binanceusdm"]})
    assert "binanceusdm is disabled (risk.yaml disabled_venues)" in refused(mon.check(intent()), "instrument")
    assert mon.check(intent(strategy=CARRY, instrument=DRIFT_SOL)).accepted


def test_a_market_order_with_no_price_anywhere_is_refused():
    mon = monitor()
    mon.market.marks.pop(BINANCE_SOL)
    mon.market.best_mid.pop("SOL-PERP")
    assert refused(mon.check(intent()), "price") == (
        "price: no price to judge binanceusdm:SOL-PERP at: a market order without a reference_price, "
        "no mark and no consolidated mid for SOL-PERP")
    # with a reference price it has a price, but nothing to hold it against
    assert "no consolidated mid for SOL-PERP and no mark" in refused(mon.check(intent(reference_price=250.0)), "price_band")
    assert mon.check(intent(reference_price=250.0, strategy=CARRY, instrument=DRIFT_SOL)).accepted


# --- the venue and the intent's shape ----------------------------------------------------


def test_stale_venue():
    mon = monitor()
    mon.set_stale_venues({"binanceusdm"})
    assert refused(mon.check(intent()), "stale_venue") == "stale_venue: the MDS calls binanceusdm stale; no new order goes there"
    assert mon.check(intent(strategy=CARRY, instrument=DRIFT_SOL)).accepted
    mon.set_stale_venues(set())
    assert mon.check(intent()).accepted


def test_reduce_only_refuses_an_increase_a_flip_and_nothing_to_reduce():
    mon = monitor()
    assert "from 0 to 1: there is no position to reduce" in refused(mon.check(intent(reduce_only=True)), "reduce_only")
    fill(mon, "buy", 4, 250)
    assert "from 4 to 5: an increase" in refused(mon.check(intent("buy", 1, reduce_only=True)), "reduce_only")
    assert "from 4 to -2: a flip" in refused(mon.check(intent("sell", 6, reduce_only=True)), "reduce_only")
    assert mon.check(intent("sell", 4, reduce_only=True)).accepted
    assert mon.check(intent("sell", 1.5, reduce_only=True)).accepted


def test_spot_is_long_only():
    mon = monitor()
    fill(mon, "buy", 1, 250, strategy=CARRY, instrument=JUPITER_SOL)
    sell = intent("sell", 3, strategy=CARRY, instrument=JUPITER_SOL)
    assert refused(mon.check(sell), "spot_inventory") == (
        "spot_inventory: selling 3 SOL with 1 held on jupiter (spot is long only: no borrowing)")
    assert mon.check(intent("sell", 1, strategy=CARRY, instrument=JUPITER_SOL)).accepted


def test_limit_price_on_the_tick():
    mon = monitor()
    assert mon.check(intent(limit=250.12)).accepted
    verdict = mon.check(intent(limit=250.125))
    assert refused(verdict, "tick_size") == (
        "tick_size: 250.125 is not on binanceusdm:SOL-PERP's tick of 0.01 (250.12 or 250.13)")
    assert (verdict.limit, verdict.value) == (0.01, 250.125)
    assert mon.check(intent(limit=250.1234, strategy=CARRY, instrument=DRIFT_SOL)).accepted  # drift's tick is 0.0001


def test_size_on_the_lot():
    mon = monitor()
    assert mon.check(intent(size=1.23)).accepted
    assert refused(mon.check(intent(size=1.234)), "lot_size") == (
        "lot_size: 1.234 SOL is not a multiple of binanceusdm:SOL-PERP's lot of 0.01 (1.23 or 1.24)")


def test_venue_min_size_and_min_notional():
    mon = monitor(venues={"SOL-PERP": {"drift": {"min_size": 0.05}}})
    assert refused(mon.check(intent(strategy=CARRY, instrument=DRIFT_SOL, size=0.03)), "min_size") == (
        "min_size: 0.03 SOL < 0.05 on drift")
    verdict = mon.check(intent(size=0.01))  # on the lot and the min size, 2.50 of notional
    assert refused(verdict, "min_notional") == "min_notional: 2.50 < 5 on binanceusdm (0.01 SOL at 250)"
    assert (verdict.limit, verdict.value) == (5, pytest.approx(2.5))
    assert mon.check(intent(size=0.02)).accepted


def test_venue_max_size():
    mon = monitor(venues={"SOL-PERP": {"binanceusdm": {"max_size": 5}}})
    assert mon.check(intent(size=5)).accepted
    assert refused(mon.check(intent(size=5.5)), "max_size") == "max_size: 5.5 SOL > 5 on binanceusdm"


def test_price_band_against_the_consolidated_mid_then_the_mark():
    mon = monitor()
    assert mon.check(intent(limit=254.0)).accepted  # 160 bps
    verdict = mon.check(intent(limit=262.5))
    assert refused(verdict, "price_band") == (
        "price_band: 262.5 is 500 bps from the consolidated mid 250.00 > 200 bps")
    assert (verdict.limit, verdict.value) == (200, pytest.approx(500))
    mon.market.best_mid.pop("SOL-PERP")
    mon.on_mark(BINANCE_SOL, 260.0)
    assert mon.check(intent(limit=262.5)).accepted  # 96 bps from the mark
    assert "from the mark 260.00" in refused(mon.check(intent(reference_price=240.0)), "price_band")
    mon.market.marks.pop(BINANCE_SOL)
    assert "no consolidated mid for SOL-PERP and no mark" in refused(mon.check(intent(limit=262.5)), "price_band")


# --- the strategy's book -------------------------------------------------------------------


def test_max_open_orders_and_order_closed():
    mon = monitor({"defaults": {"max_open_orders": 3}})
    for _ in range(3):
        assert mon.check(intent()).accepted
    assert refused(mon.check(intent()), "max_open_orders") == "max_open_orders: 3 open, the limit is 3"
    mon.order_closed(EMA)
    assert mon.check(intent()).accepted
    mon.set_open_orders(EMA, 0)
    assert mon.check(intent()).accepted


def test_max_order_notional_names_the_numbers():
    mon = monitor()
    mon.on_mark(BINANCE_SOL, 251.65)
    mon.on_best("SOL-PERP", 251.6, 251.7)
    verdict = mon.check(intent(size=12.4))
    assert refused(verdict, "max_order_notional") == "max_order_notional: 3,120.46 > 2,500 (12.4 SOL at 251.65)"
    assert (verdict.limit, verdict.value) == (2500, pytest.approx(3120.46))
    assert verdict.inputs["price_source"] == "mark"
    journal = verdict.as_journal()
    assert journal["rule"] == "max_order_notional" and journal["limit"] == 2500 and journal["intent"]["size"] == 12.4
    assert mon.check(intent(size=9.9)).accepted


def test_a_close_to_flat_is_never_capped_by_max_order_notional():
    mon = monitor({"strategies": {EMA: {"max_position_notional": 10000}}})
    fill(mon, "buy", 16, 250)  # 4,000 of notional, more than one order may trade
    assert refused(mon.check(intent("sell", 12)), "max_order_notional")
    assert mon.check(intent("sell", 16)).accepted
    assert mon.check(intent("sell", 0, target=0.0)).accepted


def test_max_position_notional_refuses_growth_not_reduction():
    mon = monitor()
    fill(mon, "buy", 18, 250)  # 4,500 of the 5,000 allowed
    assert refused(mon.check(intent(size=4)), "max_position_notional") == (
        "max_position_notional: 5,500 > 5,000 after the order (22 SOL at 250; 18 now)")
    mon.on_mark(BINANCE_SOL, 300.0)  # the position grew past the limit with the price
    mon.on_best("SOL-PERP", 299.95, 300.05)
    assert mon.check(intent("sell", 1)).accepted
    assert refused(mon.check(intent("buy", 0.1)), "max_position_notional")


def test_max_leverage_is_gross_notional_over_equity():
    mon = monitor({"defaults": {"max_leverage": 0.9}, "strategies": {CARRY: {"checks": {"net_exposure": False}}}})
    fill(mon, "sell", 20, 250, strategy=CARRY, instrument=DRIFT_SOL)  # 5,000 gross on 10,000 equity
    fill(mon, "buy", 8, 250, strategy=CARRY, instrument=JUPITER_SOL)  # 7,000: both legs count
    verdict = mon.check(intent("buy", 10, strategy=CARRY, instrument=JUPITER_SOL))
    assert refused(verdict, "max_leverage") == (
        "max_leverage: 0.95x > 0.9x (gross 9,500 / equity 10,000 after the order)")
    assert verdict.value == pytest.approx(0.95)
    refused(mon.check(intent("buy", 10, strategy=CARRY, instrument=JUPITER_SOL, target=0.5, reference_price=250.0)),
            "max_leverage")  # a target order on its estimate
    assert mon.check(intent("buy", 4, strategy=CARRY, instrument=JUPITER_SOL)).accepted


def test_free_collateral_is_initial_margin_within_the_venue_equity():
    # drift's initial margin ratio is 0.05 (simulation.yaml): 5,000 of equity carries 100,000
    mon = monitor({"defaults": {"max_leverage": 100, "max_position_notional": 1e6, "max_order_notional": 1e6},
                   "exposure": {"SOL": {"max_net_notional": 1e6, "max_gross_notional": 1e6}}})
    fill(mon, "sell", 380, 250, strategy=CARRY, instrument=DRIFT_SOL)  # 95,000: 4,750 of margin
    verdict = mon.check(intent("sell", 30, strategy=CARRY, instrument=DRIFT_SOL))
    assert refused(verdict, "free_collateral") == (
        "free_collateral: initial margin (IMR 0.05) 5,125 > equity 5,000 on drift after the order (30 SOL at 250)")
    assert (verdict.limit, verdict.value) == (5000, pytest.approx(5125))
    assert mon.check(intent("sell", 20, strategy=CARRY, instrument=DRIFT_SOL)).accepted
    assert mon.check(intent("buy", 100, strategy=CARRY, instrument=DRIFT_SOL)).accepted  # reducing frees margin


def test_free_collateral_on_spot_is_the_cash_left():
    mon = monitor({"defaults": {"max_leverage": 100}, "exposure": {"SOL": {"max_net_notional": 1e6}}})
    fill(mon, "buy", 10, 250, strategy=CARRY, instrument=JUPITER_SOL)
    fill(mon, "buy", 9, 250, strategy=CARRY, instrument=JUPITER_SOL)  # 4,750 of the 5,000 spent
    assert refused(mon.check(intent("buy", 2, strategy=CARRY, instrument=JUPITER_SOL)), "free_collateral") == (
        "free_collateral: spot held 5,250 > equity 5,000 on jupiter after the order (2 SOL at 250)")
    assert mon.check(intent("buy", 1, strategy=CARRY, instrument=JUPITER_SOL)).accepted


def test_free_collateral_without_an_allocation_says_so():
    mon = monitor()
    message = refused(mon.check(intent(instrument="hyperliquid:SOL-PERP")), "free_collateral")
    assert message.endswith("(1 SOL at 250; sol_ema_cross has no allocation on hyperliquid)")


def test_liquidation_buffer_refuses_an_order_that_would_start_at_auto_close():
    everything_else_off = {"max_leverage": False, "free_collateral": False, "max_position_notional": False,
                           "max_order_notional": False, "net_exposure": False, "gross_exposure": False,
                           "treasury": False}
    mon = monitor({"defaults": {"checks": everything_else_off}})
    # 5,000 on drift at 3% maintenance: equity 5,000 > 1.1 x 0.03 x notional up to ~151,515
    assert mon.check(intent("buy", 600, strategy=CARRY, instrument=DRIFT_SOL)).accepted  # 150,000
    verdict = mon.check(intent("buy", 620, strategy=CARRY, instrument=DRIFT_SOL))
    message = refused(verdict, "liquidation_buffer")
    assert message.startswith("liquidation_buffer: equity 5,000 <= 1.1 x maintenance 4,650 on drift after the order: "
                              "drift:SOL-PERP would auto-close at ")
    # the auto-close price is the simulator's formula at (1 + buffer) x maintenance: above the price for a long
    q, mmr, scale = 620, 0.03, 1.1
    expected = (0 - (5000 - q * 250)) / (q - q * mmr * scale)
    assert verdict.inputs["auto_close_price"] == pytest.approx(expected)
    assert verdict.inputs["auto_close_price"] > 250 > verdict.inputs["liquidation_price"]
    assert (verdict.limit, verdict.value) == (pytest.approx(1.1 * 4650), 5000)


def set_sol(mon, price: float) -> None:
    """A new SOL price for the pre-trade rules alone: the continuous checks (``on_mark``),
    which would move the trading state first, do not run."""
    mon.market.set_mark(BINANCE_SOL, price)
    mon.on_best("SOL-PERP", price - 0.05, price + 0.05)


def test_daily_loss_limit_refuses_new_risk_and_lets_reductions_through():
    clock = Clock()
    mon = monitor(clock=clock)
    fill(mon, "buy", 10, 250)
    set_sol(mon, 199.0)  # equity 9,490: 5.1% below the day's 10,000
    verdict = mon.check(intent("buy", 1))
    assert refused(verdict, "daily_loss_limit") == (
        "daily_loss_limit: equity 9,490 <= 9,500, 5% below the UTC day's start of 10,000; only orders that reduce are accepted")
    assert (verdict.limit, verdict.value) == (9500, pytest.approx(9490))
    assert mon.check(intent("sell", 1)).accepted
    clock.advance(86_400)  # a new UTC day starts from the equity it opens with
    assert mon.check(intent("buy", 1)).accepted
    assert mon.accounts[EMA].day_start_equity == pytest.approx(9490)


def test_max_drawdown_refuses_new_risk_against_the_peak():
    mon = monitor({"defaults": {"daily_loss_limit": None}})
    fill(mon, "buy", 18, 250)
    assert move(mon, 350.0) == []  # the continuous checks see the peak: 11,800
    assert mon.accounts[EMA].peak_equity == pytest.approx(11800)
    set_sol(mon, 210.0)  # 9,280: 21% below it
    verdict = mon.check(intent("buy", 1))
    assert refused(verdict, "max_drawdown") == (
        "max_drawdown: equity 9,280 <= 9,440, 20% below the peak of 11,800; only orders that reduce are accepted")
    assert mon.check(intent("sell", 18)).accepted


# --- the firm's book ---------------------------------------------------------------------


def test_a_hedged_pair_nets_out_across_venues():
    mon = monitor({"exposure": {"SOL": {"max_net_notional": 2000, "max_gross_notional": None}}})
    fill(mon, "sell", 8, 250, strategy=CARRY, instrument=DRIFT_SOL)  # -2,000 on drift: at the limit
    assert refused(mon.check(intent("sell", 2, strategy=CARRY, instrument=DRIFT_SOL)), "net_exposure") == (
        "net_exposure: SOL net -2,500 is past ±2,000 across venues after the order (now -2,000)")
    # a spot long on jupiter against it nets out, however big the gross
    assert mon.check(intent("buy", 8, strategy=CARRY, instrument=JUPITER_SOL)).accepted
    fill(mon, "buy", 8, 250, strategy=CARRY, instrument=JUPITER_SOL)
    assert mon.exposure.net("SOL") == pytest.approx(0) and mon.exposure.gross("SOL") == pytest.approx(4000)
    # sol_ema_cross's long on binanceusdm counts against the same firm-wide net
    verdict = mon.check(intent("buy", 8.4))
    assert refused(verdict, "net_exposure") == (
        "net_exposure: SOL net 2,100 is past ±2,000 across venues after the order (now 0)")
    assert mon.check(intent("buy", 8)).accepted


def test_gross_exposure_limit():
    mon = monitor({"exposure": {"SOL": {"max_net_notional": None, "max_gross_notional": 6000}}})
    fill(mon, "sell", 10, 250, strategy=CARRY, instrument=DRIFT_SOL)
    fill(mon, "buy", 10, 250, strategy=CARRY, instrument=JUPITER_SOL)
    assert refused(mon.check(intent("buy", 5)), "gross_exposure") == (
        "gross_exposure: SOL gross 6,250 > 6,000 across venues after the order (now 5,000)")
    assert mon.check(intent("buy", 4)).accepted


def test_treasury_balance_caps_what_all_strategies_use_on_a_venue():
    mon = monitor()
    fill(mon, "buy", 10, 250, strategy=CARRY, instrument=JUPITER_SOL)  # 2,500 of jupiter's account in use
    mon.set_treasury_balance("jupiter", 3000)  # the venue reported less than the allocations
    verdict = mon.check(intent("buy", 4, strategy=CARRY, instrument=JUPITER_SOL))
    assert refused(verdict, "treasury") == (
        "treasury: 3,500 in use on jupiter after the order > the treasury's balance of 3,000 (now 2,500, all strategies)")
    assert (verdict.limit, verdict.value) == (3000, 3500)
    assert mon.check(intent("buy", 2, strategy=CARRY, instrument=JUPITER_SOL)).accepted


def test_treasury_without_an_account_on_the_venue():
    mon = monitor({"defaults": {"checks": {"free_collateral": False, "liquidation_buffer": False}}})
    assert "the treasury has no account on hyperliquid" in refused(
        mon.check(intent(instrument="hyperliquid:SOL-PERP")), "treasury")


def test_order_rate_in_any_second():
    clock = Clock()
    mon = monitor({"defaults": {"max_orders_per_s": 3}}, clock=clock)
    for _ in range(3):
        assert mon.check(intent()).accepted
        clock.advance(0.1)
    assert refused(mon.check(intent()), "max_orders_per_s") == "max_orders_per_s: 3 orders accepted in the last 1 s, the limit"
    assert mon.check(intent(strategy=CARRY, instrument=DRIFT_SOL)).accepted  # per strategy
    clock.advance(0.75)  # the first is now over a second old
    assert mon.check(intent()).accepted


def test_a_refused_order_takes_no_rate_slot_and_no_open_order():
    mon = monitor({"defaults": {"max_orders_per_s": 1}})
    refused(mon.check(intent(size=100)), "max_order_notional")
    assert mon.accounts[EMA].open_orders == 0
    assert mon.check(intent()).accepted


# --- switches ----------------------------------------------------------------------------

BAD = {
    "stale_venue": lambda mon: (mon.set_stale_venues({"binanceusdm"}), intent())[1],
    "reduce_only": lambda mon: intent(reduce_only=True),
    "tick_size": lambda mon: intent(limit=250.125),
    "lot_size": lambda mon: intent(size=1.234),
    "min_notional": lambda mon: intent(size=0.01),
    "price_band": lambda mon: intent(limit=275.0),
    "max_order_notional": lambda mon: intent(size=12),
    "max_position_notional": lambda mon: (fill(mon, "buy", 18, 250), intent(size=4))[1],
    "max_orders_per_s": lambda mon: (mon.rates[EMA].times.extend([mon._clock()] * 10), intent())[1],
}


@pytest.mark.parametrize("rule", sorted(BAD))
def test_a_rule_switched_off_lets_its_bad_case_through(rule: str):
    on = monitor()
    assert refused(on.check(BAD[rule](on)), rule)
    off = monitor({"strategies": {EMA: {"checks": {rule: False}}}})
    assert off.check(BAD[rule](off)).accepted


def test_the_trading_state_cannot_be_switched_off():
    mon = monitor({"defaults": {"checks": {name: False for name, _ in RULES}}})
    mon.halt("maintenance", EMA)
    assert refused(mon.check(intent()), "trading_state")


# --- target orders and cancels -----------------------------------------------------------


def test_target_orders_are_judged_on_their_estimate_at_the_reference_price():
    mon = monitor()
    # a 0.5 target of 10,000 at 251.65: the strategy's estimate 19.87 SOL = 5,000 of notional
    verdict = mon.check(intent("buy", 19.87, target=0.5, reference_price=251.65))
    assert refused(verdict, "max_order_notional") == "max_order_notional: 5,000.29 > 2,500 (19.87 SOL at 251.65)"
    assert mon.check(intent("buy", 9.931, target=0.25, reference_price=251.65)).accepted  # off the lot: the client rounds
    assert mon.check(intent("buy", 0.0, target=0.25, reference_price=251.65)).accepted  # no trade expected


def test_a_target_of_zero_closes_and_reduces_whatever_its_estimate():
    mon = monitor()
    fill(mon, "buy", 8, 250)
    mon.reduce("risk off", EMA)
    close = intent("sell", 0.0, target=0.0, reference_price=250.0)
    assert mon.check(close).accepted
    assert refused(mon.check(intent("sell", 10)), "trading_state")  # a flip does not reduce


def test_cancels_are_always_allowed():
    mon = monitor()
    mon.halt("everything stops")
    verdict = mon.check_cancel(EMA, "o1")
    assert verdict.accepted and verdict.intent is None
    assert refused(mon.check(intent()), "trading_state") == (
        "trading_state: all trading is halted (everything stops); only cancels are accepted")


def test_verdict_numbers_are_plain_data_for_the_journal():
    mon = monitor()
    journal = mon.check(intent(limit=262.5)).as_journal()
    assert journal["kind"] == "verdict" and journal["accepted"] is False
    assert journal["rule"] == "price_band" and journal["limit"] == 200 and math.isclose(journal["value"], 500)
    assert journal["inputs"]["reference"] == pytest.approx(250.0)
    assert journal["intent"]["limit_price"] == 262.5 and journal["intent"]["side"] == "buy"
