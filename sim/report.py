"""A backtest as a directory: ``report.html`` plus four PNG plots next to it.

``write_report`` renders the equity curve, the drawdown (underwater) curve, the trades
over each leg's close price and a costs breakdown, then an HTML page with the run's
title, the metrics table (the same rows and formats as ``sim.summary``), the settings,
the frame's notes, the plots and the trade list.

Plots use matplotlib's object-oriented API on the Agg canvas (``Figure`` +
``FigureCanvasAgg``), never pyplot's global state, so rendering is safe in worker
threads and on headless machines. Lines longer than ``MAX_LINE_POINTS`` are reduced to
the min and max of each bucket (spikes stay visible); trade markers are never dropped.
All times are UTC.
"""

from __future__ import annotations

import dataclasses
import html
import math
from datetime import timezone
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sim import kernel as k
from sim.backtest import BacktestResult, Trade
from sim.settings import SimSettings
from sim.summary import metric_rows
from strategies.frame import Frame

PLOTS = {
    "equity": "equity.png",
    "drawdown": "drawdown.png",
    "trades": "trades.png",
    "costs": "costs.png",
}
MAX_LINE_POINTS = 20_000  # longer lines are reduced to min/max per bucket
LINE_BUCKETS = 4_000  # buckets when reducing (two points each)
MAX_TRADE_ROWS = 500
DPI = 100
WIDTH_IN = 12.0

EXIT_COLOURS = {
    "signal": "tab:blue",
    "stop": "tab:orange",
    "auto_close": "tab:purple",
    "liquidation": "black",
    "kill_switch": "tab:brown",
    "open": "tab:gray",
}
_UTC = timezone.utc


def write_report(result: BacktestResult, frame: Frame, settings: SimSettings, directory: Path) -> Path:
    """Write the report into ``directory`` (created with its parents); returns report.html."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bar_ns = int(round(frame.bar_seconds * 1e9))
    ts = np.asarray(result.ts, dtype=np.int64)
    close_ns = ts + bar_ns  # equity and closes are known at each bar's close

    _plot_equity(result, settings, ts, close_ns, directory / PLOTS["equity"])
    _plot_drawdown(result, settings, ts, close_ns, directory / PLOTS["drawdown"])
    _save(trades_figure(result, frame, settings), directory / PLOTS["trades"])
    _plot_costs(result, settings, directory / PLOTS["costs"])

    path = directory / "report.html"
    path.write_text(_html(result, frame, settings, ts, bar_ns), encoding="utf-8")
    return path


# --- values shared by the plots and the page -------------------------------------------


def gross_pnl(result: BacktestResult, settings: SimSettings) -> float:
    """PnL before fees, slippage and funding."""
    m = result.metrics
    return m.final_equity - settings.initial_cash + m.fees_paid + m.slippage_paid + m.funding_paid


def _dates(ns: np.ndarray) -> np.ndarray:
    """int64 UTC nanoseconds -> matplotlib date numbers."""
    return mdates.date2num(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"))


def _reduce(x: np.ndarray, y: np.ndarray, max_points: int = MAX_LINE_POINTS, buckets: int = LINE_BUCKETS):
    """At most ``2 * buckets`` points: each bucket's min and max, in time order."""
    n = len(y)
    if n <= max_points:
        return x, y
    size = math.ceil(n / buckets)
    count = math.ceil(n / size)
    padded = np.full(count * size, np.nan)
    padded[:n] = y
    padded = padded.reshape(count, size)
    missing = np.isnan(padded)
    lo = np.where(missing, np.inf, padded).argmin(axis=1)
    hi = np.where(missing, -np.inf, padded).argmax(axis=1)
    base = np.arange(count) * size
    idx = np.empty(2 * count, dtype=np.int64)
    idx[0::2] = base + np.minimum(lo, hi)
    idx[1::2] = base + np.maximum(lo, hi)
    idx = np.minimum(idx, n - 1)
    return x[idx], y[idx]


def _date_axis(ax) -> None:
    locator = mdates.AutoDateLocator(tz=_UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=_UTC))


