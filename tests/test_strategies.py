"""Built-in strategies: no lookahead, declared search spaces, parameter validation, the live
path, and each strategy's own logic, on the sample data (Binance SOL-PERP 1m bars, Drift
SOL-PERP funding with its mark/oracle TWAPs) and on small hand-made frames."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from sim.backtest import backtest
from sim.history import load_frame
from sim.search import enumerate_combos, plan
from sim.settings import LegCosts, SimSettings
from strategies.frame import Frame, LegData
from strategies.stream import LegBar, StreamLeg, WindowStream
from strategies.ml_direction import FEATURES, MlDirection, direction_labels, walk_forward_blocks
from strategies.registry import builtin_names, strategy_class, strategy_names

MINUTE = ["binanceusdm:SOL-PERP"]
CARRY = ["drift:SOL-PERP", "jupiter:SOL-USDC"]
ML_SLICE = 4_000  # bars of the 1m frame the ml_direction lookahead runs on
# Walk-forward settings scaled to the slice (the defaults retrain every 1440 bars on 10080)
ML_FAST = {"train_window": 2000, "retrain_every": 500, "min_train_rows": 500, "n_estimators": 20}


def fresh(frame: Frame, n: int | None = None) -> Frame:
    """A new Frame (empty indicator cache) over the first ``n`` bars."""
    return frame.head(len(frame) if n is None else n)


@pytest.fixture(scope="module")
def frames(lake_config) -> dict[str, Frame]:
    return {"minute": load_frame(lake_config, MINUTE), "carry": load_frame(lake_config, CARRY)}


@dataclass(frozen=True)
class Case:
    frame: str  # key in ``frames``
    params: tuple[dict, ...]  # parameter sets to check
    cuts: tuple[int, ...]  # truncation points n (bars kept)
    poison_cuts: tuple[int, ...]  # points n from which the future is replaced by garbage
    length: int | None = None  # use only the first ``length`` bars
    # intermediate series that must survive truncation as well (finer than the targets)
    internals: Callable[[object, Frame], np.ndarray] | None = None


CASES = {
    "ema_cross": Case(
        frame="minute",
        params=({}, {"fast": 5, "slow": 20, "direction": "long_only"}),
        cuts=(1, 2, 19, 20, 21, 47, 48, 49, 1_000, 20_001, 43_199),
        poison_cuts=(20, 48, 20_001),
    ),
    "funding_carry": Case(
        frame="carry",
        params=({}, {"lookback_hours": 6, "enter_hourly_rate": 0.00001, "exit_hourly_rate": -0.00001}),
        cuts=(1, 2, 5, 6, 7, 100, 2_500, 4_321, 8_466),
        poison_cuts=(1, 6, 100, 2_500, 4_321, 8_000),
        internals=lambda strategy, frame: strategy.rate(frame),
    ),
    "ml_direction": Case(
        frame="minute",
        params=(ML_FAST,),  # threshold and direction only map the same probabilities
        # block starts are multiples of 500: cut just before, at and after them
        cuts=(499, 500, 501, 999, 1_000, 1_001, 1_002, 2_750, 3_999),
        poison_cuts=(1_001, 2_750),
        length=ML_SLICE,
        internals=lambda strategy, frame: strategy.probabilities(frame),
    ),
}


def case_frame(frames: dict[str, Frame], case: Case) -> Frame:
    return fresh(frames[case.frame], case.length)


def build(name: str, params: dict):
    cls = strategy_class(name)
    return cls(cls.Params(**params))


def first_difference(a: np.ndarray, b: np.ndarray) -> str:
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    leg, bar = np.argwhere(~same)[0]
    return f"leg {leg} bar {bar}: {a[leg, bar]} vs {b[leg, bar]}"


def test_every_builtin_strategy_has_a_case():
    assert set(builtin_names()) == set(CASES)


# ---------------------------------------------------------------------------- lookahead


def poisoned(frame: Frame, n: int) -> Frame:
    """The same bars up to ``n - 1``; from bar ``n`` on, prices jump +50% / -40% on
    alternate bars and funding swings between +-0.1% an hour."""
    k = np.arange(len(frame) - n)
    jump = np.where(k % 2 == 0, 1.5, 0.6)
    rate = np.where(k % 2 == 0, 1e-3, -1e-3)

    def spoil(x: np.ndarray, new: np.ndarray) -> np.ndarray:
        return np.concatenate([x[:n], new])

    legs = tuple(
        LegData(
            leg.key,
            leg.kind,
            *(spoil(getattr(leg, c), getattr(leg, c)[n:] * jump) for c in ("open", "high", "low", "close")),
            spoil(leg.volume, leg.volume[n:] * 3.0 + 1.0),
            spoil(leg.funding, rate),
            spoil(leg.funding_known, rate),
        )
        for leg in frame.legs
    )
    return Frame(frame.ts.copy(), frame.bar_seconds, legs, frame.notes)


@pytest.mark.parametrize("name", strategy_names())
def test_truncating_the_future_changes_no_past_signal(name, frames):
    case = CASES[name]
    base = case_frame(frames, case)
    legs = len(strategy_class(name).legs)
    for params in case.params:
        strategy = build(name, params)
        whole = fresh(base)
        full = strategy.signals(whole)
        inner = case.internals(strategy, whole) if case.internals else None
        assert full.shape == (legs, len(base))
        assert np.isfinite(full).any(), "nothing to compare: the strategy never has an opinion"
        for how, n, frame in itertools.chain(
            (("cut", n, fresh(base, n)) for n in case.cuts),
            (("poisoned future", n, poisoned(base, n)) for n in case.poison_cuts),
        ):
            strategy = build(name, params)
            part = strategy.signals(frame)
            assert part.shape == (legs, len(frame))
            assert np.array_equal(part[:, :n], full[:, :n], equal_nan=True), (
                f"{name} {params}: {how} at {n} changed {first_difference(part[:, :n], full[:, :n])}"
            )
            if inner is not None:
                mine = case.internals(strategy, frame)
                assert np.array_equal(mine[:n], inner[:n], equal_nan=True), f"{name} {params}: {how} at {n} changed internals"


@pytest.mark.parametrize("name", strategy_names())
def test_on_bar_is_the_last_column_of_signals(name, frames):
    case = CASES[name]
    base = case_frame(frames, case)
    params = case.params[0]
    full = build(name, params).signals(fresh(base))
    for n in case.cuts[::3]:
        live = build(name, params).on_bar(fresh(base, n))
        assert live.shape == (len(strategy_class(name).legs),)
        assert np.array_equal(live, full[:, n - 1], equal_nan=True), (name, n, live, full[:, n - 1])


def stream_targets(strategy, frame: Frame) -> np.ndarray:
    """The targets a paper session's stream gives, bar after bar over ``frame``."""
    legs = [StreamLeg(leg.key, leg.kind) for leg in frame.legs]
    stream = strategy.stream(legs, frame.bar_seconds)
    cols = []
    for i in range(len(frame)):
        bars = [LegBar(*(float(getattr(leg, c)[i]) for c in LEG_BAR_COLUMNS)) for leg in frame.legs]
        cols.append(stream.push(int(frame.ts[i]), bars))
    return np.column_stack(cols)


