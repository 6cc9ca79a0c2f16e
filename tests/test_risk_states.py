"""Trading states of the Risk Rules Monitor: manual halt, reduce and resume per strategy
and global, the automatic moves on the loss rules with the actions they ask for, and
REDUCING's refusal of flips."""

from __future__ import annotations

import json

import pytest

from cluster.domain import Bar, Side

from actors.risk import CancelOpenOrders, ClosePosition, RiskMonitor, TradingState, Transition
from tests.risk_fixtures import (
    BINANCE_SOL, CARRY, DRIFT_SOL, EMA, JUPITER_SOL, T0, Clock, config, fill, intent, monitor, move, refused,
)

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def transitions(events: list) -> list[Transition]:
    return [e for e in events if isinstance(e, Transition)]


def test_manual_halt_and_resume_of_one_strategy():
    mon = monitor()
    event = mon.halt("maintenance", EMA)
    assert (event.scope, event.previous, event.state, event.cause, event.reason) == (EMA, ACTIVE, HALTED, "manual", "maintenance")
    assert event.actions == (CancelOpenOrders(EMA, "halted: maintenance"),)
    assert refused(mon.check(intent()), "trading_state") == (
        "trading_state: sol_ema_cross is halted (maintenance); only cancels are accepted")
    assert mon.check(intent(strategy=CARRY, instrument=DRIFT_SOL)).accepted
    event = mon.resume("done", EMA)
    assert (event.previous, event.state, event.actions) == (HALTED, ACTIVE, ())
    assert mon.check(intent()).accepted


def test_global_state_overrides_in_the_stricter_direction():
    mon = monitor()
    mon.halt("bad fills", EMA)
    event = mon.reduce("volatile market")
    assert event.scope == "global" and event.actions == (CancelOpenOrders(None, "reducing: volatile market"),)
    assert mon.state(EMA) is HALTED  # its own halt is stricter than the global REDUCING
    assert mon.state(CARRY) is REDUCING
    assert "all trading is reducing (volatile market)" in refused(mon.check(intent(strategy=CARRY, instrument=DRIFT_SOL)), "trading_state")
    mon.halt("exchange incident")
    assert mon.state(CARRY) is HALTED
    mon.resume("over")
    assert mon.state(CARRY) is ACTIVE
    assert mon.state(EMA) is HALTED  # a global resume does not lift a strategy's own halt


def test_reducing_accepts_reductions_and_refuses_increases_and_flips():
    mon = monitor()
    fill(mon, "buy", 4, 250)
    mon.reduce("risk off", EMA)
    assert mon.check(intent("sell", 1)).accepted
    assert mon.check(intent("sell", 4)).accepted
    assert refused(mon.check(intent("buy", 1)), "trading_state") == (
        "trading_state: sol_ema_cross is reducing (risk off): only orders that reduce a position are accepted, "
        "this one takes binanceusdm:SOL-PERP from 4 to 5")
    assert "from 4 to -1" in refused(mon.check(intent("sell", 5)), "trading_state")  # a flip
    assert mon.check(intent("sell", 1, strategy=CARRY, instrument=DRIFT_SOL)).accepted  # another strategy


def test_a_manual_call_always_returns_its_event():
    mon = monitor()
    mon.halt("one", EMA)
    again = mon.halt("two", EMA)
    assert (again.previous, again.state, again.reason) == (HALTED, HALTED, "two")


def test_drawdown_breach_halts_cancels_and_closes_everything_once():
    mon = monitor({"defaults": {"daily_loss_limit": None}})
    fill(mon, "buy", 18, 250)
    assert move(mon, 300.0) == []  # peak 10,900
    events = transitions(move(mon, 178.0))  # 8,704: 20.1% below the peak
    assert len(events) == 1
    event = events[0]
    assert (event.scope, event.previous, event.state, event.cause) == (EMA, ACTIVE, HALTED, "max_drawdown")
    assert event.inputs == {"equity": pytest.approx(8704), "threshold": pytest.approx(8720),
                            "reference": pytest.approx(10900), "fraction": 0.2}
    assert event.reason == "max_drawdown: equity 8,704.00 <= 8,720.00"
    assert event.actions == (
        CancelOpenOrders(EMA, "max_drawdown"),
        ClosePosition(EMA, BINANCE_SOL, Side.SELL, 18.0, 178.0, "max_drawdown"),
    )
    assert move(mon, 170.0) == []  # already halted, the close already asked for
    assert refused(mon.check(intent()), "trading_state")
    assert mon.check_cancel(EMA).accepted


def test_daily_loss_breach_moves_to_reducing_when_so_configured():
    mon = monitor({"defaults": {"on_breach": "reducing"}})
    fill(mon, "buy", 10, 250)
    event = transitions(move(mon, 199.0))[0]  # 9,490: past 5% of the day's 10,000
    assert (event.state, event.cause) == (REDUCING, "daily_loss_limit")
    assert event.actions == (CancelOpenOrders(EMA, "daily_loss_limit"),)  # positions stay
    assert mon.check(intent("sell", 5)).accepted
    assert refused(mon.check(intent("buy", 1)), "trading_state")
    # the drawdown rule, also configured to reduce, does not move it again
    assert transitions(move(mon, 100.0)) == []