def _figure(height: float, rows: int = 1, bottom: float = 0.75) -> tuple[Figure, list]:
    """Fixed margins in inches (a layout engine would draw every figure twice)."""
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    FigureCanvasAgg(fig)
    top, left, right, gap = 0.35, 0.95, 0.2, 0.6
    panel = (height - top - bottom - gap * (rows - 1)) / rows
    fig.subplots_adjust(
        left=left / WIDTH_IN,
        right=1 - right / WIDTH_IN,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=gap / panel,
    )
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _legend(ax) -> None:
    """Above the axes on the right, clear of the data (titles sit on the left)."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles,
        labels,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncols=max(1, len(labels)),
        fontsize="x-small",
        frameon=False,
        borderaxespad=0.2,
    )


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", dpi=DPI)


def _curve(result: BacktestResult, settings: SimSettings, ts: np.ndarray, close_ns: np.ndarray):
    """Equity from the start of the first bar (initial cash) to each bar's close."""
    x = np.concatenate([ts[:1], close_ns])
    equity = np.concatenate([[settings.initial_cash], np.asarray(result.equity, dtype=np.float64)])
    return x, equity


# --- plots -----------------------------------------------------------------------------


def _plot_equity(result, settings, ts, close_ns, path: Path) -> None:
    x, equity = _curve(result, settings, ts, close_ns)
    fig, (ax,) = _figure(4.0)
    xs, ys = _reduce(_dates(x), equity)
    ax.plot(xs, ys, color="tab:blue", linewidth=1.0, label="equity")
    ax.axhline(settings.initial_cash, color="tab:gray", linewidth=0.8, linestyle="--", label="initial cash")
    ax.set_title(f"Equity (final {result.metrics.final_equity:,.2f}, {result.metrics.total_return:+.2%})", loc="left")
    ax.set_ylabel("quote")
    ax.set_xlabel("UTC")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    _date_axis(ax)
    _save(fig, path)


def _plot_drawdown(result, settings, ts, close_ns, path: Path) -> None:
    x, equity = _curve(result, settings, ts, close_ns)
    peak = np.fmax.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, equity / peak - 1.0, 0.0) * 100.0
    fig, (ax,) = _figure(3.0)
    xs, ys = _reduce(_dates(x), dd)
    ax.fill_between(xs, ys, 0.0, color="tab:red", alpha=0.35, linewidth=0)
    ax.plot(xs, ys, color="tab:red", linewidth=0.8)
    ax.set_title(f"Drawdown (max {result.metrics.max_drawdown:.2%})", loc="left")
    ax.set_ylabel("% below peak")
    ax.set_xlabel("UTC")
    ax.grid(True, alpha=0.3)
    _date_axis(ax)
    _save(fig, path)


def _fill_offset_ns(settings: SimSettings, bar_seconds: float) -> int:
    """Where in its bar an order on a signal fills: at the close, or the open moved by latency."""
    bar_ns = int(round(bar_seconds * 1e9))
    if settings.fill_price == "close":
        return bar_ns
    return int(round(settings.account_params(bar_seconds)[k.AS_LAT_FRAC] * bar_ns))


