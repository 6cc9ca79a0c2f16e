"""Text tables of sweep runs and of one run's leaderboard, for the CLI and the job log."""

from __future__ import annotations

import json


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_runs(rows) -> str:
    if not rows:
        return "no backtest runs stored yet (botmain sweep --strategy NAME ...)"
    lines = [f"{'run id':<36} {'strategy':<14} {'status':<9} {'combos':>13} {'best sharpe':>11} {'best return':>11}  created"]
    for r in rows:
        combos = f"{r['combos_done']:,}/{r['combos_total'] or 0:,}"
        lines.append(
            f"{r['run_id']:<36} {r['strategy']:<14} {r['status']:<9} {combos:>13} "
            f"{_fmt(r['best_sharpe'], '.2f'):>11} {_fmt(r['best_return'], '+.2%'):>11}  {r['created_at']:%Y-%m-%d %H:%M}"
        )
    return "\n".join(lines)


def render_leaderboard(run, rows, rank_by: str) -> str:
    head = (
        f"run {run['run_id']}: {run['strategy']} on {', '.join(run['instruments'])}, status {run['status']}, "
        f"{run['combos_total'] or 0:,} combos; ranked by {rank_by}"
    )
    lines = [
        head,
        f"{'#':>3} {'combo':>6} {'sharpe':>7} {'return':>9} {'max dd':>7} {'calmar':>7} {'win':>6} {'trades':>6} "
        f"{'fees':>9} {'funding':>9} {'liq':>3}  params",
    ]
    for n, r in enumerate(rows, 1):
        params = json.loads(r["params"]) if isinstance(r["params"], str) else r["params"]
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        stored = " *" if r["stored_trades"] else ""
        lines.append(
            f"{n:>3} {r['combo_id']:>6} {_fmt(r['sharpe'], '.2f'):>7} {_fmt(r['total_return'], '+.2%'):>9} "
            f"{_fmt(r['max_drawdown'], '.1%'):>7} {_fmt(r['calmar'], '.2f'):>7} {_fmt(r['win_rate'], '.0%'):>6} "
            f"{r['trades']:>6} {_fmt(r['fees_paid'], ',.0f'):>9} {_fmt(r['funding_paid'], ',.0f'):>9} {r['liquidations']:>3}  {shown}{stored}"
        )
    if any(r["stored_trades"] for r in rows):
        lines.append("* trades and equity curve stored (backtest_trades, equity_curves)")
    return "\n".join(lines)
