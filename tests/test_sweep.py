"""Parameter sweeps: search plans, fan-out on the session's real Ray cluster, results in a
real PostgreSQL, resuming, retries, and the CLI through the authenticated job API."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sys
from pathlib import Path

import asyncpg
import cloudpickle
import numpy as np
import pytest
import ray
import yaml

from cluster import job_submission, runtime
from cluster.config import BotmainConfig, load_config
from jobs.sweep import results
from jobs.sweep.job import SweepRequest, execute, resolve_strategy, run_sweep
from sim.backtest import backtest
from sim.history import load_frame
from sim.search import SearchSpecError, enumerate_combos, parse_dimension, plan
from sim.settings import SimSettings
from strategies.ema_cross import EmaCross, EmaCrossParams
from tests.test_cli import botmain

START, END = "2025-05-05", "2025-05-12"  # a week of the sample's 1m bars keeps runs quick


# --- search plans ---------------------------------------------------------------------


def test_grid_dimensions_parse_ranges_lists_and_single_values():
    assert parse_dimension("fast=5:11:2") == ("fast", [5, 7, 9, 11])
    assert parse_dimension("exposure=0.5:1.5:0.5") == ("exposure", [0.5, 1.0, 1.5])
    assert parse_dimension("direction=long_only,long_short") == ("direction", ["long_only", "long_short"])
    assert parse_dimension("slow=48") == ("slow", [48])
    for bad in ("fast", "fast=", "fast=9:5", "fast=1:5:0", "fast=a:b"):
        with pytest.raises(SearchSpecError, match="fast"):
            parse_dimension(bad)


def test_the_issue_grid_has_580_valid_combos_in_a_stable_order():
    search = plan(EmaCross, ["fast=5:53:2", "slow=20:212:8", "direction=long_only"])
    combos = enumerate_combos(EmaCross, search)
    assert len(combos.params) == 580
    assert combos.rejected == 25 * 25 - 580
    assert all(p.fast < p.slow for p in combos.params)
    assert enumerate_combos(EmaCross, search).params == combos.params


def test_random_search_is_seeded_and_unknown_parameters_are_named():
    a = enumerate_combos(EmaCross, plan(EmaCross, [], samples=40, seed=3)).params
    b = enumerate_combos(EmaCross, plan(EmaCross, [], samples=40, seed=3)).params
    c = enumerate_combos(EmaCross, plan(EmaCross, [], samples=40, seed=4)).params
    assert a == b and a != c
    assert len(set(a)) == len(a)
    with pytest.raises(SearchSpecError, match="no parameter 'fsat'"):
        plan(EmaCross, ["fsat=5:9"])


# --- fan-out on the cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_client(ray_head: BotmainConfig):
    """This test process as a driver of the session cluster."""
    runtime.enable_token_auth(create=False)
    ray.init(address=runtime.endpoints(ray_head.cluster).gcs_address, log_to_driver=False)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test strategies ship by value
    yield
    ray.shutdown()


@pytest.fixture
def store_config(lake_config: BotmainConfig, dsn: str, monkeypatch: pytest.MonkeyPatch) -> BotmainConfig:
    """The session lake, results going to a fresh database."""
    monkeypatch.setenv("BOTMAIN_PG_DSN", dsn)
    return lake_config


def _query(dsn: str, sql: str, *args):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


REQUEST = SweepRequest(
    strategy="sol_ema_cross",
    grid=("fast=5:15:2", "slow=20:60:8", "direction=long_only"),
    run_id="week-grid",
    start=START,
    end=END,
    store_best=2,
    chunk_size=4,
)


def test_sweep_stores_every_combo_and_the_best_runs_trades_and_equity(ray_client, store_config: BotmainConfig, dsn: str):
    lines: list[str] = []
    summary = run_sweep(store_config, REQUEST, say=lines.append)
    n = summary["combos"]
    assert n == 6 * 6 and summary["computed"] == n and summary["skipped"] == 0
    rows = _query(dsn, "SELECT * FROM backtest_results WHERE run_id = $1 ORDER BY combo_id", "week-grid")
    assert [r["combo_id"] for r in rows] == list(range(n))
    run = _query(dsn, "SELECT * FROM backtest_runs WHERE run_id = $1", "week-grid")[0]
    assert run["status"] == "finished" and run["combos_total"] == n and run["finished_at"] is not None

    # the cluster's numbers are the in-process numbers
    frame = load_frame(store_config, ["binanceusdm:SOL-PERP"], None, START, END)
    settings = SimSettings.from_config(store_config, ["binanceusdm:SOL-PERP"], "sol_ema_cross")
    for row in rows[::7]:
        params = EmaCrossParams(**json.loads(row["params"]))
        local = backtest(EmaCross(params), frame, settings).metrics
        assert row["total_return"] == local.total_return
        assert row["trades"] == local.trades and row["sharpe"] == pytest.approx(local.sharpe, rel=1e-12)

    best = _query(dsn, "SELECT combo_id FROM backtest_results WHERE run_id = $1 ORDER BY sharpe DESC, combo_id LIMIT 2", "week-grid")
    stored = _query(dsn, "SELECT DISTINCT combo_id FROM backtest_trades WHERE run_id = $1", "week-grid")
    assert {r["combo_id"] for r in stored} == {r["combo_id"] for r in best}
    curves = _query(dsn, "SELECT combo_id, count(*) AS n FROM equity_curves WHERE run_id = $1 GROUP BY combo_id", "week-grid")
    assert {r["combo_id"]: r["n"] for r in curves} == {r["combo_id"]: len(frame) for r in best}
    assert any("36/36 combos stored" in line for line in lines)


def test_rerunning_a_run_id_skips_stored_combos_and_recomputes_missing_ones(ray_client, store_config: BotmainConfig, dsn: str):
    run_sweep(store_config, REQUEST, say=lambda _: None)
    before = {r["combo_id"]: r["total_return"] for r in _query(dsn, "SELECT * FROM backtest_results WHERE run_id = 'week-grid'")}
    again = run_sweep(store_config, REQUEST, say=lambda _: None)
    assert again["computed"] == 0 and again["skipped"] == len(before)

    _query(dsn, "DELETE FROM backtest_results WHERE run_id = 'week-grid' AND combo_id IN (3, 4, 30)")
    resumed = run_sweep(store_config, REQUEST, say=lambda _: None)
    assert resumed["computed"] == 3
    after = {r["combo_id"]: r["total_return"] for r in _query(dsn, "SELECT * FROM backtest_results WHERE run_id = 'week-grid'")}
    assert after == before


def test_a_run_id_cannot_be_reused_for_a_different_sweep(ray_client, store_config: BotmainConfig, dsn: str):
    run_sweep(store_config, REQUEST, say=lambda _: None)
    other = SweepRequest(**{**REQUEST.__dict__, "grid": ("fast=5:9:2", "slow=20:28:8")})
    with pytest.raises(results.RunMismatch, match="different search space"):
        run_sweep(store_config, other, say=lambda _: None)
    longer = SweepRequest(**{**REQUEST.__dict__, "end": "2025-05-13"})
    with pytest.raises(results.RunMismatch, match="different settings"):
        run_sweep(store_config, longer, say=lambda _: None)


class FlakyCross(EmaCross):
    """Raises the first time each marked chunk runs (a crashed task), then behaves."""

    name = "flaky_cross"
    marker_dir: str = ""
    always_fail_fast: int = -1

    def signals(self, frame):
        if self.params.fast == self.always_fail_fast:
            raise RuntimeError(f"fast={self.params.fast} always fails")
        marker = Path(self.marker_dir) / f"{self.params.fast}-{self.params.slow}"
        if self.params.slow == 20 and not marker.exists():
            marker.touch()
            raise RuntimeError("injected failure on the first attempt")
        return super().signals(frame)


def _spec_and_inputs(config: BotmainConfig, run_id: str, strategy: type[EmaCross]):
    resolved = resolve_strategy(config, "sol_ema_cross")
    frame = load_frame(config, resolved.instruments, None, START, END)
    settings = SimSettings.from_config(config, resolved.instruments, "sol_ema_cross")
    search = plan(strategy, ["fast=5:11:2", "slow=20:44:8", "direction=long_only"])
    combos = enumerate_combos(strategy, search).params
    spec = results.RunSpec(run_id, strategy.name, resolved.instruments, search.describe(), {"bars": len(frame)}, len(combos))
    return spec, frame, settings, combos


def test_a_failed_task_is_retried_and_its_rows_land_exactly_once(ray_client, store_config: BotmainConfig, dsn: str, tmp_path: Path):
    class Flaky(FlakyCross):
        marker_dir = str(tmp_path)

    spec, frame, settings, combos = _spec_and_inputs(store_config, "flaky", Flaky)
    summary = asyncio.run(execute(store_config, spec, Flaky, frame, settings, combos, chunk_size=2, store_best=1, max_retries=3, say=lambda _: None))
    assert summary["computed"] == len(combos) == 16
    assert len(list(tmp_path.iterdir())) == 4  # four chunks failed once each
    rows = _query(dsn, "SELECT combo_id, count(*) AS n FROM backtest_results WHERE run_id = 'flaky' GROUP BY combo_id")
    assert sorted(r["combo_id"] for r in rows) == list(range(16)) and all(r["n"] == 1 for r in rows)
    ledger = _query(dsn, "SELECT count(*) AS n FROM write_batches WHERE batch_id LIKE 'flaky:results:%'")
    assert ledger[0]["n"] == 8


def test_a_task_that_keeps_failing_fails_the_run_and_keeps_finished_chunks(ray_client, store_config: BotmainConfig, dsn: str, tmp_path: Path):
    class Broken(FlakyCross):
        marker_dir = str(tmp_path)
        always_fail_fast = 11

    for slow in (20, 28, 36, 44):  # no first-attempt failures: only fast=11 fails, always
        (tmp_path / f"11-{slow}").touch()
        for fast in (5, 7, 9):
            (tmp_path / f"{fast}-{slow}").touch()
    spec, frame, settings, combos = _spec_and_inputs(store_config, "broken", Broken)
    with pytest.raises(Exception, match="fast=11 always fails"):
        asyncio.run(execute(store_config, spec, Broken, frame, settings, combos, chunk_size=4, store_best=1, max_retries=1, say=lambda _: None))
    run = _query(dsn, "SELECT status, error FROM backtest_runs WHERE run_id = 'broken'")[0]
    assert run["status"] == "failed" and "fast=11 always fails" in run["error"]
    stored = _query(dsn, "SELECT params FROM backtest_results WHERE run_id = 'broken'")
    fasts = {json.loads(r["params"])["fast"] for r in stored}
    assert 11 not in fasts  # the failing chunk left nothing behind


# --- the CLI through the job API ----------------------------------------------------------


def test_botmain_sweep_runs_as_a_ray_job_and_runs_show_its_leaderboard(ray_head: BotmainConfig, lake_config: BotmainConfig, session_config_dir: Path):
    result = botmain(
        session_config_dir, "sweep", "--strategy", "sol_ema_cross", "--grid", "fast=5:9:2", "slow=20:36:8",
        "--start", START, "--end", END, "--run-id", "cli-sweep", "--store-best", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted Ray job sweep-" in result.stdout
    assert "9/9 combos stored" in result.stdout
    assert "run cli-sweep: ema_cross on binanceusdm:SOL-PERP" in result.stdout
    report = Path(result.stdout.split("report of the best combo: ", 1)[1].split()[0])
    assert report == session_config_dir.parent / "reports" / "cli-sweep" / "report.html" and report.exists()
    listing = botmain(session_config_dir, "runs")
    assert listing.returncode == 0 and "cli-sweep" in listing.stdout and "9/9" in listing.stdout
    board = botmain(session_config_dir, "runs", "show", "cli-sweep", "--top", "3")
    assert board.returncode == 0, board.stderr
    assert board.stdout.count("fast=") == 3 and "*" in board.stdout
    missing = botmain(session_config_dir, "runs", "show", "no-such-run")
    assert missing.returncode != 0 and "no run 'no-such-run'" in missing.stderr


def test_botmain_sweep_refuses_an_unknown_parameter_by_name(ray_head: BotmainConfig, lake_config: BotmainConfig, session_config_dir: Path):
    result = botmain(session_config_dir, "sweep", "--strategy", "sol_ema_cross", "--grid", "fsat=5:9:2", "--start", START, "--end", END)
    assert result.returncode != 0
    assert "no parameter 'fsat'" in result.stdout + result.stderr


def test_botmain_backtest_prints_metrics_and_writes_a_report(lake_config: BotmainConfig, session_config_dir: Path, tmp_path: Path):
    result = botmain(
        session_config_dir, "backtest", "sol_ema_cross", "--start", START, "--end", END, "--param", "fast=8",
        "--report", str(tmp_path / "report"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"report: {tmp_path / 'report' / 'report.html'}" in result.stdout
    assert (tmp_path / "report" / "equity.png").exists()
    assert "10,080 bars 2025-05-05T00:00 -> 2025-05-12T00:00 UTC" in result.stdout
    assert "ema_cross (fast=8 slow=48" in result.stdout
    for label in ("total return", "Sharpe", "max drawdown", "fees paid", "liquidations"):
        assert label in result.stdout
    bad = botmain(session_config_dir, "backtest", "sol_ema_cross", "--param", "fast=80")
    assert bad.returncode != 0 and "fast (80) must be below slow (48)" in bad.stderr


# --- the job reads the submitting command's configuration --------------------------------


def _user_config_dir(session_config_dir: Path, target: Path, **cluster) -> Path:
    """The session configuration copied to a user's own directory, with a strategy instance
    only it defines (``user_ema``) and ``cluster`` merged into cluster.yaml."""
    shutil.copytree(session_config_dir, target)
    strategies = yaml.safe_load((target / "strategies.yaml").read_text())
    strategies["strategies"].append(
        {"name": "user_ema", "strategy": "ema_cross", "instruments": ["binanceusdm:SOL-PERP"], "params": {"fast": 6, "slow": 30}}
    )
    (target / "strategies.yaml").write_text(yaml.safe_dump(strategies))
    if cluster:
        cfg = yaml.safe_load((target / "cluster.yaml").read_text())
        cfg.update(cluster)
        (target / "cluster.yaml").write_text(yaml.safe_dump(cfg))
    return target


def test_botmain_sweep_job_reads_the_config_dir_the_command_read(ray_head: BotmainConfig, lake_config: BotmainConfig, session_config_dir: Path, tmp_path: Path):
    # The cluster was started with BOTMAIN_CONFIG_DIR at the session's configuration; this
    # user's directory is another one, and only it knows `user_ema`.
    user_dir = _user_config_dir(session_config_dir, tmp_path / "mine" / "configs")
    backtest_run = botmain(user_dir, "backtest", "user_ema", "--start", START, "--end", END)
    assert backtest_run.returncode == 0, backtest_run.stderr
    result = botmain(
        user_dir, "sweep", "--strategy", "user_ema", "--grid", "fast=5:7:2", "--start", START, "--end", END,
        "--run-id", "user-dir-sweep", "--store-best", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unknown strategy" not in result.stdout + result.stderr
    assert "2/2 combos stored" in result.stdout
    # relative paths resolve as they did for the command: reports/ beside the user's configs/
    report = Path(result.stdout.split("report of the best combo: ", 1)[1].split()[0])
    assert report == tmp_path / "mine" / "reports" / "user-dir-sweep" / "report.html" and report.exists()


def test_a_job_on_a_cluster_at_an_address_gets_the_config_files_shipped(ray_head: BotmainConfig, lake_config: BotmainConfig, session_config_dir: Path, tmp_path: Path):
    """With ``cluster.address`` set the job may run on a machine that does not have the
    submitter's configuration directory: its files travel with the job. The directory is
    deleted as soon as the job is submitted, so the job can only have read what was shipped."""
    gcs = runtime.endpoints(ray_head.cluster).gcs_address
    user_dir = _user_config_dir(session_config_dir, tmp_path / "elsewhere" / "configs", address=gcs)
    config = load_config(user_dir)
    args = ["jobs.sweep", "--strategy", "user_ema", "--grid", "fast=5:7:2", "--start", START, "--end", END,
            "--run-id", "shipped-config-sweep", "--no-report"]  # fmt: skip
    job_id = job_submission.submit(config, args, job_name="sweep")
    shutil.rmtree(tmp_path / "elsewhere")

    out = io.StringIO()
    final = job_submission.follow(config, job_id, out=out)
    logs = out.getvalue()
    assert final == "SUCCEEDED", logs
    assert "2/2 combos stored" in logs
