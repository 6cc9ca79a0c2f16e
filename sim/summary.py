"""The metrics table ``botmain backtest`` prints."""

from __future__ import annotations

import math

import numpy as np

from sim.backtest import BacktestResult

ROWS = (
    ("total return", "total_return", "+.2%"),
    ("CAGR", "cagr", "+.2%"),
    ("Sharpe", "sharpe", ".2f"),
    ("Sortino", "sortino", ".2f"),
    ("Calmar", "calmar", ".2f"),
    ("max drawdown", "max_drawdown", ".2%"),
    ("win rate", "win_rate", ".1%"),
    ("profit factor", "profit_factor", ".2f"),
    ("exposure", "exposure", ".1%"),
    ("turnover (x mean equity)", "turnover", ",.1f"),
    ("fees paid", "fees_paid", ",.2f"),
    ("funding paid (- = received)", "funding_paid", ",.2f"),
    ("slippage paid", "slippage_paid", ",.2f"),
    ("trades (round trips)", "trades", ",d"),
    ("liquidations", "liquidations", ",d"),
    ("stops / auto-closes", None, None),
    ("kill switch fired", "killed", None),
    ("final equity", "final_equity", ",.2f"),
)


def metric_rows(result: BacktestResult) -> list[tuple[str, str]]:
    """(label, formatted value) per row: the one formatting of metrics, for the text table
    and the HTML report alike."""
    m = result.metrics
    rows = []
    for label, name, spec in ROWS:
        if name is None:
            value = f"{m.stops} / {m.autocloses}"
        else:
            raw = getattr(m, name)
            if spec is None:
                value = "yes" if raw else "no"
            elif isinstance(raw, float) and (math.isinf(raw) or math.isnan(raw)):
                value = str(raw)
            else:
                value = format(raw, spec)
        rows.append((label, value))
    return rows


def render_metrics(result: BacktestResult, instruments: list[str]) -> str:
    bar_ns = int(result.ts[1] - result.ts[0]) if len(result.ts) > 1 else 0
    start = np.datetime64(int(result.ts[0]), "ns").astype("datetime64[m]")
    end = np.datetime64(int(result.ts[-1]) + bar_ns, "ns").astype("datetime64[m]")
    params = " ".join(f"{k}={v}" for k, v in result.params.items())
    lines = [f"{result.strategy} ({params}) on {', '.join(instruments)}", f"{len(result.ts):,} bars {start} -> {end} UTC", ""]
    for label, value in metric_rows(result):
        lines.append(f"  {label:<28} {value:>14}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
