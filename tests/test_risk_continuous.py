"""The Risk Rules Monitor's continuous checks: auto-close before liquidation (the
simulator's liquidation formula), the volatility trailing stop moved bar by bar as the
simulator moves it and fired where the simulator fires it, and funding in the equity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cluster.domain import Bar, FundingRate, Side

from actors.risk import AutoClose, ClosePosition, StopHit, StopMoved
from actors.risk.stops import ReturnVolatility
from sim import kernel as k
from sim.settings import LegCosts, RiskRules, SimSettings
from strategies.indicators import rolling_return_std, shift_forward
from tests.risk_fixtures import BINANCE_SOL, CARRY, DRIFT_SOL, EMA, T0, fill, monitor, move

LOOSE = {"defaults": {"checks": {}, "daily_loss_limit": None, "max_drawdown": 0.9}}


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


# --- auto-close before liquidation ------------------------------------------------------


def test_auto_close_when_margin_comes_within_the_buffer_of_maintenance():
    mon = monitor(LOOSE)
    # drift: 5,000 of equity, maintenance 3%: a 100,000 long (400 SOL at 250) has 3,000 of
    # maintenance; auto-close at equity <= 1.1 x maintenance
    fill(mon, "buy", 400, 250, strategy=CARRY, instrument=DRIFT_SOL)
    assert move(mon, 246.0) == []  # equity 3,400 > 1.1 x 2,952
    events = of(move(mon, 245.5), AutoClose)  # equity 3,200 <= 1.1 x 2,946
    assert len(events) == 1
    ac = events[0]
    assert (ac.strategy, ac.venue, ac.buffer) == (CARRY, "drift", 0.1)
    assert (ac.equity, ac.maintenance) == (pytest.approx(3200), pytest.approx(2946))
    assert ac.actions == (ClosePosition(CARRY, DRIFT_SOL, Side.SELL, 400.0, 245.5, "auto_close"),)
    # the simulator's formula, single long: p = -other / (q (1 - mmr s)), other = equity - q p
    other = 3200 - 400 * 245.5
    assert ac.liquidation_prices[DRIFT_SOL] == pytest.approx(-other / (400 * (1 - 0.03)))
    assert ac.auto_close_prices[DRIFT_SOL] == pytest.approx(-other / (400 * (1 - 0.033)))
    assert ac.liquidation_prices[DRIFT_SOL] < 245.5 <= ac.auto_close_prices[DRIFT_SOL]
    assert move(mon, 245.4) == []  # asked once
    mon.close_failed(CARRY, DRIFT_SOL)
    assert of(move(mon, 245.3), AutoClose)  # asked again
    fill(mon, "sell", 400, 245.3, strategy=CARRY, instrument=DRIFT_SOL)
    assert move(mon, 240.0) == []


def test_liquidation_price_is_the_simulators():
    mon = monitor(LOOSE)
    fill(mon, "sell", 300, 250, strategy=CARRY, instrument=DRIFT_SOL)
    fill(mon, "buy", 0.5, 60000, strategy=CARRY, instrument="drift:BTC-PERP")
    mon.on_mark("drift:BTC-PERP", 61000.0)
    move(mon, 251.0)
    acct = mon.accounts[CARRY]
    from actors.risk.liquidation import position_liquidation_price

    ours = position_liquidation_price(acct, acct.holdings[DRIFT_SOL], 1.0)
    # the same account in the kernel's arrays: cash + q * mark = the drift equity
    S = np.zeros((2, k.N_S))
    S[0, k.S_Q], S[0, k.S_MARK] = -300, 251.0
    S[1, k.S_Q], S[1, k.S_MARK] = 0.5, 61000.0
    st = np.zeros(k.N_ST)
    st[k.ST_CASH] = acct.venue_equity("drift") - (-300 * 251.0 + 0.5 * 61000.0)
    lp = np.zeros((2, k.N_LP))
    lp[:, k.LP_PERP], lp[:, k.LP_MMR] = 1.0, 0.03
    assert ours == pytest.approx(k._liquidation_price(S, lp, st, 0, 1.0), rel=1e-12)
    assert position_liquidation_price(acct, acct.holdings[DRIFT_SOL], 1.1) == pytest.approx(
        k._liquidation_price(S, lp, st, 0, 1.1), rel=1e-12)


def test_auto_close_closes_the_largest_margin_first_until_clear():
    mon = monitor(LOOSE)
    fill(mon, "buy", 400, 250, strategy=CARRY, instrument=DRIFT_SOL)  # 3,000 of maintenance
    fill(mon, "buy", 0.1, 60000, strategy=CARRY, instrument="drift:BTC-PERP")  # 180
    mon.on_mark("drift:BTC-PERP", 60000.0)
    ac = of(move(mon, 244.0), AutoClose)[0]
    assert [a.instrument for a in ac.actions] == [DRIFT_SOL]  # closing the SOL leg alone clears the buffer


def test_spot_has_no_auto_close_and_other_venues_are_apart():
    mon = monitor(LOOSE)
    fill(mon, "buy", 19, 250, strategy=CARRY, instrument="jupiter:SOL-USDC")
    fill(mon, "buy", 300, 250)  # binanceusdm, 10,000 of equity, 5% maintenance
    assert of(move(mon, 200.0), AutoClose) == []


# --- the trailing stop ---------------------------------------------------------------------


def walk(n: int, seed: int, vol: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 250.0 * np.cumprod(1.0 + rng.normal(0.0005, vol, n))


def bars(close: np.ndarray, spread: float = 0.004) -> list[Bar]:
    out = []
    for i, c in enumerate(close):
        o = close[i - 1] if i else c
        out.append(Bar(T0 + i * 60_000_000_000, BINANCE_SOL, 60, o, max(o, c) * (1 + spread), min(o, c) * (1 - spread), c, 1.0))
    return out


def test_return_volatility_is_the_simulators_indicator():
    close = walk(200, 3)
    vol = ReturnVolatility(20)
    ours = []
    for c in close:
        vol.update(c)
        ours.append(vol.sigma)
    expected = rolling_return_std(close, 20)
    assert np.isnan(ours[:20]).all() and np.isnan(expected[:20]).all()
    assert np.array_equal(np.array(ours[20:]), expected[20:])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_stop_moves_and_fires_where_the_simulator_moves_and_fires_it(seed: int):
    window, multiple, n, entry = 10, 2.0, 300, 30
    close = walk(n, seed)
    series = bars(close)
    opens = np.array([b.open for b in series])
    highs = np.array([b.high for b in series])
    lows = np.array([b.low for b in series])

    mon = monitor({**LOOSE, "strategies": {EMA: {"dynamic_stop": {"window": window, "multiple": multiple},
                                                 "max_position_notional": 1e9}}})
    for b in series[: entry + 1]:  # the decision at bar `entry`'s close
        mon.on_bar(b)
    p = opens[entry + 1]  # filled at the next open
    [moved] = of(fill(mon, "buy", 10, p), StopMoved)
    stop_sigma = shift_forward(rolling_return_std(close, window))
    assert moved.previous is None and moved.level == pytest.approx(p * (1 - multiple * stop_sigma[entry + 1]), rel=1e-12)
    level, hit_at, hit_price = moved.level, None, None
    for i in range(entry + 1, n):
        events = mon.on_bar(series[i])
        hits = of(events, StopHit)
        if hits:
            hit_at, hit_price = i, hits[0].price
            assert hits[0].actions[0].instrument == BINANCE_SOL and hits[0].actions[0].side is Side.SELL
            break
        # docs/simulator.md: after each close, close (1 - k sigma) if higher
        level = max(level, close[i] * (1 - multiple * stop_sigma[i]))
        assert mon.stop_level(EMA, BINANCE_SOL) == pytest.approx(level, rel=1e-12)
    assert hit_at is not None, "the walk should reach the stop"

    # the kernel, same bars, no costs, long 0.5 from the entry bar's close
    settings = SimSettings(legs=(LegCosts(key=BINANCE_SOL),), risk=RiskRules(stop_window=window, stop_multiple=multiple))
    target = np.full((1, n), np.nan)
    target[0, entry] = 0.5
    zero = np.zeros((1, n))
    books = np.zeros((1, 0, 0, 0))
    _, _, trades = k.simulate(opens[None], highs[None], lows[None], close[None], zero, zero, stop_sigma[None], zero,
                              books, books, target, settings.leg_params(), settings.account_params(60.0), True)
    first = trades[0]
    assert first[k.TR_REASON] == k.EXIT_STOP
    assert int(first[k.TR_EXIT_I]) == hit_at
    assert first[k.TR_EXIT_PX] == pytest.approx(hit_price, rel=1e-12)


def test_a_mark_through_the_stop_asks_for_a_close_once():
    mon = monitor({**LOOSE, "strategies": {EMA: {"dynamic_stop": {"window": 5, "multiple": 2.0}}}})
    for b in bars(walk(10, 7)):
        mon.on_bar(b)
    fill(mon, "sell", 4, 250.0)
    level = mon.stop_level(EMA, BINANCE_SOL)
    assert level > 250.0  # a short's stop is above
    assert of(move(mon, level - 0.01), StopHit) == []
    [hit] = of(move(mon, level + 0.01), StopHit)
    assert hit.actions == (ClosePosition(EMA, BINANCE_SOL, Side.BUY, 4.0, level + 0.01, "trailing_stop"),)
    assert of(move(mon, level + 1), StopHit) == []
    fill(mon, "buy", 4, level + 1)
    assert mon.stop_level(EMA, BINANCE_SOL) is None


def test_no_stop_without_sigma_or_when_switched_off():
    mon = monitor({**LOOSE, "strategies": {EMA: {"dynamic_stop": {"window": 5, "multiple": 2.0}}}})
    assert of(fill(mon, "buy", 1, 250.0), StopMoved) == []  # no bars yet
    assert mon.stop_level(EMA, BINANCE_SOL) is None
    carry = monitor(LOOSE)  # risk.yaml: sol_funding_carry has dynamic_stop: null
    for b in bars(walk(30, 1)):
        carry.on_bar(Bar(b.ts_ns, DRIFT_SOL, 60, b.open, b.high, b.low, b.close, 1.0))
    assert of(fill(carry, "buy", 1, 250.0, strategy=CARRY, instrument=DRIFT_SOL), StopMoved) == []


# --- funding ---------------------------------------------------------------------------------


def test_funding_is_charged_to_every_holder_and_counts_in_equity():
    mon = monitor(LOOSE)
    fill(mon, "sell", 20, 250, strategy=CARRY, instrument=DRIFT_SOL)
    fill(mon, "buy", 4, 250)
    mon.on_funding(FundingRate(T0, DRIFT_SOL, 0.0001, 3600, mark_price=250.0))  # longs pay: a short receives
    acct = mon.accounts[CARRY]
    assert acct.holdings[DRIFT_SOL].position.funding_paid == pytest.approx(-0.5)
    assert acct.equity() == pytest.approx(10000.5)
    assert mon.accounts[EMA].equity() == pytest.approx(10000)  # another instrument
    assert math.isclose(mon.summary().strategies[1].funding, -0.5)