def trades_figure(result: BacktestResult, frame: Frame, settings: SimSettings) -> Figure:
    """Each leg's close (reduced if long) with every trade's entry and exit marker.

    Prices are drawn at each bar's close. Markers sit where the fill happened: an order on
    a signal at its bar's close (``fill_price="close"``) or at the open moved by the
    latency; stops, auto-closes and liquidations at the end of the bar they fired in; an
    open trade at the last close.
    """
    bar_ns = int(round(frame.bar_seconds * 1e9))
    close_ns = np.asarray(frame.ts, dtype=np.int64) + bar_ns
    fill_offset = _fill_offset_ns(settings, frame.bar_seconds)
    n_legs = len(frame.legs)
    fig, axes = _figure(max(3.0, 3.0 * n_legs), rows=n_legs)
    x_close = _dates(close_ns)
    index = {}
    for i, leg in enumerate(settings.legs):
        index.setdefault(leg.key, i)
    for i, leg in enumerate(frame.legs):
        index.setdefault(leg.key, i)
    by_leg: list[list[Trade]] = [[] for _ in range(n_legs)]
    for t in result.trades:
        i = index.get(t.instrument)
        if i is not None and i < n_legs:
            by_leg[i].append(t)

    for i, (ax, leg) in enumerate(zip(axes, frame.legs, strict=True)):
        close = np.asarray(leg.close, dtype=np.float64)
        xs, ys = _reduce(x_close, close)
        ax.plot(xs, ys, color="0.35", linewidth=0.8, label="close", zorder=1)
        trades = by_leg[i]
        if trades:
            last_close = close[-1] if len(close) else np.nan
            entry_ns = np.array([t.entry_ts for t in trades], dtype="datetime64[ns]").astype(np.int64)
            entry_x = _dates(entry_ns + fill_offset)
            entry_y = np.array([t.entry_price for t in trades])
            long = np.array([t.side == "long" for t in trades])
            for pick, marker, colour, label in ((long, "^", "tab:green", "long entry"), (~long, "v", "tab:red", "short entry")):
                if pick.any():
                    ax.scatter(
                        entry_x[pick], entry_y[pick], marker=marker, s=36, color=colour, edgecolors="none", label=label, zorder=3
                    )
            exit_ns = np.array([t.exit_ts for t in trades], dtype="datetime64[ns]").astype(np.int64)
            reasons = np.array([t.exit_reason for t in trades])
            # exit_ts is the end of the exit bar; an order on a signal filled at its fill point
            exit_x = _dates(np.where(reasons == "signal", exit_ns - bar_ns + fill_offset, exit_ns))
            exit_y = np.array([t.exit_price if math.isfinite(t.exit_price) else last_close for t in trades])
            for reason in [*EXIT_COLOURS, *sorted(set(reasons) - set(EXIT_COLOURS))]:
                pick = reasons == reason
                if pick.any():
                    ax.scatter(
                        exit_x[pick],
                        exit_y[pick],
                        marker="o",
                        s=22,
                        facecolors="none",
                        edgecolors=EXIT_COLOURS.get(reason, "tab:olive"),
                        linewidths=1.2,
                        label=f"exit: {reason}",
                        zorder=4,
                    )
        ax.set_title(f"{leg.key} ({len(trades):,} trade{'s' if len(trades) != 1 else ''})", fontsize="medium", loc="left")
        ax.set_ylabel("close")
        ax.grid(True, alpha=0.3)
        _legend(ax)
        _date_axis(ax)
    axes[-1].set_xlabel("UTC")
    return fig


def _plot_costs(result: BacktestResult, settings: SimSettings, path: Path) -> None:
    m = result.metrics
    labels = ["fees paid", "slippage paid", "funding paid\n(- = received)", "gross PnL\n(before costs)"]
    values = [m.fees_paid, m.slippage_paid, m.funding_paid, gross_pnl(result, settings)]
    colours = ["tab:red", "tab:orange", "tab:purple", "tab:blue"]
    fig, (ax,) = _figure(3.5, bottom=0.6)
    bars = ax.bar(labels, values, color=colours)
    ax.bar_label(bars, labels=[f"{v:,.2f}" for v in values], fontsize="small", padding=2)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_title(f"Costs (net PnL {m.final_equity - settings.initial_cash:,.2f})", loc="left")
    ax.set_ylabel("quote")
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.15)
    _save(fig, path)


# --- HTML ------------------------------------------------------------------------------


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _when(ns) -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="s").replace("T", " ")


def _when64(t: np.datetime64) -> str:
    return np.datetime_as_string(np.datetime64(t, "s"), unit="s").replace("T", " ")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _num(x: float, spec: str = ",.6g") -> str:
    if x is None:
        return "off"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return format(x, spec)


def _price(x: float) -> str:
    return _num(x, ",.8g")


