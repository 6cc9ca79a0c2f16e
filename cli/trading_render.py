"""Tables of a trading run's journal for the terminal (``botmain orders/fills/positions``)."""

from __future__ import annotations

import numpy as np


def _when(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return str(np.datetime64(int(ts_ns), "ns").astype("datetime64[s]")).replace("T", " ")


def _head(run) -> str:
    ended = f", ended {_when(run.ended_ns)}" if run.ended_ns else ""
    return f"run {run.run_id}: {run.mode} {run.strategy}, {run.status} (started {_when(run.started_ns)}{ended})"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_orders(run, orders) -> str:
    lines = [_head(run), f"{len(orders):,} orders"]
    if not orders:
        return "\n".join(lines)
    lines.append(f"{'decided (UTC)':<19} {'client order id':<32} {'instrument':<22} {'side':<4} {'target':>7} "
                 f"{'quantity':>12} {'filled':>12} {'avg px':>11} {'state':<16} {'route':<13} reason")  # fmt: skip
    for o in orders:
        lines.append(
            f"{_when(o.decision_ts_ns):<19} {o.client_order_id:<32} {o.instrument:<22} {o.side.value:<4} "
            f"{_num(o.target, '+.3f'):>7} {_num(o.quantity, ',.6g'):>12} {o.filled_qty:>12,.6g} "
            f"{_num(o.avg_px if o.filled_qty else None, ',.4f'):>11} {o.state.value:<16} {o.route.value:<13} {o.reason or ''}"
        )
    return "\n".join(lines)


def render_fills(run, fills) -> str:
    lines = [_head(run), f"{len(fills):,} fills"]
    if not fills:
        return "\n".join(lines)
    lines.append(f"{'time (UTC)':<19} {'instrument':<22} {'side':<4} {'qty':>12} {'price':>11} {'fee':>9} "
                 f"{'reason':<12} {'venue fill id':<40} order")  # fmt: skip
    for f in fills:
        lines.append(
            f"{_when(f.ts_ns):<19} {f.instrument:<22} {f.side.value:<4} {f.qty:>12,.6g} {f.price:>11,.4f} "
            f"{f.fee:>9,.4f} {f.reason.value:<12} {f.venue_fill_id:<40} {f.client_order_id}"
        )
    return "\n".join(lines)


def render_positions(run, positions) -> str:
    lines = [_head(run)]
    if not positions:
        return "\n".join([*lines, "no positions"])
    lines.append(f"{'strategy':<20} {'instrument':<22} {'size':>12} {'avg entry':>11} {'realised':>11} "
                 f"{'fees':>9} {'funding':>9}")  # fmt: skip
    for p in positions:
        lines.append(
            f"{p.strategy:<20} {p.instrument:<22} {p.size:>+12,.6g} {_num(p.avg_entry_price if p.size else None, ',.4f'):>11} "
            f"{p.realized_pnl:>+11,.2f} {p.fees_paid:>9,.2f} {p.funding_paid:>+9,.2f}"
        )
    return "\n".join(lines)


def render_allocation(summary: dict | None) -> str:
    """The Risk Rules Monitor's view of a run's capital: per strategy and venue its
    allocation from the treasury, what it uses and its PnL; per venue the treasury's balance."""
    if not summary:
        return "allocation: none journaled for this run"
    lines = ["allocation (the Risk Rules Monitor at the run's end):",
             f"{'strategy':<20} {'venue':<12} {'allocation':>12} {'equity':>12} {'in use':>11} {'':<8} {'realised':>10} "
             f"{'unrealised':>10} {'fees':>8} {'funding':>8} {'pnl':>10}"]  # fmt: skip
    for r in summary["strategies"]:
        lines.append(
            f"{r['strategy']:<20} {r['venue']:<12} {r['allocation']:>12,.2f} {r['equity']:>12,.2f} {r['usage']:>11,.2f} "
            f"{r['usage_kind']:<8} {r['realized_pnl']:>+10,.2f} {r['unrealized_pnl']:>+10,.2f} {r['fees']:>8,.2f} "
            f"{r['funding']:>+8,.2f} {r['pnl']:>+10,.2f}"
        )
    lines.append(f"{'treasury':<20} {'venue':<12} {'balance':>12} {'allocated':>12} {'in use':>11} {'free':>10}")
    for v in summary["venues"]:
        lines.append(f"{'':<20} {v['venue']:<12} {v['balance']:>12,.2f} {v['allocated']:>12,.2f} {v['in_use']:>11,.2f} "
                     f"{v['free']:>10,.2f}")  # fmt: skip
    return "\n".join(lines)


def render_trading_runs(rows) -> str:
    if not rows:
        return "no paper or live runs yet (botmain paper --strategy NAME)"
    lines = [f"{'run id':<44} {'mode':<5} {'strategy':<20} {'status':<9} {'fills':>7} {'equity':>12}  started (UTC)"]
    for run, fills, equity in rows:
        lines.append(f"{run.run_id:<44} {run.mode:<5} {run.strategy:<20} {run.status:<9} {fills:>7,} "
                     f"{_num(equity, ',.2f'):>12}  {_when(run.started_ns)}")  # fmt: skip
    return "\n".join(lines)


def render_trades(trades, limit: int) -> str:
    """The first ``limit`` round trips of a result's trade list."""
    lines = [f"round trips: {len(trades):,} (first {min(limit, len(trades))})",
             f"{'entry (UTC)':<19} {'exit (UTC)':<19} {'instrument':<22} {'side':<5} {'size':>10} {'entry px':>10} "
             f"{'exit px':>10} {'pnl':>9} {'fees':>7}  exit"]  # fmt: skip
    for t in trades[:limit]:
        lines.append(
            f"{_when(int(t.entry_ts.astype('int64'))):<19} {_when(int(t.exit_ts.astype('int64'))):<19} {t.instrument:<22} "
            f"{t.side:<5} {t.size:>10,.4g} {t.entry_price:>10,.4f} {t.exit_price:>10,.4f} {t.pnl:>+9,.2f} {t.fees:>7,.2f}  {t.exit_reason}"
        )
    return "\n".join(lines)
