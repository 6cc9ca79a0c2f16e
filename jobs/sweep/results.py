"""Sweep runs and their results in PostgreSQL: backtest_runs, backtest_results,
backtest_trades, equity_curves.

Each finished chunk of combos is one batch (one transaction with its ledger row), so a
retried or re-run chunk is stored once and a failure never leaves part of a chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg
import numpy as np

from cluster.store.writer import Batch
from sim.backtest import BacktestResult
from sim.metrics import Metrics

METRIC_COLUMNS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "exposure",
    "turnover",
    "fees_paid",
    "funding_paid",
    "slippage_paid",
    "trades",
    "liquidations",
    "stops",
    "autocloses",
    "killed",
    "final_equity",
)
RANKABLE = ("sharpe", "total_return", "calmar", "sortino", "cagr", "profit_factor")


class RunMismatch(ValueError):
    """A run id was reused for a different sweep; resuming it would mix results."""


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    strategy: str
    instruments: list[str]
    search: dict
    settings: dict
    combos_total: int


def results_batch(run_id: str, rows: list[tuple[int, dict, Metrics]]) -> Batch:
    ids = [r[0] for r in rows]
    columns: dict = {
        "run_id": [run_id] * len(rows),
        "combo_id": np.asarray(ids, dtype=np.int64),
        "params": [r[1] for r in rows],
    }
    for name in METRIC_COLUMNS:
        values = [getattr(r[2], name) for r in rows]
        if name in ("trades", "liquidations", "stops", "autocloses"):
            columns[name] = np.asarray(values, dtype=np.int32)
        elif name == "killed":
            columns[name] = np.asarray(values, dtype=bool)
        else:
            # profit factor is +inf with no losing trade: stored as NULL ("no losses"), like NaN
            column = np.asarray(values, dtype=np.float64)
            column[~np.isfinite(column)] = np.nan
            columns[name] = column
    return Batch("backtest_results", columns, f"{run_id}:results:{min(ids)}-{max(ids)}:{len(ids)}")


def trades_batch(run_id: str, combo_id: int, result: BacktestResult) -> Batch:
    t = result.trades
    return Batch(
        "backtest_trades",
        {
            "run_id": [run_id] * len(t),
            "combo_id": np.full(len(t), combo_id, dtype=np.int64),
            "trade_no": np.arange(len(t), dtype=np.int32),
            "instrument": [x.instrument for x in t],
            "side": [x.side for x in t],
            "entry_ts": np.asarray([x.entry_ts for x in t], dtype="datetime64[ns]"),
            "exit_ts": np.asarray([x.exit_ts for x in t], dtype="datetime64[ns]"),
            "entry_price": np.asarray([x.entry_price for x in t]),
            "exit_price": np.asarray([x.exit_price for x in t]),
            "size": np.asarray([x.size for x in t]),
            "pnl": np.asarray([x.pnl for x in t]),
            "fees": np.asarray([x.fees for x in t]),
            "funding": np.asarray([x.funding for x in t]),
            "exit_reason": [x.exit_reason for x in t],
            "liquidation_price": np.asarray([x.liquidation_price for x in t]),
        },
        f"{run_id}:trades:{combo_id}",
    )


def equity_batch(run_id: str, combo_id: int, result: BacktestResult, bar_seconds: float) -> Batch:
    n = len(result.equity)
    return Batch(
        "equity_curves",
        {
            "run_id": [run_id] * n,
            "combo_id": np.full(n, combo_id, dtype=np.int64),
            "ts": result.ts + int(bar_seconds * 1e9),  # equity at each bar's close
            "equity": result.equity,
        },
        f"{run_id}:equity:{combo_id}",
    )


async def open_run(conn: asyncpg.Connection, spec: RunSpec) -> set[int]:
    """Create the run, or resume it: returns the combo ids already stored. Refuses a run
    id that belongs to a different strategy, data, search or settings."""
    row = await conn.fetchrow(
        "SELECT strategy, instruments, search_space, settings FROM backtest_runs WHERE run_id = $1 FOR UPDATE", spec.run_id
    )
    if row is None:
        await conn.execute(
            """INSERT INTO backtest_runs (run_id, strategy, instruments, search_space, settings, status, combos_total, updated_at)
               VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, 'running', $6, now())""",
            spec.run_id,
            spec.strategy,
            spec.instruments,
            json.dumps(spec.search),
            json.dumps(spec.settings),
            spec.combos_total,
        )
        return set()
    differences = [
        name
        for name, stored, now in (
            ("strategy", row["strategy"], spec.strategy),
            ("instruments", list(row["instruments"]), spec.instruments),
            ("search space", json.loads(row["search_space"]), json.loads(json.dumps(spec.search))),
            ("settings", json.loads(row["settings"]), json.loads(json.dumps(spec.settings))),
        )
        if stored != now
    ]
    if differences:
        raise RunMismatch(
            f"run {spec.run_id!r} exists with a different {', '.join(differences)}; "
            "use a new --run-id (or the original arguments to resume it)"
        )
    await conn.execute(
        "UPDATE backtest_runs SET status = 'running', error = NULL, updated_at = now() WHERE run_id = $1", spec.run_id
    )
    done = await conn.fetch("SELECT combo_id FROM backtest_results WHERE run_id = $1", spec.run_id)
    return {r["combo_id"] for r in done}


async def finish_run(conn: asyncpg.Connection, run_id: str, status: str, error: str | None = None) -> None:
    await conn.execute(
        """UPDATE backtest_runs SET status = $2, error = $3, updated_at = now(),
               finished_at = CASE WHEN $2 = 'finished' THEN now() ELSE finished_at END
           WHERE run_id = $1""",
        run_id,
        status,
        error,
    )


async def set_job_id(conn: asyncpg.Connection, run_id: str, job_id: str | None) -> None:
    await conn.execute("UPDATE backtest_runs SET job_id = $2 WHERE run_id = $1", run_id, job_id)


def _ranked(rank_by: str) -> str:
    """The ORDER BY column, checked against the rankable metrics (it is spliced into SQL)."""
    if rank_by not in RANKABLE:
        raise ValueError(f"cannot rank by {rank_by!r} (one of {', '.join(RANKABLE)})")
    return rank_by


async def best_combos(conn: asyncpg.Connection, run_id: str, rank_by: str, limit: int) -> list[asyncpg.Record]:
    rank_by = _ranked(rank_by)
    return await conn.fetch(
        f"""SELECT combo_id, params FROM backtest_results WHERE run_id = $1
            ORDER BY {rank_by} DESC NULLS LAST, combo_id LIMIT $2""",
        run_id,
        limit,
    )


async def list_runs(conn: asyncpg.Connection, limit: int = 50) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT r.run_id, r.strategy, r.instruments, r.status, r.combos_total, r.created_at, r.finished_at,
                  count(b.combo_id) AS combos_done, max(b.sharpe) AS best_sharpe, max(b.total_return) AS best_return
           FROM backtest_runs r LEFT JOIN backtest_results b USING (run_id)
           GROUP BY r.run_id ORDER BY r.created_at DESC LIMIT $1""",
        limit,
    )


async def leaderboard(conn: asyncpg.Connection, run_id: str, rank_by: str = "sharpe", limit: int = 20):
    rank_by = _ranked(rank_by)
    run = await conn.fetchrow("SELECT * FROM backtest_runs WHERE run_id = $1", run_id)
    if run is None:
        return None, []
    rows = await conn.fetch(
        f"""SELECT b.*, (SELECT count(*) FROM backtest_trades t WHERE t.run_id = b.run_id AND t.combo_id = b.combo_id) AS stored_trades
            FROM backtest_results b WHERE run_id = $1 ORDER BY {rank_by} DESC NULLS LAST, combo_id LIMIT $2""",
        run_id,
        limit,
    )
    return run, rows