def test_equity_wiped_halts_whatever_on_breach_says():
    mon = monitor({"defaults": {"on_breach": "reducing", "max_drawdown": 0.99, "daily_loss_limit": None}})
    fill(mon, "sell", 40, 250, strategy=CARRY, instrument=DRIFT_SOL)
    event = transitions(move(mon, 510.0))[0]  # -10,400 on 10,000 of equity: below 0
    assert (event.state, event.cause) == (HALTED, "equity_wiped")
    assert event.actions[1] == ClosePosition(CARRY, DRIFT_SOL, Side.BUY, 40.0, 510.0, "equity_wiped")


def test_resume_after_a_breach_rebases_the_loss_marks():
    clock = Clock()
    mon = monitor({"defaults": {"daily_loss_limit": None}}, clock=clock)
    fill(mon, "buy", 18, 250)
    move(mon, 130.0)  # 7,840: 21.6% below the peak of 10,000
    assert mon.state(EMA) is HALTED
    fill(mon, "sell", 18, 130.0)  # the kill switch's close filled
    event = mon.resume("reviewed", EMA)
    assert event.inputs == {"equity": pytest.approx(7840), "peak_equity_before": pytest.approx(10000),
                            "day_start_equity_before": pytest.approx(10000)}
    assert mon.accounts[EMA].peak_equity == pytest.approx(7840)
    assert mon.check(intent()).accepted
    assert transitions(move(mon, 131.0)) == []  # the loss taken does not trip it again


def test_resume_after_a_manual_halt_keeps_the_peak():
    mon = monitor()
    fill(mon, "buy", 10, 250)
    move(mon, 300.0)
    mon.halt("lunch", EMA)
    move(mon, 290.0)
    event = mon.resume("back", EMA)
    assert event.inputs == {}
    assert mon.accounts[EMA].peak_equity == pytest.approx(10500)


def test_transitions_are_plain_data_for_the_journal():
    mon = monitor({"defaults": {"daily_loss_limit": None}})
    fill(mon, "buy", 18, 250)
    move(mon, 300.0)
    event = transitions(move(mon, 178.0))[0]
    data = event.as_journal()
    json.dumps(data)
    assert data["kind"] == "transition" and data["state"] == "halted" and data["previous"] == "active"
    assert data["actions"][1] == {"kind": "close_position", "strategy": EMA, "instrument": BINANCE_SOL, "side": "sell",
                                  "size": 18.0, "reference_price": 178.0, "reason": "max_drawdown"}


def test_a_close_action_is_a_reduce_only_target_zero_intent():
    mon = monitor()
    fill(mon, "buy", 2, 250, strategy=CARRY, instrument=JUPITER_SOL)
    close = ClosePosition(CARRY, JUPITER_SOL, Side.SELL, 2.0, 250.0, "test")
    order = close.intent(ts_ns=5)
    assert (order.target, order.reduce_only, order.size, order.side, order.ts_ns) == (0.0, True, 2.0, Side.SELL, 5)
    mon.reduce("only closes", CARRY)
    assert mon.check(order).accepted


def test_a_restarted_monitor_takes_up_its_snapshot():
    clock = Clock()
    risk = {"strategies": {EMA: {"dynamic_stop": {"window": 3, "multiple": 2.0}}}}
    mon = monitor(risk, clock=clock)
    for i, c in enumerate((250.0, 251.0, 249.5, 250.5, 252.0)):
        mon.on_bar(Bar(T0 + i * 60_000_000_000, BINANCE_SOL, 60, c, c, c, c, 1.0))
    fill(mon, "buy", 4, 252.0)
    fill(mon, "sell", 10, 250, strategy=CARRY, instrument=DRIFT_SOL, fee=1.0)
    mon.check(intent("buy", 1))
    mon.halt("incident", CARRY)
    mon.set_treasury_balance("drift", 18000)
    saved = json.loads(json.dumps(mon.snapshot()))

    again = RiskMonitor(config(risk), clock=clock)
    again.restore(saved)
    move(again, 250.0)
    move(mon, 250.0)
    assert again.snapshot() == mon.snapshot()
    assert again.state(CARRY) is HALTED and again.accounts[EMA].open_orders == 1
    assert again.stop_level(EMA, BINANCE_SOL) == mon.stop_level(EMA, BINANCE_SOL) is not None
    assert again.accounts[CARRY].equity() == pytest.approx(mon.accounts[CARRY].equity())
    assert again.treasury.balance("drift") == 18000
    bar = Bar(T0 + 5 * 60_000_000_000, BINANCE_SOL, 60, 253.0, 254.0, 252.5, 254.0, 1.0)
    assert [e.as_journal() | {"ts_ns": 0} for e in again.on_bar(bar)] == [e.as_journal() | {"ts_ns": 0} for e in mon.on_bar(bar)]
