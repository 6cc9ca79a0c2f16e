"""Assemble a strategy's ``Frame`` from the lake: aligned bars per leg plus funding.

Where the lake has no bars of any timeframe for a leg, two documented fallbacks apply
(and the frame's notes say so):

- a Drift-style perp whose funding series carries TWAPs gets hourly bars from its mark
  TWAP (open = high = low = close, volume 0, so only ``slippage_bps`` applies);
- a spot leg with no bars takes the oracle TWAP of a perp on the same base asset (Drift's
  oracle is the spot index), with the same caveats.

A leg with bars of other timeframes only is refused with the timeframes it has, and a
range with no bars in it is refused with the range the lake holds.

Funding recorded at time ``T`` settles at the close of the bar that contains ``T``
(``open < T <= close``): the position held through that bar pays or receives it.
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.config.loader import BotmainConfig
from cluster.lake import Lake
from strategies.frame import Frame, LegData

HOUR_S = 3600.0


class HistoryError(ValueError):
    """The lake cannot provide what a backtest asked for; the message says what is missing."""


def _ns(table: pa.Table, column: str = "ts") -> np.ndarray:
    return table[column].cast(pa.int64()).to_numpy()


def _day(t: np.datetime64) -> str:
    return str(np.datetime64(t, "m")).replace("T", " ")


def _outside_range(what: str, span: tuple[np.datetime64, np.datetime64], start, end) -> str:
    asked = f"{start or 'the start'} to {end or 'the end'}"
    return f"{what} in the lake run from {_day(span[0])} to {_day(span[1])} UTC, none in {asked}"


def _bars_table(lake: Lake, config: BotmainConfig, key: str, timeframe: str, start, end, notes: list[str]) -> dict:
    inst = config.instrument(key)
    kind = f"bars_{timeframe}"
    bars = lake.read(kind, inst.venue, inst.symbol, start, end)
    if bars.num_rows:
        return {"ts": _ns(bars), **{c: bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}}
    span = lake.span(kind, inst.venue, inst.symbol)
    if span is not None:
        raise HistoryError(f"{key}: " + _outside_range(f"its {kind}", span, start, end))
    others = lake.bar_timeframes(inst.venue, inst.symbol)
    if others:
        raise HistoryError(
            f"{key}: no {kind} in the lake; it has bars of {', '.join(others)} for this instrument "
            f"(--timeframe {others[0]})"
        )
    candidates = [(inst.venue, inst.symbol, "mark_price")] if inst.kind.value == "perp" else []
    if inst.kind.value == "spot":
        candidates += [
            (other.venue, other.symbol, "oracle_price")
            for other in config.instruments()
            if other.kind.value == "perp" and other.base == inst.base
        ]
    elsewhere = []  # fallback series that exist, but not in the range asked for
    for venue, symbol, column in candidates:
        funding = lake.read("funding", venue, symbol, start, end)
        if funding.num_rows == 0:
            span = lake.span("funding", venue, symbol)
            if span is not None:
                elsewhere.append(_outside_range(f"the {venue}:{symbol} funding records", span, start, end))
            continue
        priced = pc.is_finite(funding[column])
        if not pc.any(priced).as_py():
            continue  # this series carries no TWAPs (a CEX's funding has none)
        funding = funding.filter(priced)
        price = funding[column].to_numpy()
        interval = funding["interval_s"].to_numpy().astype(np.int64)
        notes.append(
            f"{key}: no bars_{timeframe} in the lake; using {column} TWAPs of the {venue}:{symbol} "
            f"funding series as {int(np.median(interval))}s bars (no intrabar range, no volume)"
        )
        return {
            "ts": _ns(funding) - interval * 1_000_000_000,
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": np.zeros(len(price)),
        }
    if elsewhere:
        raise HistoryError(f"{key}: no {kind} in the lake, and " + "; ".join(elsewhere))
    raise HistoryError(
        f"{key}: no bars of any timeframe in the lake at {lake.root}"
        + (" and no funding series with TWAPs to fall back on" if candidates else "")
        + "; ingest data first (botmain ingest PATH)"
    )


def _funding(lake: Lake, config: BotmainConfig, key: str, ts: np.ndarray, bar_ns: int, start, end, notes: list[str]):
    inst = config.instrument(key)
    n = len(ts)
    settled = np.zeros(n)
    known = np.zeros(n)
    if inst.kind.value != "perp":
        return settled, known
    table = lake.read("funding", inst.venue, inst.symbol, start, end)
    if not table.num_rows:
        notes.append(f"{key}: no funding series in the lake: funding is not applied")
        return settled, known
    f_ts = _ns(table)
    rate = table["rate"].to_numpy()
    hourly = rate * HOUR_S / table["interval_s"].to_numpy()
    idx = np.searchsorted(ts + bar_ns, f_ts, side="left")
    inside = (idx < n) & (f_ts > ts[np.minimum(idx, n - 1)])
    np.add.at(settled, idx[inside], rate[inside])
    marks = np.full(n, np.nan)
    marks[idx[inside]] = hourly[inside]
    # latest published hourly rate at each close, 0 before the first one
    last = np.where(~np.isnan(marks), np.arange(n), -1)
    np.maximum.accumulate(last, out=last)
    known = np.where(last >= 0, marks[np.maximum(last, 0)], 0.0)
    outside = int((~inside).sum())
    if outside:
        notes.append(f"{key}: {outside} funding record(s) fall outside the bars and are not applied")
    return settled, known


def load_frame(
    config: BotmainConfig,
    instruments: list[str],
    timeframe: str | None = None,
    start: str | np.datetime64 | None = None,
    end: str | np.datetime64 | None = None,
) -> Frame:
    """Bars for every leg on their common timestamps, ``start <= ts < end``."""
    if not instruments:
        raise HistoryError("a backtest needs at least one instrument")
    timeframe = timeframe or config.simulation.timeframe
    lake = Lake(config.lake_root)
    notes: list[str] = []
    raw = [_bars_table(lake, config, key, timeframe, start, end, notes) for key in instruments]
    common = reduce(np.intersect1d, [r["ts"] for r in raw])
    if len(common) < 2:
        raise HistoryError(f"{', '.join(instruments)}: fewer than 2 bars in common between the legs")
    for key, r in zip(instruments, raw, strict=True):
        dropped = len(r["ts"]) - len(common)
        if dropped:
            notes.append(f"{key}: {dropped} bar(s) without a counterpart in the other legs dropped")
    bar_ns = int(np.median(np.diff(common)))
    gaps = int((np.diff(common) > 1.5 * bar_ns).sum())
    if gaps:
        notes.append(f"{gaps} gap(s) in the bars: prices jump across them")
    legs = []
    for key, r in zip(instruments, raw, strict=True):
        pick = np.searchsorted(r["ts"], common)
        settled, known = _funding(lake, config, key, common, bar_ns, start, end, notes)
        legs.append(
            LegData(
                key=key,
                kind=config.instrument(key).kind.value,
                open=np.ascontiguousarray(r["open"][pick], dtype=np.float64),
                high=np.ascontiguousarray(r["high"][pick], dtype=np.float64),
                low=np.ascontiguousarray(r["low"][pick], dtype=np.float64),
                close=np.ascontiguousarray(r["close"][pick], dtype=np.float64),
                volume=np.ascontiguousarray(r["volume"][pick], dtype=np.float64),
                funding=settled,
                funding_known=known,
            )
        )
    return Frame(ts=common, bar_seconds=bar_ns / 1e9, legs=tuple(legs), notes=tuple(notes))


def frame_from_bars(bars: pa.Table, key: str, kind: str = "perp", notes: tuple[str, ...] = ()) -> Frame:
    """A one-leg frame straight from a bars table (the lake's layout), without funding:
    for benchmarks and research on a file that is not in the lake."""
    ts = _ns(bars)
    n = len(ts)
    if n < 2:
        raise HistoryError(f"{key}: fewer than 2 bars")
    zeros = np.zeros(n)
    leg = LegData(
        key=key,
        kind=kind,
        **{c: np.ascontiguousarray(bars[c].to_numpy(), dtype=np.float64) for c in ("open", "high", "low", "close", "volume")},
        funding=zeros,
        funding_known=zeros,
    )
    return Frame(ts=ts, bar_seconds=float(np.median(np.diff(ts))) / 1e9, legs=(leg,), notes=notes)