def _table(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _kv_table(table_id: str, rows: list[tuple[str, str]]) -> str:
    body = "\n".join(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in rows)
    return f'<table id="{table_id}" class="kv">\n<tbody>\n{body}\n</tbody>\n</table>'


def _setting_value(value) -> str:
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, ",.10g")
    return str(value)


def _html(result: BacktestResult, frame: Frame, settings: SimSettings, ts: np.ndarray, bar_ns: int) -> str:
    instruments = [leg.key for leg in settings.legs] or [leg.key for leg in frame.legs]
    params = " ".join(f"{name}={value}" for name, value in result.params.items())
    start, end = _when(ts[0]), _when(ts[-1] + bar_ns)
    title = f"{result.strategy} ({params}) on {', '.join(instruments)}"
    period = f"{len(ts):,} bars of {_duration(frame.bar_seconds)}, {start} -> {end} UTC (first bar open to last bar close)"

    fill = settings.fill_price
    if fill == "next_open" and settings.latency_ms:
        fill = f"next_open + {settings.latency_ms:g} ms latency"
    account = [
        ("fill price", fill),
        ("latency (ms)", _setting_value(settings.latency_ms)),
        ("initial cash", format(settings.initial_cash, ",.2f")),
    ]
    leg_fields = [f.name for f in dataclasses.fields(type(settings.legs[0]))] if settings.legs else []
    leg_rows = [[_setting_value(getattr(leg, name)) for name in leg_fields] for leg in settings.legs]
    risk_rows = [(f.name, _setting_value(getattr(settings.risk, f.name))) for f in dataclasses.fields(settings.risk)]

    notes = (
        "<ul>\n" + "\n".join(f"<li>{_e(n)}</li>" for n in result.notes) + "\n</ul>" if result.notes else "<p>none</p>"
    )

    shown = result.trades[:MAX_TRADE_ROWS]
    trade_rows = [
        [
            str(n),
            t.instrument,
            t.side,
            _when64(t.entry_ts),
            _when64(t.exit_ts),
            _price(t.entry_price),
            _price(t.exit_price),
            _num(t.size),
            _num(t.pnl, ",.2f"),
            _num(t.fees, ",.2f"),
            _num(t.funding, ",.2f"),
            t.exit_reason,
            _price(t.liquidation_price),
        ]
        for n, t in enumerate(shown, start=1)
    ]
    trade_header = [
        "#",
        "instrument",
        "side",
        "entry bar (UTC)",
        "exit bar end (UTC)",
        "entry price",
        "exit price",
        "size",
        "PnL",
        "fees",
        "funding",
        "exit reason",
        "liquidation price",
    ]
    omitted = len(result.trades) - len(shown)
    trades_note = (
        f'<p class="omitted">{omitted:,} more trade{"s" if omitted != 1 else ""} omitted: '
        f"showing the first {len(shown):,} of {len(result.trades):,}.</p>"
        if omitted > 0
        else f"<p>{len(result.trades):,} trade{'s' if len(result.trades) != 1 else ''}.</p>"
    )
    images = "\n".join(
        f'<figure><img src="{_e(name)}" alt="{_e(key)}"><figcaption>{_e(key)}</figcaption></figure>'
        for key, name in PLOTS.items()
    )

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; }}
td {{ text-align: right; font-variant-numeric: tabular-nums; }}
table.kv th {{ text-align: left; font-weight: normal; background: #f6f6f6; }}
thead th {{ background: #eee; }}
figure {{ margin: 0 0 1em; }}
img {{ max-width: 100%; }}
.period {{ color: #555; }}
</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="period">{_e(period)}</p>
<h2>Metrics</h2>
{_kv_table("metrics", metric_rows(result))}
<h2>Settings</h2>
{_kv_table("account", account)}
<h3>Costs per leg</h3>
{_table("legs", leg_fields, leg_rows)}
<h3>Risk rules</h3>
{_kv_table("risk", risk_rows)}
<h2>Notes</h2>
{notes}
<h2>Plots</h2>
{images}
<h2>Trades</h2>
{trades_note}
{_table("trades", trade_header, trade_rows)}
</body>
</html>
"""
