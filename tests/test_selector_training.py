"""The venue selector's decision core and its training: candidates, the cost model (the
simulator's), the whitepaper rule, history features from the sample lake (no look-ahead),
labels computed by hand from the recorded Drift funding CSV, walk-forward folds in time
order, the model registry in a real PostgreSQL, and `botmain train-selector` as a Ray job on
the session cluster."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import asyncpg
import numpy as np
import pandas as pd
import pytest

from cluster.config import BotmainConfig, load_config
from jobs.train_selector.dataset import DatasetSettings, build_dataset
from jobs.train_selector.walk_forward import TrainSettings, fit, fold_plan, picks, summarise
from serve import registry
from serve.selector.candidates import SelectorError, candidates
from serve.selector.costs import CostModel, basis_bps, funding_bps
from serve.selector.features import FEATURES, VenueState
from serve.selector.history import HOUR_NS, MarketHistory
from serve.selector.model import DecisionRequest, Selector, SelectorModel
from serve.selector.rule import choose_execution_venue
from serve.selector.states import MarketStates
from tests.conftest import SAMPLE_FUNDING
from tests.test_cli import botmain


@pytest.fixture(scope="module")
def shipped() -> BotmainConfig:
    return load_config()


def test_candidates_are_the_assets_perps_and_usd_spot_markets(shipped):
    keys = [c.key for c in candidates(shipped, "SOL-PERP")]
    assert keys == ["binance:SOL-USDT", "binanceusdm:SOL-PERP", "drift:SOL-PERP", "hyperliquid:SOL-PERP", "jupiter:SOL-USDC", "raydium:SOL-USDC"]
    assert [c.key for c in candidates(shipped, "drift:SOL-PERP", venues=["drift", "jupiter"])] == ["drift:SOL-PERP", "jupiter:SOL-USDC"]
    assert {c.key for c in candidates(shipped, "SOL")} == set(keys)
    with pytest.raises(SelectorError, match="unknown instrument 'DOGE-PERP'"):
        candidates(shipped, "DOGE-PERP")


def test_execution_cost_is_the_simulators_fee_slippage_and_amm_impact(shipped):
    cands = {c.key: c for c in candidates(shipped, "SOL")}
    model = CostModel(list(cands.values()))
    jup = cands["jupiter:SOL-USDC"]  # amm, pool 20M, fee 0, slippage 1 bp
    x = 0.5 * 20_000_000 / 150.0
    qty = 100.0
    assert model.impact_bps(jup, 1, qty, 150.0) == pytest.approx(1.0 + qty / (x - qty) * 1e4)
    assert model.impact_bps(jup, -1, qty, 150.0) == pytest.approx(1.0 + qty / (x + qty) * 1e4)
    drift = cands["drift:SOL-PERP"]  # sqrt impact: coef 0.5 x sigma x sqrt(q / v)
    assert model.impact_bps(drift, 1, qty, 150.0, sigma=0.01, volume=10_000.0) == pytest.approx(1.0 + 0.5 * 0.01 * math.sqrt(0.01) * 1e4)
    assert model.impact_bps(drift, 1, qty, 150.0) == pytest.approx(1.0)  # no recorded volume: fixed slippage only
    assert model.execution_bps(drift, 1, qty, 150.0) == pytest.approx(2 * (3.5 + 1.0))
    assert funding_bps(1, np.array([0.0001, -0.00005])) == pytest.approx(0.5)
    assert funding_bps(-1, np.array([0.0001])) == pytest.approx(-1.0)  # shorts receive
    assert basis_bps(1, -10.0, -2.0) == pytest.approx(-8.0)  # a long perp gains as its discount closes


def test_the_whitepaper_rule(shipped):
    cands = [c for c in candidates(shipped, "SOL", venues=["drift", "jupiter", "raydium"])]
    ex = {c.key: 1.0 for c in cands}
    jup_cheaper = {"drift:SOL-PERP": 150.0, "jupiter:SOL-USDC": 150.0, "raydium:SOL-USDC": 150.1}
    ray_cheaper = {"drift:SOL-PERP": 150.0, "jupiter:SOL-USDC": 150.1, "raydium:SOL-USDC": 150.0}
    assert choose_execution_venue(cands, 1, -0.1, jup_cheaper, ex).key == "jupiter:SOL-USDC"
    assert choose_execution_venue(cands, 1, -0.1, ray_cheaper, ex).key == "raydium:SOL-USDC"
    assert choose_execution_venue(cands, -1, -0.1, ray_cheaper, ex).key == "jupiter:SOL-USDC"  # selling: higher is better
    assert choose_execution_venue(cands, 1, 0.2, jup_cheaper, ex).key == "drift:SOL-PERP"
    assert choose_execution_venue(cands, 1, 0.0, jup_cheaper, ex).key == "raydium:SOL-USDC"


def test_without_a_model_the_rule_decides_and_says_so(shipped):
    state = VenueState(price=150.0, volatility_bps=50.0)
    request = DecisionRequest(
        instrument="SOL-PERP", side="buy", size=10, horizon_h=24,
        features={"drift:SOL-PERP": state.model_copy(update={"funding_bps_h": 0.5}), "jupiter:SOL-USDC": state, "raydium:SOL-USDC": state},
    )  # fmt: skip
    decision = Selector(shipped).decide_many([request], None)[0]
    assert decision.decided_by == "rule" and decision.model_version is None and "rule" in decision.note
    assert decision.market == "drift:SOL-PERP"  # positive funding: the whitepaper goes to Drift
    assert [a.market for a in decision.alternatives][0] == "jupiter:SOL-USDC"  # though the estimate ranks it first
    assert decision.features_from == "request"
    assert set(decision.features["drift:SOL-PERP"]) == set(FEATURES)
    with pytest.raises(SelectorError, match="binance:BTC-USDT: not a candidate"):
        Selector(shipped).decide_many([request.model_copy(update={"features": {"binance:BTC-USDT": state}})], None)


# --- history and labels from the sample lake ---------------------------------------------


@pytest.fixture(scope="module")
def history(lake_config: BotmainConfig) -> MarketHistory:
    return MarketHistory.from_lake(lake_config, "SOL-PERP")


def _csv() -> pd.DataFrame:
    df = pd.read_csv(SAMPLE_FUNDING)
    df["hour"] = pd.to_datetime(df["ts"], unit="s", utc=True).dt.floor("h")
    df["rate"] = df["fundingRate"] / df["oraclePriceTwap"]  # Drift: quote per base -> fraction (venue-apis.md)
    return df.set_index("hour")


def test_history_reads_drift_funding_and_prices_spot_at_the_index(history: MarketHistory):
    assert history.index_source.startswith("oracle price recorded with drift:SOL-PERP")
    assert history.venues["drift:SOL-PERP"].source.startswith("funding series")
    assert history.venues["jupiter:SOL-USDC"].source == "index (no recording)"
    assert any("binanceusdm:SOL-PERP: no funding series" in n for n in history.notes)  # bars alone cannot price its carry
    csv = _csv()
    hour = pd.Timestamp("2025-06-01 12:00", tz="UTC")
    i = int(np.searchsorted(history.grid, hour.value))
    row = csv.loc[hour]
    state = history.state("drift:SOL-PERP", i)
    assert state.price == pytest.approx(row["markPriceTwap"])
    assert state.premium_bps == pytest.approx((row["markPriceTwap"] - row["oraclePriceTwap"]) / row["oraclePriceTwap"] * 1e4)
    assert state.funding_bps_h == pytest.approx(row["rate"] * 1e4)
    assert state.funding_mean_24h_bps_h == pytest.approx(csv.loc[hour - pd.Timedelta(hours=23) : hour, "rate"].sum() / 24 * 1e4)
    assert history.state("jupiter:SOL-USDC", i).price == pytest.approx(row["oraclePriceTwap"])
    assert 0 < state.staleness_s < 3600  # the row of hour i, seen at the end of hour i


def test_features_never_use_data_after_the_decision(lake_config: BotmainConfig, history: MarketHistory):
    cut = pd.Timestamp("2025-09-01 00:00", tz="UTC")
    truncated = MarketHistory.from_lake(lake_config, "SOL-PERP", end=str(cut.tz_convert(None)))
    i = len(truncated.grid) - 1  # the last hour before the cut
    assert truncated.grid[i] == history.grid[i]
    for key in truncated.venues:
        assert truncated.state(key, i) == history.state(key, i)


def test_labels_are_execution_plus_the_recorded_funding_and_premium_change(history: MarketHistory):
    data = build_dataset(history, DatasetSettings(requests_per_hour=2, horizons_h=(8, 24), seed=3))
    csv = _csv()
    ex = FEATURES.index("execution_bps")
    checked = 0
    for r in np.flatnonzero(data.candidate == "drift:SOL-PERP")[:200:20]:
        i, side, h = int(data.hour[r]), int(data.X[r, FEATURES.index("side")]), int(data.X[r, FEATURES.index("horizon_h")])
        t = pd.Timestamp(history.grid[i], tz="UTC")
        held = csv.loc[t + pd.Timedelta(hours=1) : t + pd.Timedelta(hours=h), "rate"].sum()
        prem = lambda ts: (csv.loc[ts, "markPriceTwap"] - csv.loc[ts, "oraclePriceTwap"]) / csv.loc[ts, "oraclePriceTwap"] * 1e4  # noqa: E731
        expected = data.X[r, ex] + side * held * 1e4 - side * (prem(t + pd.Timedelta(hours=h)) - prem(t))
        assert data.y[r] == pytest.approx(expected, abs=1e-6)
        checked += 1
    assert checked == 10
    spot = data.candidate == "jupiter:SOL-USDC"
    np.testing.assert_allclose(data.y[spot], data.X[spot, ex])  # spot: execution only
    assert data.n_requests == len(np.unique(data.request)) and set(data.rule_pick) <= set(data.keys)


def test_walk_forward_folds_are_in_time_order_with_an_embargo(history: MarketHistory):
    data = build_dataset(history, DatasetSettings(requests_per_hour=1, horizons_h=(1, 24)))
    plan = fold_plan(data, folds=3, embargo_h=24)
    assert len(plan) == 3
    previous_end = -1
    for train, test in plan:
        assert data.hour[train].max() < data.hour[test].min() - 24
        assert data.hour[test].min() > previous_end
        previous_end = data.hour[test].max()
    train, test = plan[-1]
    booster = fit(data.X[train], data.y[train], TrainSettings(n_estimators=40))
    summary = summarise(picks(data, test, booster.inplace_predict(data.X[test])))
    assert summary["requests"] == len(np.unique(data.request[test]))
    assert summary["hindsight_bps"] <= min(summary["model_bps"], summary["rule_bps"], summary["always_perp_bps"], summary["always_spot_bps"])
    assert 0.0 <= summary["accuracy"] <= 1.0


# --- registry --------------------------------------------------------------------------------


def _run(dsn: str, fn):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_registry_versions_one_active_model_and_checks_artifacts(dsn: str):
    async def scenario(conn):
        a = await registry.register(conn, "venue_selector", "v1", {"model_bps": 1.0}, FEATURES, b"one", "xgboost-ubj", activate=True)
        b = await registry.register(conn, "venue_selector", "v2", {"model_bps": 0.5}, FEATURES, b"two", "xgboost-ubj")
        assert a.is_active and not b.is_active
        assert (await registry.activate(conn, "venue_selector", "v2")).is_active
        assert (await registry.active(conn, "venue_selector")).version == "v2"
        assert [m.version for m in await registry.list_models(conn, "venue_selector")] == ["v2", "v1"]
        assert (await registry.get(conn, "v1")).metrics == {"model_bps": 1.0}
        with pytest.raises(registry.RegistryError, match="no model version 'v9'"):
            await registry.activate(conn, "venue_selector", "v9")
        assert (await registry.active(conn, "venue_selector")).version == "v2"  # a failed activation changes nothing
        assert await registry.artifact(conn, "v1") == ("xgboost-ubj", b"one")
        await conn.execute("UPDATE model_artifacts SET content = 'tampered'::bytea WHERE version = 'v1'")
        with pytest.raises(registry.RegistryError, match="does not match its checksum"):
            await registry.artifact(conn, "v1")

    _run(dsn, scenario)


# --- the job on the cluster ------------------------------------------------------------------


def test_botmain_train_selector_runs_as_a_ray_job_and_registers_a_served_model(ray_head: BotmainConfig, lake_config: BotmainConfig, session_config_dir: Path):
    result = botmain(session_config_dir, "train-selector", "--requests-per-hour", "1", "--trees", "60", "--folds", "2")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "submitted Ray job train-selector-" in out and "walk-forward: 2 folds as Ray tasks" in out
    assert "all held-out periods" in out and "whitepaper rule" in out and "always perp" in out and "always spot" in out
    # What the sample shows (the demo's full run: model 7.4 bps, rule 53.7): the model beats
    # the whitepaper rule on held-out cost by a wide margin, so a regression fails here.
    assert "the model beats the whitepaper rule on held-out cost by" in out, out
    version = out.split("registered ", 1)[1].split()[0]
    from cluster.store.connection import resolve_dsn

    dsn = resolve_dsn(lake_config)
    entry = _run(dsn, lambda conn: registry.get(conn, version))
    assert entry.features == FEATURES and entry.metrics["walk_forward"]["requests"] > 1000
    held_out = entry.metrics["walk_forward"]
    print(f"held out: model {held_out['model_bps']:.2f} bps, rule {held_out['rule_bps']:.2f}, always perp "
          f"{held_out['always_perp_bps']:.2f}, hindsight {held_out['hindsight_bps']:.2f}")
    assert held_out["rule_bps"] - held_out["model_bps"] >= 20.0, held_out
    assert held_out["model_bps"] <= held_out["always_perp_bps"] and held_out["model_bps"] <= held_out["always_spot_bps"], held_out
    assert entry.metrics["beats_rule"] and entry.is_active  # activated because it beat the rule
    fmt, raw = _run(dsn, lambda conn: registry.artifact(conn, version))
    model = SelectorModel.from_bytes(version, raw, entry.features)
    decision = Selector(lake_config, model).decide_many([DecisionRequest(instrument="SOL-PERP", side="sell", size=5)], MarketStates(lake_config))[0]
    assert decision.decided_by == "model" and decision.model_version == version
    assert decision.features_from.startswith("lake, as of 2026-04-01")
    assert len(decision.alternatives) == 4 and decision.expected_cost_bps == decision.alternatives[0].cost_bps


def test_market_states_overlay_what_the_mds_sees_live(lake_config: BotmainConfig):
    states = MarketStates(lake_config)
    cands = candidates(lake_config, "SOL-PERP")
    states.history("SOL")
    now = int(pd.Timestamp("2026-04-01 19:00:30", tz="UTC").value)
    states._live["SOL"] = {
        "now_ns": now, "clock": "event", "stale_venues": ["hyperliquid", "raydium"],
        "tops": {"jupiter:SOL-USDC": {"ts_ns": now - 2 * 10**9, "bid": 79.9, "ask": 80.1},
                 "raydium:SOL-USDC": {"ts_ns": now - 60 * 10**9, "bid": 79.8, "ask": 80.2}},
        "funding": {"drift:SOL-PERP": {"ts_ns": now - 30 * 10**9, "rate": 0.0002, "interval_s": 3600, "oracle": 80.0, "mark": 80.2}},
        "marks": {"drift:SOL-PERP": {"ts_ns": now - 10**9, "mark": 80.4, "oracle": 80.0}},
    }  # fmt: skip
    got = states(DecisionRequest(instrument="SOL-PERP", side="buy", size=1), cands)
    assert got.source.startswith("MDS live (drift:SOL-PERP, jupiter:SOL-USDC)")
    assert got["jupiter:SOL-USDC"].price == pytest.approx(80.0) and got["jupiter:SOL-USDC"].staleness_s == pytest.approx(2.0)
    assert got["drift:SOL-PERP"].price == pytest.approx(80.4) and got["drift:SOL-PERP"].premium_bps == pytest.approx(50.0)
    assert got["drift:SOL-PERP"].funding_bps_h == pytest.approx(2.0)
    assert "raydium:SOL-USDC" not in got  # the MDS calls raydium stale: out, whatever the lake last saw
    assert got.excluded["raydium:SOL-USDC"].startswith("the MDS calls raydium stale: nothing from it within its stale_after_s")
    assert "no funding series recorded" in got.excluded["hyperliquid:SOL-PERP"]  # the lake's reason stands
    lake_only = states.history("SOL").state("binance:SOL-USDT", len(states.history("SOL").grid) - 1)
    assert got["binance:SOL-USDT"] == lake_only  # nothing live for it: the lake's state
    assert got["drift:SOL-PERP"].volatility_bps == lake_only.volatility_bps  # history features stay the lake's
    assert HOUR_NS == 3_600_000_000_000


# --- a venue whose recording ends halfway (issue 13, section 1) ------------------------------


@pytest.fixture(scope="module")
def ended(session_config_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BotmainConfig]:
    """Drift's funding for the whole sample, Binance USD-M and spot (freqtrade files) only
    until 2025-10-07, ingested into a lake of their own."""
    from tests.selector_fixtures import ended_venue_config

    return ended_venue_config(session_config_dir, tmp_path_factory.mktemp("ended"))


ENDED_VENUES = ("binance:SOL-USDT", "binanceusdm:SOL-PERP")


def test_a_venue_is_a_candidate_only_while_its_recording_is_current(ended):
    _, config = ended
    history = MarketHistory.from_lake(config, "SOL-PERP")
    end = pd.Timestamp("2025-10-07 00:00", tz="UTC")
    for key in ENDED_VENUES:
        assert history.span_times(key) == [(pd.Timestamp("2025-04-14 00:00", tz="UTC"), end)], key
    assert history.span_times("drift:SOL-PERP") == [(pd.Timestamp("2025-04-14 00:00", tz="UTC"), pd.Timestamp("2026-04-01 19:00", tz="UTC"))]
    assert "2025-04-14 00:00 -> 2025-10-07 00:00 (4,224 of 8,467 h)" in history.spans_text("binanceusdm:SOL-PERP")

    last = len(history.grid) - 1
    states, excluded = history.states_at(last)
    assert set(states) == {"drift:SOL-PERP", "jupiter:SOL-USDC", "raydium:SOL-USDC"}  # nothing carried forward for months
    assert "binanceusdm:SOL-PERP funding: no row since 2025-10-06 16:00 UTC" in excluded["binanceusdm:SOL-PERP"]
    assert "binance:SOL-USDT bars_1h: no row since 2025-10-06 23:00 UTC" in excluded["binance:SOL-USDT"]
    before = int(np.searchsorted(history.grid, (end - pd.Timedelta(hours=1)).value))
    assert set(ENDED_VENUES) <= set(history.states(before)) and not set(ENDED_VENUES) & set(history.states(before + 1))

    data = build_dataset(history, DatasetSettings(requests_per_hour=1, horizons_h=(1, 72)))
    horizon = data.X[:, FEATURES.index("horizon_h")].astype(int)
    for key in ENDED_VENUES:  # a candidate only where its recording covers the whole holding period
        rows = data.candidate == key
        assert rows.any() and (data.hour[rows] + horizon[rows] <= before).all()
    assert (data.candidate == "drift:SOL-PERP").sum() == data.n_requests


def test_a_state_out_of_bounds_is_refused_by_venue_time_and_field(session_config_dir: Path, tmp_path_factory):
    from serve.selector.history import InvalidVenueState
    from tests.selector_fixtures import ended_venue_config

    _, config = ended_venue_config(session_config_dir, tmp_path_factory.mktemp("glitch"), glitch={"2025-06-01 12:00": 2.5})
    history = MarketHistory.from_lake(config, "SOL-PERP")
    with pytest.raises(InvalidVenueState, match=r"^binanceusdm:SOL-PERP at 2025-06-01 12:00 UTC: premium_bps = 15\d{3}\.?\d*: "
                                                r"input should be less than or equal to 10000$"):
        build_dataset(history, DatasetSettings(requests_per_hour=1))
    i = int(np.searchsorted(history.grid, pd.Timestamp("2025-06-01 12:00", tz="UTC").value))
    states, excluded = history.states_at(i)  # serving: that venue alone is left out, named
    assert "binanceusdm:SOL-PERP" not in states and "drift:SOL-PERP" in states
    assert excluded["binanceusdm:SOL-PERP"].startswith("invalid market state: binanceusdm:SOL-PERP at 2025-06-01 12:00 UTC: premium_bps")


def test_training_on_a_venue_that_ends_halfway_succeeds_and_reports_its_span(ray_head: BotmainConfig, ended):
    """The job's entrypoint (what `botmain train-selector` submits) as a driver on the session
    cluster, with the configuration of the lake holding the ended venue."""
    import os
    import subprocess
    import sys

    from cluster import runtime
    from cluster.store.connection import resolve_dsn

    directory, config = ended
    env = {**os.environ, "BOTMAIN_CONFIG_DIR": str(directory), "RAY_ADDRESS": runtime.endpoints(ray_head.cluster).gcs_address}
    env.pop("BOTMAIN_PG_DSN", None)
    result = subprocess.run([sys.executable, "-m", "jobs.train_selector", "--requests-per-hour", "1", "--trees", "40",
                             "--folds", "2", "--activate", "never", "--report-dir", str(directory.parent / "reports")],
                            env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "validation error" not in out + result.stderr
    listing = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "candidate" in line}
    assert "candidate 2025-04-14 00:00 -> 2025-10-07 00:00 (4,224 of 8,467 h)" in listing["binanceusdm:SOL-PERP"]
    assert "candidate 2025-04-14 00:00 -> 2026-04-01 19:00 (8,467 of 8,467 h)" in listing["drift:SOL-PERP"]
    version = out.split("registered ", 1)[1].split()[0]
    entry = _run(resolve_dsn(config), lambda conn: registry.get(conn, version))
    assert entry.metrics["candidate_spans"]["binance:SOL-USDT"] == [["2025-04-14 00:00:00+00:00", "2025-10-07 00:00:00+00:00"]]
    report = entry.metrics["report"]
    assert "candidates (a venue is one while" in report
    assert any(line.split()[:1] == ["binanceusdm:SOL-PERP"] and "2025-04-14 00:00 -> 2025-10-07 00:00" in line for line in report.splitlines())
    assert (directory.parent / "reports" / f"{version}.txt").read_text().startswith(report)
    assert not entry.is_active
