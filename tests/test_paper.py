"""Paper trading reproduces the backtest: the paper account (the kernel's ``step`` one bar at
a time, ``sim.paper``) fed a strategy's streamed targets gives the backtest's equity curve,
trade list and metrics, bit for bit, on the sample data and on frames made to hit every
exit (stops, auto-close, liquidation, the kill switch)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.backtest import backtest
from sim.history import load_frame
from sim.paper import PaperAccount, frame_bars, paper_replay
from sim.settings import LegCosts, RiskRules, SimSettings
from strategies.frame import Frame, LegData
from strategies.registry import strategy_class
from strategies.stream import LegBar
from strategies.stream import SignalStream
from tests.fixed_strategy import Fixed

MINUTE = ["binanceusdm:SOL-PERP"]
CARRY = ["drift:SOL-PERP", "jupiter:SOL-USDC"]


class FixedTargets(Fixed):
    """Fixed targets, streamed column by column."""

    def stream(self, legs, bar_seconds):
        targets = self.targets

        class Columns(SignalStream):
            def _push(self, ts_ns, bars):
                return targets[:, self.bars].copy()

        return Columns(legs, bar_seconds)


def build(name: str, params: dict):
    cls = strategy_class(name)
    return cls(cls.Params(**params))


def assert_same(paper, back) -> None:
    assert np.array_equal(paper.equity, back.equity), "equity curves differ"
    assert len(paper.trades) == len(back.trades)
    for mine, theirs in zip(paper.trades, back.trades):
        a, b = dataclasses.astuple(mine), dataclasses.astuple(theirs)
        assert all(x == y or (x != x and y != y) for x, y in zip(a, b)), (mine, theirs)  # NaN == NaN here
    assert paper.metrics == back.metrics


@pytest.fixture(scope="module")
def frames(lake_config) -> dict[str, Frame]:
    return {"minute": load_frame(lake_config, MINUTE), "carry": load_frame(lake_config, CARRY)}


@pytest.mark.parametrize(
    "name, params, frame, instruments, strategy_config",
    [
        ("ema_cross", {}, "minute", MINUTE, "sol_ema_cross"),
        ("ema_cross", {"fast": 5, "slow": 20, "direction": "long_only", "exposure": 2.0}, "minute", MINUTE, "sol_ema_cross"),
        ("funding_carry", {}, "carry", CARRY, "sol_funding_carry"),
        ("funding_carry", {"lookback_hours": 6, "enter_hourly_rate": 1e-5, "exit_hourly_rate": -1e-5}, "carry", CARRY,
         "sol_funding_carry"),
    ],
)  # fmt: skip
def test_paper_equals_backtest_on_the_sample(lake_config, frames, name, params, frame, instruments, strategy_config):
    """The configured costs and risk rules (fees, impact, latency, stops, kill switch)."""
    settings = SimSettings.from_config(lake_config, instruments, strategy_config)
    data = frames[frame]
    back = backtest(build(name, params), data.head(len(data)), settings)
    paper = paper_replay(build(name, params), data.head(len(data)), settings)
    assert back.trades, "the case should trade"
    assert_same(paper, back)


def synthetic(n: int, seed: int, legs: int = 2) -> Frame:
    """A volatile random walk per leg with a crash in the middle: stops, liquidations,
    auto-closes and the kill switch all fire somewhere."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 60_000_000_000
    out = []
    for l in range(legs):
        r = rng.normal(0.0, 0.01, n)
        r[n // 2 : n // 2 + 5] = -0.06
        close = 100.0 * np.exp(np.cumsum(r))
        open_ = np.concatenate([[100.0], close[:-1]])
        span = np.abs(rng.normal(0.0, 0.006, n)) * close
        funding = np.where(np.arange(n) % 60 == 59, rng.normal(1e-4, 2e-4, n), 0.0)
        out.append(LegData(f"sim:L{l}-PERP" if l == 0 else f"sim:L{l}", "perp" if l == 0 else "spot", open_,
                           np.maximum(open_, close) + span, np.minimum(open_, close) - span, close,
                           rng.uniform(50, 500, n), funding, np.zeros(n)))  # fmt: skip
    return Frame(ts=ts, bar_seconds=60.0, legs=tuple(out))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "settings",
    [
        SimSettings(legs=(LegCosts("sim:L0-PERP", fee=0.0005, slippage_bps=2, impact="sqrt", impact_window_bars=30,
                                   margin_ratio_initial=0.05, margin_ratio_maintenance=0.03),
                          LegCosts("sim:L1", perp=False, fee=0.001, impact="amm", pool_depth_usd=200_000, lot_size=0.01)),
                    latency_ms=1500.0, risk=RiskRules(stop_window=10, stop_multiple=6.0, liquidation_buffer=0.2)),
        SimSettings(legs=(LegCosts("sim:L0-PERP", fee=0.0005, margin_ratio_initial=0.02, margin_ratio_maintenance=0.01),
                          LegCosts("sim:L1", perp=False, fee=0.001)),
                    fill_price="close", risk=RiskRules(max_drawdown=0.3, max_leverage=20)),
        SimSettings(legs=(LegCosts("sim:L0-PERP", fee=0.0005, margin_ratio_initial=0.02, margin_ratio_maintenance=0.01),
                          LegCosts("sim:L1", perp=False, fee=0.001)),
                    risk=RiskRules(max_leverage=10)),
    ],
    ids=["auto_close", "kill_switch", "liquidation"],
)  # fmt: skip
def test_paper_equals_backtest_through_every_exit(seed, settings, request):
    """Random decisions, and a leveraged long held into the crash, which the case's rules
    end with the exit its id names."""
    frame = synthetic(3_000, seed)
    rng = np.random.default_rng(seed + 100)
    target = np.full((2, len(frame)), np.nan)
    flips = rng.integers(0, len(frame), 120)
    target[0, flips] = rng.choice([-15.0, -3.0, 0.0, 4.0, 12.0], len(flips))
    target[1, flips[::2]] = rng.choice([0.0, 0.3, 0.8, -0.5], len(flips[::2]))
    crash = len(frame) // 2
    target[:, crash - 30 : crash + 30] = np.nan
    target[0, crash - 10] = 12.0
    strategy = FixedTargets(target)
    back = backtest(strategy, frame, settings)
    paper = paper_replay(strategy, frame, settings)
    reasons = {t.exit_reason for t in back.trades}
    assert request.node.callspec.id.split("-")[0] in reasons, reasons
    assert_same(paper, back)


