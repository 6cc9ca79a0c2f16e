"""The treasury's accounts and the strategies' allocations as the Risk Rules Monitor
sums them for ``botmain positions``, and net exposure across venues."""

from __future__ import annotations

import pytest

from actors.risk.account import DAY_NS
from tests.risk_fixtures import BINANCE_SOL, CARRY, DRIFT_SOL, EMA, JUPITER_SOL, Clock, fill, intent, monitor, move


def test_summary_per_strategy_and_venue():
    mon = monitor()
    fill(mon, "sell", 10, 250, strategy=CARRY, instrument=DRIFT_SOL, fee=0.875)
    fill(mon, "buy", 10, 250, strategy=CARRY, instrument=JUPITER_SOL)
    fill(mon, "buy", 4, 250, fee=0.5)
    fill(mon, "sell", 2, 260, fee=0.26)
    move(mon, 240.0)
    rows = {(r.strategy, r.venue): r for r in mon.summary().strategies}
    drift = rows[(CARRY, "drift")]
    assert (drift.allocation, drift.usage_kind) == (5000, "margin")
    assert drift.usage == pytest.approx(10 * 240 * 0.05)  # initial margin at drift's 5%
    assert drift.unrealized_pnl == pytest.approx(100) and drift.fees == pytest.approx(0.875)
    assert drift.pnl == pytest.approx(99.125) and drift.equity == pytest.approx(5099.125)
    jupiter = rows[(CARRY, "jupiter")]
    assert (jupiter.usage_kind, jupiter.usage, jupiter.pnl) == ("notional", pytest.approx(2400), pytest.approx(-100))
    ema = rows[(EMA, "binanceusdm")]
    assert ema.realized_pnl == pytest.approx(20) and ema.unrealized_pnl == pytest.approx(-20)
    assert ema.pnl == pytest.approx(-0.76) and ema.usage == pytest.approx(2 * 240 * 0.1)
    assert mon.accounts[EMA].equity() == pytest.approx(10000 - 0.76)

    venues = {r.venue: r for r in mon.summary().venues}
    assert (venues["jupiter"].balance, venues["jupiter"].allocated) == (10000, 5000)
    assert venues["jupiter"].in_use == pytest.approx(2400) and venues["jupiter"].free == pytest.approx(7600)


def test_a_strategy_in_profit_trades_on_its_equity_not_only_its_allocation():
    mon = monitor({"exposure": {"SOL": {"max_net_notional": 1e6, "max_gross_notional": 1e6}}})
    fill(mon, "buy", 19, 250, strategy=CARRY, instrument=JUPITER_SOL)  # 4,750 of 5,000 spent
    move(mon, 300.0)  # +950
    assert mon.accounts[CARRY].venue_equity("jupiter") == pytest.approx(5950)
    # 5,700 held, already past the 5,000 allocated: 0.8 more makes 5,940, inside the equity
    assert mon.check(intent("buy", 0.8, strategy=CARRY, instrument=JUPITER_SOL)).accepted
    assert mon.check(intent("buy", 1, strategy=CARRY, instrument=JUPITER_SOL)).rule == "free_collateral"


def test_exposure_summary_nets_a_hedged_pair():
    mon = monitor()
    fill(mon, "sell", 20, 250, strategy=CARRY, instrument=DRIFT_SOL)
    fill(mon, "buy", 20, 250, strategy=CARRY, instrument=JUPITER_SOL)
    fill(mon, "buy", 2, 250)
    move(mon, 255.0)
    [sol] = [e for e in mon.exposures() if e.asset == "SOL"]
    assert sol.net == pytest.approx(510) and sol.gross == pytest.approx(42 * 255)
    assert sol.by_venue == {"drift": pytest.approx(-5100), "jupiter": pytest.approx(5100), "binanceusdm": pytest.approx(510)}
    assert (sol.max_net_notional, sol.max_gross_notional) == (15000, 40000)
    [btc] = [e for e in mon.exposures() if e.asset == "BTC"]
    assert (btc.net, btc.gross, btc.max_net_notional) == (0, 0, 10000)


def test_the_day_rolls_over_at_utc_midnight():
    clock = Clock()
    mon = monitor(clock=clock)
    fill(mon, "buy", 10, 250)
    move(mon, 240.0)
    assert mon.accounts[EMA].day_start_equity == pytest.approx(10000)
    clock.now += DAY_NS
    move(mon, 241.0)
    assert mon.accounts[EMA].day_start_equity == pytest.approx(9910)
    assert mon.accounts[EMA].size(BINANCE_SOL) == 10
