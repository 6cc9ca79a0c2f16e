"""The simulator against hand-computed expectations on tiny synthetic frames.

Every expected number is worked out below with explicit arithmetic from the rules in
``sim/kernel.py``'s docstring and ``docs/simulator.md`` (sizing, fill price, impact,
funding, margin), never by calling or re-implementing the kernel. Prices are chosen so
that the arithmetic stays readable. Bars are 60 s unless a test says otherwise.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from cluster.config import load_config
from sim.backtest import BacktestResult, backtest
from sim.market import MarketArrays
from sim.settings import LegCosts, RiskRules, SimSettings
from strategies.frame import Frame, LegData
from tests.fixed_strategy import Fixed

E0 = 10_000.0  # initial cash in every test
REL = 1e-9
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# CAGR of a run lasting minutes overflows to inf (numpy warns); the tests don't read it
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in scalar power:RuntimeWarning")


def leg(close, open_=None, high=None, low=None, volume=None, funding=None, kind="perp", key="sim:ASSET") -> LegData:
    """Bars from lists; open defaults to close, high/low to the max/min of open and close."""
    c = np.asarray(close, dtype=np.float64)
    o = c.copy() if open_ is None else np.asarray(open_, dtype=np.float64)
    h = np.maximum(o, c) if high is None else np.asarray(high, dtype=np.float64)
    lo = np.minimum(o, c) if low is None else np.asarray(low, dtype=np.float64)
    n = len(c)
    v = np.ones(n) if volume is None else np.asarray(volume, dtype=np.float64)
    f = np.zeros(n) if funding is None else np.asarray(funding, dtype=np.float64)
    return LegData(key=key, kind=kind, open=o, high=h, low=lo, close=c, volume=v, funding=f, funding_known=np.zeros(n))


def frame(*legs: LegData, bar_seconds: float = 60.0) -> Frame:
    n = len(legs[0].close)
    ts = np.arange(n, dtype=np.int64) * int(bar_seconds * 1e9)
    return Frame(ts=ts, bar_seconds=bar_seconds, legs=tuple(legs))


def settings(*costs: LegCosts, fill_price: str = "close", latency_ms: float = 0.0, **risk) -> SimSettings:
    return SimSettings(
        legs=costs or (LegCosts(),), initial_cash=E0, fill_price=fill_price, latency_ms=latency_ms, risk=RiskRules(**risk)
    )


def run(targets, fr: Frame, st: SimSettings) -> BacktestResult:
    return backtest(Fixed(targets), fr, st)


def approx(x, rel=REL):
    return pytest.approx(x, rel=rel)


def bar_index(ts: np.datetime64, bar_seconds: float = 60.0) -> int:
    return int(ts.astype("int64") // int(bar_seconds * 1e9))


# --- fees and fixed slippage ---------------------------------------------------------


def test_round_trip_at_close_pays_fee_and_slippage_on_both_fills():
    f, s_bps = 0.001, 10.0
    s = s_bps / 1e4  # 0.001
    fr = frame(leg([100.0, 110.0, 120.0, 130.0]))
    res = run([1, 1, 0, 0], fr, settings(LegCosts(fee=f, slippage_bps=s_bps)))

    # entry at bar 0's close 100: q = equity / (p (1 + s) (1 + f)), executed at p (1 + s)
    q = 10_000 / (100 * 1.001 * 1.001)
    entry_px = 100 * 1.001  # 100.1
    fee_in = q * entry_px * f
    slip_in = q * 100 * s
    # the buy spends exactly the whole equity: q * 100.1 * 1.001 = 10000, cash 0
    # exit at bar 2's close 120, executed at 120 (1 - s) = 119.88
    exit_px = 120 * 0.999
    fee_out = q * exit_px * f
    slip_out = q * 120 * s
    final = q * exit_px - fee_out  # cash after the sell

    m = res.metrics
    assert m.trades == 1
    assert m.fees_paid == approx(fee_in + fee_out)
    assert m.slippage_paid == approx(slip_in + slip_out)
    assert m.final_equity == approx(final)
    assert m.total_return == approx(final / 10_000 - 1)
    (t,) = res.trades
    assert (t.side, t.exit_reason) == ("long", "signal")
    assert t.size == approx(q)
    assert t.entry_price == approx(entry_px)
    assert t.exit_price == approx(exit_px)
    assert t.fees == approx(fee_in + fee_out)
    assert t.pnl == approx(final - 10_000)
    assert bar_index(t.entry_ts) == 0 and bar_index(t.exit_ts) == 3  # exit_ts is the end of bar 2
    # marked at the closes in between, cash 0
    assert res.equity == approx(np.array([q * 100, q * 110, final, final]))


def test_short_round_trip_receives_entry_price_minus_slippage():
    s_bps = 20.0
    fr = frame(leg([100.0, 90.0, 90.0]))
    res = run([-1, 0, 0], fr, settings(LegCosts(slippage_bps=s_bps)))
    # the same size formula for a short: q = -10000 / (100 * 1.002), sold at 100 * (1 - 0.002)
    q = 10_000 / (100 * 1.002)
    (t,) = res.trades
    assert t.side == "short"
    assert t.size == approx(q)
    assert t.entry_price == approx(99.8)
    assert t.exit_price == approx(90 * 1.002)  # bought back at 90.18
    assert res.metrics.final_equity == approx(10_000 + q * 99.8 - q * 90.18)


# --- next_open fills and latency -----------------------------------------------------


NEXT_OPEN_BARS = dict(
    close=[100.0, 106.0, 110.0, 120.0, 130.0],
    open_=[100.0, 102.0, 107.0, 116.0, 126.0],
)


@pytest.mark.parametrize(
    ("latency_ms", "entry_bar", "entry_px", "exit_bar", "exit_px"),
    [
        # decided at bar 0's close, filled at bar 1's open; exit decided at bar 2 -> bar 3 open
        (0.0, 1, 102.0, 3, 116.0),
        # 15 s of a 60 s bar: a quarter of the way from open to close
        (15_000.0, 1, 102.0 + 0.25 * (106.0 - 102.0), 3, 116.0 + 0.25 * (120.0 - 116.0)),
        # 90 s: one whole bar late, then half way through bar 2 (entry) / bar 4 (exit)
        (90_000.0, 2, 107.0 + 0.5 * (110.0 - 107.0), 4, 126.0 + 0.5 * (130.0 - 126.0)),
    ],
)
def test_next_open_fill_and_latency(latency_ms, entry_bar, entry_px, exit_bar, exit_px):
    fr = frame(leg(**NEXT_OPEN_BARS))
    res = run([1, 1, 0, 0, 0], fr, settings(fill_price="next_open", latency_ms=latency_ms))
    (t,) = res.trades
    assert bar_index(t.entry_ts) == entry_bar
    assert bar_index(t.exit_ts) == exit_bar + 1
    assert t.entry_price == approx(entry_px)
    assert t.exit_price == approx(exit_px)
    # no costs: the whole cash buys 10000 / entry_px units
    assert t.size == approx(10_000 / entry_px)
    assert res.metrics.final_equity == approx(10_000 / entry_px * exit_px)


# --- AMM impact ----------------------------------------------------------------------


def test_amm_impact_with_the_two_fixed_point_sizing_steps():
    D, f = 1_000_000.0, 0.001
    fr = frame(leg([100.0, 105.0, 110.0, 110.0]))
    res = run([1, 1, 0, 0], fr, settings(LegCosts(fee=f, impact="amm", pool_depth_usd=D)))

    x = D / 2 / 100  # 5000 base units in the pool re-centred on 100
    q0 = 10_000 / (100 * 1.001)  # first guess: fee only
    i1 = q0 / (x - q0)  # impact of the first guess: price x/(x-q) - 1
    q1 = 10_000 / (100 * (1 + i1) * 1.001)
    i2 = q1 / (x - q1)
    q2 = 10_000 / (100 * (1 + i2) * 1.001)  # the size that trades
    buy_px = 100 * x / (x - q2)
    x_exit = D / 2 / 110  # re-centred on the exit bar's close
    sell_px = 110 * x_exit / (x_exit + q2)

    (t,) = res.trades
    assert t.size == approx(q2)
    assert t.entry_price == approx(buy_px)
    assert t.exit_price == approx(sell_px)
    cash_after_buy = 10_000 - q2 * buy_px * 1.001
    assert res.metrics.final_equity == approx(cash_after_buy + q2 * sell_px * (1 - f))
    assert res.metrics.slippage_paid == approx(q2 * (buy_px - 100) + q2 * (110 - sell_px))


def test_amm_impact_on_a_size_fixed_by_max_position_notional():
    D = 1_000_000.0
    fr = frame(leg([100.0, 100.0, 100.0]))
    res = run([1, 1, 1], fr, settings(LegCosts(impact="amm", pool_depth_usd=D), max_position_notional=5_000.0))
    # q = 5000 / 100 = 50 exactly; x = 5000; average price 100 * 5000 / 4950
    (t,) = res.trades
    assert t.size == approx(50.0)
    assert t.entry_price == approx(100 * 5000 / 4950)


# --- square-root impact --------------------------------------------------------------


def test_sqrt_impact_uses_the_window_ending_at_the_previous_bar():
    Y = 0.5
    # bars 0..3 make the window; bar 4 (the fill bar) has a wild return and volume that
    # must not enter its own impact
    closes = [100.0, 100.0, 101.0, 103.02, 150.0, 150.0]
    volumes = [999.0, 10.0, 20.0, 30.0, 1e9, 1.0]
    fr = frame(leg(closes, volume=volumes))
    costs = LegCosts(impact="sqrt", impact_coef=Y, impact_window_bars=3)
    # cap the size at 1500 / 150 = 10 units so that q is known exactly
    res = run([0, 0, 0, 0, 1, 1], fr, settings(costs, max_position_notional=1_500.0))

    returns = [100 / 100 - 1, 101 / 100 - 1, 103.02 / 101 - 1]  # 0, 0.01, 0.02
    sigma = statistics.stdev(returns)  # sqrt(((-0.01)^2 + 0 + 0.01^2) / 2) = 0.01
    assert sigma == approx(0.01, rel=1e-6)
    mean_volume = (10 + 20 + 30) / 3  # 20
    frac = Y * sigma * math.sqrt(10 / mean_volume)
    (t,) = res.trades
    assert bar_index(t.entry_ts) == 4
    assert t.size == approx(10.0)
    assert t.entry_price == approx(150 * (1 + frac))
    assert res.metrics.slippage_paid == approx(10 * 150 * frac)


def test_book_walk_takes_levels_then_the_rest_at_the_last_level():
    fr = frame(leg([100.0, 100.0, 100.0]))
    st = settings(LegCosts(impact="book"), max_position_notional=1_000.0)  # q = 10
    off = np.zeros((3, 2, 3))
    size = np.zeros((3, 2, 3))
    off[0, 0] = [0.001, 0.002, 0.004]  # asks at bar 0, as fractions of the price
    size[0, 0] = [3.0, 4.0, 2.0]  # 9 units recorded, the 10th at the last level
    market = MarketArrays.build(fr, st, books={0: (off, size)})
    res = backtest(Fixed([1, 1, 1]), fr, st, market=market)
    frac = (3 * 0.001 + 4 * 0.002 + 2 * 0.004 + 1 * 0.004) / 10  # 0.0023
    (t,) = res.trades
    assert t.entry_price == approx(100 * (1 + frac))


def test_book_falls_back_to_sqrt_for_a_leg_without_book_data():
    closes = [100.0, 100.0, 101.0, 103.02, 150.0, 150.0]
    volumes = [999.0, 10.0, 20.0, 30.0, 1e9, 1.0]
    fr = frame(leg(closes, key="sim:A"), leg(closes, volume=volumes, key="sim:B"))
    costs_b = LegCosts(key="sim:B", impact="book", impact_coef=0.5, impact_window_bars=3)
    st = settings(LegCosts(key="sim:A"), costs_b, max_position_notional=1_500.0)
    n = len(closes)
    books = {0: (np.full((n, 2, 1), 0.001), np.full((n, 2, 1), 1e6))}  # a book for leg A only
    market = MarketArrays.build(fr, st, books=books)
    res = backtest(Fixed([[0] * n, [0, 0, 0, 0, 1, 1]]), fr, st, market=market)
    frac = 0.5 * 0.01 * math.sqrt(10 / 20)  # as in the sqrt test above
    (t,) = res.trades
    assert t.instrument == "sim:B"
    assert t.entry_price == approx(150 * (1 + frac), rel=1e-6)


# --- funding -------------------------------------------------------------------------


FUNDING_CLOSES = [100.0, 101.0, 102.0, 103.0, 104.0]
FUNDING_RATES = [0.01, 0.001, -0.0005, 0.002, 0.01]
# open at bar 0's close (after bar 0's funding), closed at bar 3's close (after bar 3's)
FUNDING_TARGET = [1, 1, 1, 0, 0]


@pytest.mark.parametrize("side", [1, -1])
def test_perp_funding_paid_by_longs_received_by_shorts(side):
    fr = frame(leg(FUNDING_CLOSES, funding=FUNDING_RATES))
    fr0 = frame(leg(FUNDING_CLOSES))
    st = settings()
    res = run([side * t for t in FUNDING_TARGET], fr, st)
    base = run([side * t for t in FUNDING_TARGET], fr0, st)
    q = side * 10_000 / 100  # +-100 units, no costs
    # bars 1, 2 and 3 are held through; bars 0 and 4 are flat (rates 0.01 never apply)
    paid = q * 101 * 0.001 + q * 102 * (-0.0005) + q * 103 * 0.002
    assert paid == approx(side * (10.1 - 5.1 + 20.6))
    m = res.metrics
    assert m.funding_paid == approx(paid)
    assert (m.funding_paid > 0) == (side > 0)
    assert m.final_equity == approx(base.metrics.final_equity - paid)
    assert m.final_equity == approx(10_000 + q * (103 - 100) - paid)
    (t,) = res.trades
    assert t.funding == approx(paid)
    assert t.pnl == approx(q * 3 - paid)


def test_spot_legs_never_pay_funding():
    fr = frame(leg(FUNDING_CLOSES, funding=FUNDING_RATES, kind="spot"))
    res = run(FUNDING_TARGET, fr, settings(LegCosts(perp=False)))
    assert res.metrics.funding_paid == 0.0
    assert res.metrics.final_equity == approx(10_000 + 100 * 3)


# --- liquidation and auto-close ------------------------------------------------------

LEVERED = LegCosts(margin_ratio_initial=0.1, margin_ratio_maintenance=0.05, liquidation_fee=0.01)


def test_long_liquidation_at_the_liquidation_price():
    fr = frame(leg([100.0, 90.0, 90.0], open_=[100.0, 95.0, 90.0], low=[100.0, 80.0, 90.0]))
    res = run([5, 5, 5], fr, settings(LEVERED))
    # exposure 5 at 100, no costs: q = 50000 / 100 = 500, cash = 10000 - 50000 = -40000
    q, cash = 500.0, -40_000.0
    p_liq = -cash / (q * (1 - 0.05))  # 84.2105...: equity = maintenance 0.05 * q * p
    liq_fee = q * p_liq * 0.01
    m = res.metrics
    assert m.liquidations == 1
    (t,) = res.trades
    assert t.exit_reason == "liquidation"
    assert t.liquidation_price == approx(p_liq)
    assert t.exit_price == approx(p_liq)
    assert t.fees == approx(liq_fee)
    assert m.fees_paid == approx(liq_fee)
    # what remains: the maintenance margin minus the fee, 0.04 * q * p_liq
    assert m.final_equity == approx(cash + q * p_liq - liq_fee)
    assert m.final_equity == approx(0.04 * q * p_liq)
    assert m.trades == 1  # the unchanged target does not re-open


def test_long_liquidation_gapped_through_fills_at_the_open():
    fr = frame(leg([100.0, 81.0, 81.0], open_=[100.0, 82.0, 81.0], low=[100.0, 80.0, 81.0]))
    res = run([5, 5, 5], fr, settings(LEVERED))
    (t,) = res.trades
    assert t.exit_reason == "liquidation"
    assert t.exit_price == approx(82.0)  # below p_liq = 84.21
    assert res.metrics.final_equity == approx(-40_000 + 500 * 82 * (1 - 0.01))


def test_short_liquidation():
    fr = frame(leg([100.0, 110.0, 110.0], open_=[100.0, 105.0, 110.0], high=[100.0, 120.0, 110.0]))
    res = run([-5, -5, -5], fr, settings(LEVERED))
    # q = -500, cash = 10000 + 50000 = 60000; cash - 500 p = 0.05 * 500 p
    q, cash = 500.0, 60_000.0
    p_liq = cash / (q * (1 + 0.05))  # 114.2857...
    (t,) = res.trades
    assert (t.side, t.exit_reason) == ("short", "liquidation")
    assert t.liquidation_price == approx(p_liq)
    assert t.exit_price == approx(p_liq)
    assert res.metrics.liquidations == 1
    assert res.metrics.final_equity == approx(cash - q * p_liq - q * p_liq * 0.01)


def test_auto_close_fires_before_liquidation():
    fr = frame(leg([100.0, 90.0, 90.0], open_=[100.0, 95.0, 90.0], low=[100.0, 80.0, 90.0]))
    f = 0.0005
    costs = LegCosts(fee=f, margin_ratio_initial=0.1, margin_ratio_maintenance=0.05, liquidation_fee=0.01)
    res = run([5, 5, 5], fr, settings(costs, liquidation_buffer=0.1))
    q = 5 * 10_000 / (100 * (1 + f))  # 499.75...
    cash = 10_000 - q * 100 * (1 + f)  # the buy costs exactly 5 x equity: 10000 - 50000
    assert cash == approx(-40_000)
    # equity = (1 + b) x maintenance: cash + q p = 1.1 * 0.05 * q p
    p_ac = -cash / (q * (1 - 0.05 * 1.1))
    p_liq = -cash / (q * (1 - 0.05))
    assert p_ac > p_liq
    m = res.metrics
    assert (m.autocloses, m.liquidations) == (1, 0)
    (t,) = res.trades
    assert t.exit_reason == "auto_close"
    assert t.exit_price == approx(p_ac)
    assert t.liquidation_price == approx(p_liq)
    assert cash + q * p_ac == approx(1.1 * 0.05 * q * p_ac)
    assert m.final_equity == approx(cash + q * p_ac * (1 - f))  # ordinary fee, no liquidation fee


# --- trailing stop -------------------------------------------------------------------

# returns 0, 0.01, 0.02 over bars 1..3; entry at bar 4's close
STOP_CLOSES = [100.0, 100.0, 101.0, 103.02, 104.0, 106.0, 105.0, 104.5, 104.5, 104.5, 104.5, 104.5]


def _stop_bars(bar7_open: float) -> Frame:
    o = list(STOP_CLOSES)
    o[5], o[6], o[7] = 104.0, 106.0, bar7_open
    lo = [min(a, b) for a, b in zip(o, STOP_CLOSES, strict=True)]
    lo[5], lo[6], lo[7] = 103.0, 105.0, 104.0
    return frame(leg(STOP_CLOSES, open_=o, low=lo))


def _trail_levels(k: float) -> tuple[float, float, float]:
    c = STOP_CLOSES
    r = [c[i] / c[i - 1] - 1 for i in range(1, 7)]  # r[0] = bar 1's return
    level4 = c[4] * (1 - k * statistics.stdev(r[0:3]))  # sigma of bars 1..3 = 0.01: 104 * 0.98
    level5 = c[5] * (1 - k * statistics.stdev(r[1:4]))  # bars 2..4
    level6 = c[6] * (1 - k * statistics.stdev(r[2:5]))  # bars 3..5
    return level4, level5, level6


@pytest.mark.parametrize("bar7_open", [105.0, 104.5])
def test_trailing_stop_trails_up_only_and_fires_at_the_stop_or_the_open(bar7_open):
    k = 2.0
    level4, level5, level6 = _trail_levels(k)
    assert level4 == approx(101.92, rel=1e-6)
    assert level5 > level4 and level6 < level5  # bar 5 raises the stop, bar 6 would lower it
    assert 105.0 > level5 > 104.5 and 103.0 > level4  # bars 5 and 6 stay above; bar 7 crosses
    targets = [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1]
    res = run(targets, _stop_bars(bar7_open), settings(stop_window=3, stop_multiple=k))
    first, second = res.trades
    assert first.exit_reason == "stop"
    assert bar_index(first.entry_ts) == 4 and bar_index(first.exit_ts) == 8  # stopped in bar 7
    # the highest level so far fires; a bar that opens below it fills at its open
    assert first.exit_price == approx(min(bar7_open, level5))
    assert res.metrics.stops == 1
    # unchanged target 1 at bar 8 does not re-enter; 0 then 1 again does, at bar 10
    assert bar_index(second.entry_ts) == 10
    assert second.exit_reason == "open"
    assert res.metrics.trades == 2


# --- drawdown kill switch ------------------------------------------------------------


def test_drawdown_kill_switch_closes_and_stops_trading():
    closes = [100.0, 90.0, 75.0, 80.0, 90.0, 100.0]
    fr = frame(leg(closes))
    res = run([1, 1, 1, 0, 1, -1], fr, settings(max_drawdown=0.2))
    # 100 units; equity 10000, 9000 (-10 %), 7500 (-25 % <= -20 %): closed at bar 2's close
    m = res.metrics
    assert m.killed
    (t,) = res.trades
    assert (t.exit_reason, t.exit_price) == ("kill_switch", 75.0)
    assert bar_index(t.exit_ts) == 3
    assert m.trades == 1
    assert m.final_equity == approx(7_500.0)
    assert res.equity == approx(np.array([10_000, 9_000, 7_500, 7_500, 7_500, 7_500]))


# --- risk caps -----------------------------------------------------------------------


def test_max_position_notional_caps_the_size():
    fr = frame(leg([100.0, 100.0, 100.0]))
    res = run([1, 1, 1], fr, settings(max_position_notional=2_500.0))
    assert res.trades[0].size == approx(25.0)  # 2500 / 100


def test_max_order_notional_clips_each_order_and_nothing_completes_it():
    fr = frame(leg([100.0] * 5))
    res = run([1, 1, 1, 0.5, 0.5], fr, settings(max_order_notional=1_000.0))
    # bar 0: wants 100 units, one order of at most 1000 / 100 = 10; bars 1-2: same target, no order
    # bar 3: target 0.5 wants 50 units, 10 more -> 20
    (t,) = res.trades
    assert t.size == approx(20.0)
    assert res.metrics.turnover == approx((1_000 + 1_000) / 10_000)


@pytest.mark.parametrize(
    ("max_leverage", "imr", "units"),
    [
        (2.0, 0.1, 200.0),  # max_leverage 2: 2 x 10000 / 100
        (10.0, 0.25, 400.0),  # 1 / margin_ratio_initial = 4 is tighter than 10
        (None, 0.1, 500.0),  # target 5 < 1 / 0.1: not capped
    ],
)
def test_leverage_caps_gross_notional(max_leverage, imr, units):
    fr = frame(leg([100.0, 100.0, 100.0]))
    res = run([5, 5, 5], fr, settings(LegCosts(margin_ratio_initial=imr), max_leverage=max_leverage))
    assert res.trades[0].size == approx(units)


def test_leverage_cap_counts_the_other_legs():
    a = leg([100.0] * 3, key="sim:A")
    b = leg([50.0] * 3, key="sim:B")
    st = settings(LegCosts(key="sim:A"), LegCosts(key="sim:B"), max_leverage=2.0)
    res = run([[1.5] * 3, [1.5] * 3], frame(a, b), st)
    # leg A: 150 units (15000 notional); leg B: room (2 x 10000 - 15000) / 50 = 100 units
    sizes = {t.instrument: t.size for t in res.trades}
    assert sizes == {"sim:A": approx(150.0), "sim:B": approx(100.0)}


@pytest.mark.parametrize("side", [1, -1])
def test_lot_size_rounds_toward_zero(side):
    fr = frame(leg([100.0, 100.0, 100.0]))
    res = run([side * 1] * 3, fr, settings(LegCosts(lot_size=0.3)))
    # 100 units wanted -> floor(100 / 0.3) = 333 lots = 99.9
    (t,) = res.trades
    assert t.size == approx(333 * 0.3)
    assert t.side == ("long" if side > 0 else "short")


def test_lot_rounding_keeps_the_sign_of_a_clipped_reduction():
    fr = frame(leg([100.0] * 5))
    st = settings(LegCosts(lot_size=1.0), max_order_notional=500.0)  # at most 5 units per order
    res = run([0.05, 0.1, -1, -1, -1], fr, st)
    # bar 0: 5 units; bar 1: 10; bar 2: wants -100, one order of 5 -> 5 units long, still open
    assert [(t.side, t.size, t.exit_reason) for t in res.trades] == [("long", 10.0, "open")]
    assert res.metrics.turnover == approx(1_500 / 10_000)


def test_spot_legs_never_go_short():
    fr = frame(leg([100.0, 100.0, 110.0, 120.0], kind="spot"))
    st = settings(LegCosts(perp=False))
    assert run([-1, -1, -1, -1], fr, st).metrics.trades == 0
    res = run([1, -1, -1, 1], fr, st)
    # bar 0 long 100 units; bar 1 -1 only closes; bar 3: the target changed back to 1
    first, second = res.trades
    assert (first.side, first.exit_reason, first.exit_price) == ("long", "signal", 100.0)
    assert bar_index(second.entry_ts) == 3 and second.side == "long"


def test_spot_is_paid_for_with_equity_never_borrowed():
    fr = frame(leg([100.0, 100.0, 50.0], kind="spot"))
    res = run([3, 3, 3], fr, settings(LegCosts(perp=False), max_leverage=5))
    # target 3x equity, but spot is capped at equity / price = 100 units, not 300
    assert res.trades[0].size == 100.0
    assert res.equity[-1] == approx(5_000.0)  # halved with the price, never below zero


# --- metrics -------------------------------------------------------------------------


def test_metrics_on_a_known_equity_path():
    day = 86_400.0
    closes = [100.0, 110.0, 99.0, 100.0, 120.0, 120.0, 110.0]
    res = run([1, 1, 0, 1, 0, 1, 1], frame(leg(closes), bar_seconds=day), settings())
    # 100 units 100 -> 99 (pnl -100); 99 units 100 -> 120 (+1980); 99 units from 120, open at 110
    path = [10_000, 11_000, 9_900, 9_900, 11_880, 11_880, 10_890]
    assert res.equity == approx(np.array(path, dtype=float))
    m = res.metrics
    assert m.max_drawdown == approx(1 - 9_900 / 11_000)  # 0.1
    # a position held at bars 1, 2, 4, 6's closes (funding/mark time, before the decision)
    assert m.exposure == approx(4 / 7)
    assert m.trades == 3  # two closed, one still open
    assert m.win_rate == approx(1 / 2)
    assert m.profit_factor == approx(1_980 / 100)
    assert m.total_return == approx(10_890 / 10_000 - 1)
    assert m.cagr == approx((10_890 / 10_000) ** (365 / 7) - 1)
    assert m.calmar == approx(m.cagr / 0.1)
    r = [a / b - 1 for a, b in zip(path, [10_000, *path[:-1]], strict=True)]
    assert m.sharpe == approx(statistics.mean(r) / statistics.stdev(r) * math.sqrt(365))
    downside = math.sqrt(sum(x * x for x in r if x < 0) / len(r))
    assert m.sortino == approx(statistics.mean(r) / downside * math.sqrt(365))
    # traded notional: buy 10000, sell 9900, buy 9900, sell 11880, buy 11880; over mean equity
    assert m.turnover == approx((10_000 + 9_900 + 9_900 + 11_880 + 11_880) / (sum(path) / 7))
    open_trade = res.trades[-1]
    assert open_trade.exit_reason == "open"
    assert math.isnan(open_trade.exit_price)
    assert open_trade.pnl == approx(99 * (110 - 120))


# --- settings from the configuration -------------------------------------------------


def test_strategy_override_can_switch_the_stop_off(tmp_path):
    directory = tmp_path / "configs"
    shutil.copytree(CONFIGS, directory)
    risk = yaml.safe_load((directory / "risk.yaml").read_text())
    risk["strategies"]["sol_ema_cross"]["dynamic_stop"] = None
    (directory / "risk.yaml").write_text(yaml.safe_dump(risk))
    config = load_config(directory)
    assert config.risk.limits_for("sol_ema_cross").dynamic_stop is None
    st = SimSettings.from_config(config, ["binanceusdm:SOL-PERP"], "sol_ema_cross")
    assert st.risk.max_position_notional == 5_000.0  # the other override applies
    assert st.risk.stop_multiple is None