def test_the_step_reports_each_fill_with_its_reason_and_the_positions():
    frame = synthetic(600, 7, legs=1)
    settings = SimSettings(legs=(LegCosts("sim:L0-PERP", fee=0.001, slippage_bps=5),))
    account = PaperAccount(settings, 60.0)
    target = np.full(len(frame), np.nan)
    target[[10, 50]] = [1.0, 0.0]
    results = [account.step(ts, bars, target[i : i + 1]) for i, (ts, bars) in enumerate(frame_bars(frame))]
    filled = [(r.bar, f) for r in results for f in r.fills]
    assert [bar for bar, _ in filled] == [11, 51], "decided at a close, filled at the next open"
    (_, buy), (_, sell) = filled
    assert buy.qty > 0 and sell.qty == -buy.qty and buy.reason == sell.reason == "signal"
    assert buy.price == pytest.approx(frame.leg(0).open[11] * 1.0005) and buy.reference_price == frame.leg(0).open[11]
    assert buy.fee == pytest.approx(abs(buy.qty) * buy.price * 0.001)
    assert results[20].positions == (buy.qty,) and results[60].positions == (0.0,)
    assert [t.exit_reason for r in results for t in r.trades] == ["signal"]


def test_a_step_refuses_bars_out_of_order_and_the_wrong_shape():
    account = PaperAccount(SimSettings(legs=(LegCosts(),)), 60.0)
    bar = LegBar(1.0, 1.0, 1.0, 1.0, 1.0)
    account.step(60, [bar], np.array([np.nan]))
    with pytest.raises(ValueError, match="not after"):
        account.step(60, [bar], np.array([np.nan]))
    with pytest.raises(ValueError, match="1 leg bar"):
        account.step(120, [bar, bar], np.array([np.nan, np.nan]))