LEG_BAR_COLUMNS = ("open", "high", "low", "close", "volume", "funding", "funding_known")

# Bars each stream is held to: the built-ins over their whole frame (they stream
# incrementally), ml_direction (the recompute-the-window fallback) over a short slice.
STREAM_BARS = {"ema_cross": None, "funding_carry": None, "ml_direction": 1_100}


@pytest.mark.parametrize("name", strategy_names())
def test_stream_gives_the_backtests_targets_bit_for_bit(name, frames):
    """Paper trading decides bar by bar what the backtest decided over the whole frame."""
    case = CASES[name]
    base = fresh(case_frame(frames, case), STREAM_BARS[name])
    for params in case.params:
        full = build(name, params).signals(fresh(base))
        streamed = stream_targets(build(name, params), fresh(base))
        assert np.array_equal(streamed, full, equal_nan=True), (
            f"{name} {params}: streamed targets differ {first_difference(streamed, full)}"
        )


def test_builtin_streams_are_incremental():
    assert type(build("ema_cross", {}).stream([StreamLeg("a:X", "perp")], 60.0)).__name__ != "WindowStream"
    carry = build("funding_carry", {}).stream([StreamLeg("a:X-PERP", "perp"), StreamLeg("b:X", "spot")], 3600.0)
    assert not isinstance(carry, WindowStream)
    with pytest.raises(ValueError, match="leg 0"):
        build("funding_carry", {}).stream([StreamLeg("b:X", "spot"), StreamLeg("a:X-PERP", "perp")], 3600.0)


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", strategy_names())
def test_search_space_is_declared_and_buildable(name):
    cls = strategy_class(name)
    fields = cls.Params.model_fields
    space = cls.Params.search_space()
    assert space, f"{name} declares no search space"
    assert set(space) <= set(fields)
    default = cls()
    assert default.params == cls.Params()
    assert isinstance(default.warmup_bars(), int) and default.warmup_bars() >= 0
    for pname, dim in space.items():
        grid = dim.grid()
        assert grid, pname
        # every grid value satisfies the field's own constraints
        info = fields[pname]
        adapter = TypeAdapter(Annotated[info.annotation, *info.metadata])
        for value in grid:
            adapter.validate_python(value)
    # every combination that passes the cross-field rules builds a strategy
    combos = enumerate_combos(cls, plan(cls, []))
    assert combos.params
    total = math.prod(len(d.grid()) for d in space.values())
    assert len(combos.params) + combos.rejected == total
    assert total <= 20_000, "the default grid should stay sweepable"
    for params in combos.params[:: max(1, len(combos.params) // 300)]:
        strategy = cls(params)
        assert strategy.params is params
        assert strategy.warmup_bars() >= 0


INVALID = [
    ("ema_cross", {"fast": 48, "slow": 48}, "fast"),
    ("ema_cross", {"fast": 50, "slow": 20}, "fast"),
    ("ema_cross", {"exposure": 0}, "exposure"),
    ("funding_carry", {"enter_hourly_rate": 0.00001, "exit_hourly_rate": 0.00001}, "enter_hourly_rate"),
    ("funding_carry", {"enter_hourly_rate": -0.00001, "exit_hourly_rate": 0.0}, "enter_hourly_rate"),
    ("funding_carry", {"exposure": 0.6}, "exposure"),
    ("funding_carry", {"lookback_hours": 0}, "lookback_hours"),
    ("ml_direction", {"ema_short": 50, "ema_long": 50}, "ema_short"),
    ("ml_direction", {"train_window": 500}, "min_train_rows"),
    ("ml_direction", {"threshold": 0.4}, "threshold"),
    ("ml_direction", {"direction": "short_only"}, "direction"),
]


@pytest.mark.parametrize(("name", "params", "field_name"), INVALID)
def test_invalid_params_are_refused_naming_the_field(name, params, field_name):
    with pytest.raises(ValidationError) as exc:
        strategy_class(name).Params(**params)
    assert field_name in str(exc.value)


@pytest.mark.parametrize("name", strategy_names())
def test_unknown_param_is_refused(name):
    with pytest.raises(ValidationError) as exc:
        strategy_class(name).Params(bogus_knob=1)
    assert "bogus_knob" in str(exc.value)


def test_params_are_frozen():
    params = strategy_class("funding_carry").Params()
    with pytest.raises(ValidationError):
        params.exposure = 0.9


# ---------------------------------------------------------------------------- synthetic frames


def synthetic_frame(close: np.ndarray, funding_known=None, funding=None, bar_seconds: float = 3600.0, spot=None) -> Frame:
    n = len(close)
    close = np.asarray(close, dtype=np.float64)

    def leg(key, kind, c, known, settled):
        return LegData(key, kind, c, c, c, c, np.ones(n), settled, known)

    zeros = np.zeros(n)
    known = zeros if funding_known is None else np.asarray(funding_known, dtype=np.float64)
    settled = zeros if funding is None else np.asarray(funding, dtype=np.float64)
    legs = [leg("sim:PERP", "perp", close, known, settled)]
    if spot is not None:
        legs.append(leg("sim:SPOT", "spot", np.asarray(spot, dtype=np.float64), zeros, zeros))
    ts = np.arange(n, dtype=np.int64) * int(bar_seconds * 1e9)
    return Frame(ts=ts, bar_seconds=bar_seconds, legs=tuple(legs))


def test_funding_carry_enters_holds_through_the_band_and_exits():
    e = 0.45
    # enter above 2e-5, leave below 0; exactly at a threshold is not across it
    rate = [0.0, 2e-5, 3e-5, 1e-5, 0.0, 0.5e-5, -1e-5, 1e-5, 2e-5, 2.1e-5, -0.1e-5, 5e-5]
    held = [0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    frame = synthetic_frame(np.full(len(rate), 100.0), funding_known=rate, spot=np.full(len(rate), 100.0))
    strategy = build("funding_carry", {"enter_hourly_rate": 2e-5, "exit_hourly_rate": 0.0})
    target = strategy.signals(frame)
    assert target.shape == (2, len(rate))
    np.testing.assert_array_equal(target[0], [-e * h for h in held])
    np.testing.assert_array_equal(target[1], [e * h for h in held])
    assert not np.signbit(target[0][np.array(held) == 0]).any(), "flat is +0.0"


def test_funding_carry_smooths_over_lookback_hours():
    rate = [1e-5, 5e-5, 1e-5, -4e-5, 3e-5, 3e-5]
    # 2-hour mean:    nan, 3e-5, 3e-5, -1.5e-5, -0.5e-5, 3e-5
    frame = synthetic_frame(np.full(6, 100.0), funding_known=rate, spot=np.full(6, 100.0))
    strategy = build("funding_carry", {"enter_hourly_rate": 2e-5, "exit_hourly_rate": 0.0, "lookback_hours": 2, "exposure": 0.25})
    np.testing.assert_allclose(strategy.rate(frame), [np.nan, 3e-5, 3e-5, -1.5e-5, -0.5e-5, 3e-5])
    np.testing.assert_array_equal(strategy.signals(frame)[1], [np.nan, 0.25, 0.25, 0, 0, 0.25])
    # on half-hour bars, one hour of lookback is two bars
    half = synthetic_frame(np.full(6, 100.0), funding_known=rate, spot=np.full(6, 100.0), bar_seconds=1800.0)
    one_hour = build("funding_carry", {"lookback_hours": 1})
    np.testing.assert_allclose(one_hour.rate(half), [np.nan, 3e-5, 3e-5, -1.5e-5, -0.5e-5, 3e-5])


def test_funding_carry_needs_a_perp_and_a_spot_leg():
    strategy = build("funding_carry", {})
    with pytest.raises(ValueError, match="two legs"):
        strategy.signals(synthetic_frame(np.full(3, 100.0)))
    flipped = synthetic_frame(np.full(3, 100.0), spot=np.full(3, 100.0))
    flipped = Frame(flipped.ts, flipped.bar_seconds, flipped.legs[::-1])
    with pytest.raises(ValueError, match="must be a perp"):
        strategy.signals(flipped)


def test_funding_carry_backtest_collects_funding_on_a_synthetic_frame():
    n = 48
    rate = np.full(n, 1e-4)  # longs pay shorts 1 bp an hour, every hour
    frame = synthetic_frame(np.full(n, 100.0), funding_known=rate, funding=rate, spot=np.full(n, 100.0))
    settings = SimSettings(legs=(LegCosts("sim:PERP", perp=True), LegCosts("sim:SPOT", perp=False)))
    result = backtest(build("funding_carry", {}), frame, settings)
    m = result.metrics
    # decided at bar 0's close, filled at bar 1's open, funding from bar 1's close on
    held_bars = n - 1
    notional = 0.45 * 10_000.0
    assert m.funding_paid == pytest.approx(-notional * 1e-4 * held_bars, rel=1e-9)
    assert m.final_equity == pytest.approx(10_000.0 + notional * 1e-4 * held_bars, rel=1e-9)
    perp = [t for t in result.trades if t.instrument == "sim:PERP"]
    spot = [t for t in result.trades if t.instrument == "sim:SPOT"]
    assert [t.side for t in perp] == ["short"] and [t.side for t in spot] == ["long"]
    assert spot[0].funding == 0.0


# ---------------------------------------------------------------------------- ml_direction


def test_walk_forward_blocks_train_only_on_known_labels():
    for n, every, window in [(43_200, 1440, 10_080), (12_000, 1000, 4000), (2_500, 700, 300), (10, 3, 100)]:
        blocks = walk_forward_blocks(n, every, window)
        assert [b.start for b in blocks] == list(range(every, n, every))  # anchored at bar 0
        assert all(a.stop == b.start for a, b in itertools.pairwise(blocks))
        assert not blocks or blocks[-1].stop == n
        for b in blocks:
            # newest row j = train_hi - 1 = start - 2, its label reads close[start - 1]
            assert b.train_hi == b.start - 1
            assert 0 <= b.train_lo < b.train_hi and b.train_hi - b.train_lo <= window
            assert b.train_hi - b.train_lo == min(window, b.start - 1)


def leaky_frame(n: int = 3000, leak_from: int = 1500, seed: int = 7) -> tuple[Frame, np.ndarray]:
    """A random walk whose ``funding_known`` from ``leak_from`` on is the sign of the NEXT
    return: a perfect predictor that only a model fitted on those rows can exploit."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    label, _ = direction_labels(close)
    leak = np.zeros(n)
    leak[leak_from : n - 1] = np.where(label[leak_from : n - 1] == 1, 1e-4, -1e-4)
    return synthetic_frame(close, funding_known=leak, bar_seconds=60.0), label


LEAK_PARAMS = {
    "ema_short": 5,
    "ema_long": 20,
    "train_window": 1000,
    "retrain_every": 500,
    "min_train_rows": 200,
    "n_estimators": 30,
}


def test_ml_direction_cannot_use_a_future_perfect_predictor():
    from xgboost import XGBClassifier

    frame, label = leaky_frame()
    strategy = MlDirection(MlDirection.Params(**LEAK_PARAMS))
    proba = strategy.probabilities(frame)

    def accuracy(p, lo, hi):
        return ((p[lo:hi] > 0.5) == (label[lo:hi] == 1)).mean()

    assert np.isnan(proba[:500]).all() and np.isfinite(proba[500:]).all()
    # block [1500, 2000) is trained on rows <= 1498, before the leak starts: no edge
    assert accuracy(proba, 1500, 2000) < 0.6
    # block [2000, 2500) has seen rows 1500..1998 with the leak: it exploits it
    assert accuracy(proba, 2000, 2500) > 0.95
    # the whitepaper's way (one fit on every row, scoring those rows) finds the leak
    # everywhere, so the first assertion above is what tells the two apart
    x = strategy.features(frame)
    rows = np.flatnonzero(np.isfinite(x).all(axis=1))[:-1]
    insample = XGBClassifier(n_estimators=30, max_depth=3, tree_method="hist", n_jobs=1, random_state=0)
    insample.fit(x[rows], label[rows])
    whitepaper = np.full(len(frame), np.nan)
    whitepaper[rows] = insample.predict_proba(x[rows])[:, 1]
    assert accuracy(whitepaper, 1500, 2000) > 0.95


def test_ml_direction_fits_exactly_the_planned_rows(monkeypatch):
    import xgboost

    frame, label = leaky_frame(n=2600)
    strategy = MlDirection(MlDirection.Params(**LEAK_PARAMS))
    x = strategy.features(frame)
    index = {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(x))}
    fitted = []
    original = xgboost.XGBClassifier.fit

    def spy(self, X, y, **kwargs):
        rows = np.array([index[np.ascontiguousarray(r).tobytes()] for r in np.asarray(X)])
        np.testing.assert_array_equal(np.asarray(y), label[rows])
        fitted.append(rows)
        return original(self, X, y, **kwargs)

    monkeypatch.setattr(xgboost.XGBClassifier, "fit", spy)
    strategy.probabilities(frame)
    blocks = walk_forward_blocks(len(frame), 500, 1000)
    assert len(fitted) == len(blocks) == 5
    first_row = 20 - 1  # ema_long warm-up; the 5-return volatility is defined from bar 5
    for block, rows in zip(blocks, fitted, strict=True):
        assert rows.max() == block.start - 2, "the newest label must be that of bar start - 2"
        assert rows.max() + 1 < block.start, "a label read a close of the block it predicts"
        np.testing.assert_array_equal(rows, np.arange(max(block.train_lo, first_row), block.train_hi))


def test_ml_direction_features_are_scale_free(frames):
    base = fresh(frames["minute"], 2000)
    scaled_legs = tuple(
        LegData(leg.key, leg.kind, leg.open * 7, leg.high * 7, leg.low * 7, leg.close * 7, leg.volume, leg.funding, leg.funding_known)
        for leg in base.legs
    )
    scaled = Frame(base.ts, base.bar_seconds, scaled_legs)
    strategy = MlDirection(MlDirection.Params(**ML_FAST))
    a, b = strategy.features(base), strategy.features(scaled)
    assert a.shape == (2000, len(FEATURES))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_ml_direction_warmup_and_signal_mapping(frames):
    base = fresh(frames["minute"], 3000)
    params = {**ML_FAST, "threshold": 0.52}
    strategy = build("ml_direction", params)
    proba = strategy.probabilities(base)
    target = strategy.signals(base)[0]
    first = int(np.argmax(np.isfinite(target)))
    assert first == strategy.warmup_bars() == 1000  # 450 usable rows at bar 500 < 500 needed
    assert np.isnan(target[:first]).all() and np.isfinite(target[first:]).all()
    np.testing.assert_array_equal(target[first:] == 1.0, proba[first:] > 0.52)
    np.testing.assert_array_equal(target[first:] == -1.0, proba[first:] < 0.48)
    assert set(np.unique(target[first:])) == {-1.0, 0.0, 1.0}
    # the probabilities are cached per frame: long_only reuses them and never shorts
    long_only = build("ml_direction", {**params, "direction": "long_only", "exposure": 0.5}).signals(base)[0]
    np.testing.assert_array_equal(long_only[first:], np.where(proba[first:] > 0.52, 0.5, 0.0))


# ---------------------------------------------------------------------------- backtests


def test_backtest_each_strategy(frames):
    perp_costs = LegCosts("binanceusdm:SOL-PERP", perp=True, fee=0.0004, slippage_bps=1.0)
    # ml_direction with its default walk-forward (10080-bar window, retrain every 1440)
    for name, params, n in [("ema_cross", {}, None), ("ml_direction", {}, 20_000)]:
        result = backtest(build(name, params), fresh(frames["minute"], n), SimSettings(legs=(perp_costs,)))
        m = result.metrics
        assert m.trades > 0 and result.trades, name
        assert np.isfinite(result.equity).all() and math.isfinite(m.final_equity), name
        assert m.funding_paid == 0.0  # the Binance sample has no funding series
        assert not m.killed and m.liquidations == 0, name


def test_funding_carry_receives_funding_on_drift(frames):
    frame = fresh(frames["carry"])
    settings = SimSettings(
        legs=(LegCosts("drift:SOL-PERP", perp=True, fee=0.0005), LegCosts("jupiter:SOL-USDC", perp=False, fee=0.0005))
    )
    strategy = build("funding_carry", {})
    target = strategy.signals(fresh(frame))
    result = backtest(strategy, frame, settings)
    m = result.metrics
    assert m.trades > 0 and 0.0 < m.exposure < 1.0
    assert m.funding_paid < 0.0, "the short perp is paid while funding is positive"
    perp = [t for t in result.trades if t.instrument == "drift:SOL-PERP"]
    spot = [t for t in result.trades if t.instrument == "jupiter:SOL-USDC"]
    assert perp and spot and len(perp) == len(spot)
    assert {t.side for t in perp} == {"short"} and {t.side for t in spot} == {"long"}
    assert all(t.funding == 0.0 for t in spot)
    assert sum(t.funding for t in perp) == pytest.approx(m.funding_paid)
    # funding flows only while in position: each perp round trip gets exactly the rates
    # settled from its entry bar (filled at the open) to the bar before its exit fill
    ts, bar_ns = frame.ts, int(frame.bar_seconds * 1e9)
    close, settled = frame.leg(0).close, frame.leg(0).funding
    for t in perp:
        assert t.exit_reason in ("signal", "open")
        entry = int(np.searchsorted(ts, t.entry_ts.astype(np.int64)))
        exit_ = int(np.searchsorted(ts, t.exit_ts.astype(np.int64) - bar_ns))
        held = slice(entry, exit_ + 1 if t.exit_reason == "open" else exit_)
        assert t.funding == pytest.approx(np.sum(-t.size * close[held] * settled[held]), rel=1e-9, abs=1e-12)
        # decided at the close before the entry fill, unwound by a 0 target the bar before the exit
        assert (target[0, entry - 1 : held.stop - 1] < 0).all(), "held without a short target"
        if t.exit_reason == "signal":
            assert target[0, exit_ - 1] == 0.0
    # every stretch of short targets is one round trip
    short = target[0] < 0
    entries = np.flatnonzero(np.diff(short.astype(int)) == 1) + 1
    assert len(perp) == len(entries) + int(short[0])
