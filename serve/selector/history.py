"""Venue states over time from the lake, on an hourly grid: the selector's features at any
past hour (training) or at the newest recorded hour (serving without the MDS), and the
realised carry of a perp over a holding period (the training label's funding and basis).

What is read, per candidate of one base asset:

* the *index*: the oracle price recorded with a perp's funding series (Drift's oracle TWAP),
  else the first venue with bars; momentum (price over its 10 h / 50 h EMA) and volatility
  (std of hourly log returns over 24 h) are the asset's, from the index;
* perps: their funding series (rates settled per hour, normalised per hour when a venue
  settles every 8 h) and the mark recorded with it (else their bars' close) against the
  index: the premium. A perp without a recorded funding series is left out (its carry
  cannot be priced) and a note says so;
* spot: the venue's own bars when recorded (price, hourly volume for the sqrt impact),
  else the index: an on-chain pool or a CEX book quotes the same asset, and its cost here is
  fees and concession, not its price path. A note names the venues priced this way.

The grid is hourly; the state at grid hour ``i`` is what was known at the *end* of that hour
(``decision_ns``), and staleness is the age of the newest row feeding it at that moment.

A venue is a candidate at hour ``i`` only while every series feeding it is current
(``Recording``): the newest row is no older than the series' own interval (a funding
series' ``interval_s``, a bar series' timeframe, at least an hour) plus the venue's
``stale_after_s`` (venues.yaml, the threshold the MDS applies live). Before its first row,
past its last, or across a gap, a venue is left out at that hour with the reason
(``excluded``), never priced from carried-forward rows; when the index itself is not current,
every venue is. A state still out of ``VenueState``'s bounds is refused by name
(``InvalidVenueState``: the venue, the hour, the field).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import ValidationError

from cluster.config import BotmainConfig
from cluster.lake import Lake, timeframe_seconds
from serve.selector.candidates import Candidate, SelectorError, candidates
from serve.selector.features import VenueState

HOUR_NS = 3_600_000_000_000
EMA_SHORT_H, EMA_LONG_H, VOL_WINDOW_H, FUNDING_WINDOW_H = 10, 50, 24, 24


class InvalidVenueState(SelectorError):
    """A venue's state at one hour is out of ``VenueState``'s bounds: which venue, when, which field."""

    def __init__(self, key: str, at_ns: int, error: ValidationError) -> None:
        self.key = key
        self.at_ns = int(at_ns)
        self.fields = [str(e["loc"][0]) if e["loc"] else "?" for e in error.errors()]
        parts = [f"{f} = {_shown(e.get('input'))}: {e['msg'][0].lower()}{e['msg'][1:]}" for f, e in zip(self.fields, error.errors())]
        super().__init__(f"{key} at {_when(at_ns)}: {'; '.join(parts)}")


def _shown(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _when(ns: int) -> str:
    return f"{pd.Timestamp(int(ns), tz='UTC'):%Y-%m-%d %H:%M} UTC"


def venue_state(key: str, at_ns: int, **values) -> VenueState:
    """``VenueState(**values)``, refused as ``InvalidVenueState`` (venue, time, field) rather
    than a pydantic dump."""
    try:
        return VenueState(**values)
    except ValidationError as exc:
        raise InvalidVenueState(key, at_ns, exc) from None


@dataclass(frozen=True)
class Recording:
    """One recorded series that feeds a venue's state: its rows' times, the grid hour each
    belongs to, and the interval at which the next row is due. Current at a decision time
    while the newest row used is no older than its interval plus ``stale_after_s``."""

    label: str  # "drift:SOL-PERP funding", "binance:SOL-USDT bars_1h", "the index (...)"
    row_ns: np.ndarray  # sorted: a funding row's settlement, a bar's open
    hour_ns: np.ndarray  # the grid hour each row belongs to (the state at that hour uses it)
    interval_ns: np.ndarray  # per row: when the next row is due after it
    stale_after_s: float

    def newest(self, grid: np.ndarray) -> np.ndarray:
        """Per grid hour: the position of the newest row used there (-1: none yet)."""
        return np.searchsorted(self.hour_ns, grid, side="right") - 1

    def current(self, grid: np.ndarray) -> np.ndarray:
        pos = self.newest(grid)
        safe = np.clip(pos, 0, max(len(self.row_ns) - 1, 0))
        if not len(self.row_ns):
            return np.zeros(len(grid), dtype=bool)
        due = self.row_ns[safe] + self.interval_ns[safe] + int(self.stale_after_s * 1e9)
        return (pos >= 0) & (grid + HOUR_NS <= due)

    def why_not(self, grid_ns: int) -> str:
        """Why it is not current at grid hour ``grid_ns``, from what was known then."""
        pos = int(self.newest(np.array([grid_ns]))[0])
        if pos < 0:
            return f"{self.label}: not recorded yet"
        every = int(self.interval_ns[pos] // 1_000_000_000)
        return (f"{self.label}: no row since {_when(self.row_ns[pos])} (one is due every {every:,} s; "
                f"stale after {self.stale_after_s:g} s more)")


@dataclass
class VenueHistory:
    candidate: Candidate
    price: np.ndarray  # on the grid
    volume: np.ndarray  # mean hourly volume, base units (0: not recorded)
    last_ns: np.ndarray  # newest row at or before each grid hour (for staleness)
    source: str
    settled: np.ndarray | None = None  # perps: funding fraction settled in each grid hour (0 if none)
    rate_now_h: np.ndarray | None = None  # perps: latest settled rate, per hour
    premium_bps: np.ndarray | None = None  # perps: mark over index
    funding_mean_bps_h: np.ndarray | None = None  # perps: funding settled over the last 24 h, per hour
    cum_settled: np.ndarray | None = None  # perps: running sum of ``settled`` (0 first)
    recordings: list[Recording] = field(default_factory=list)  # the series feeding it (the index included)
    current: np.ndarray | None = None  # per grid hour: a candidate (every recording current), set by MarketHistory
    run_end: np.ndarray | None = None  # per grid hour: the last hour of the candidate span holding it (-1: none)

    def __post_init__(self) -> None:
        if self.settled is not None:
            window = pd.Series(self.settled).rolling(FUNDING_WINDOW_H, min_periods=1).sum().to_numpy()
            self.funding_mean_bps_h = window / FUNDING_WINDOW_H * 1e4
            self.cum_settled = np.concatenate([[0.0], np.cumsum(self.settled)])


@dataclass
class MarketHistory:
    base: str
    grid: np.ndarray  # int64 ns, start of each hour; decisions are made at its end
    index: np.ndarray
    index_source: str
    venues: dict[str, VenueHistory]
    momentum_short_bps: np.ndarray = field(init=False)
    momentum_long_bps: np.ndarray = field(init=False)
    volatility_bps: np.ndarray = field(init=False)
    notes: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # candidates with no history at all -> why

    def __post_init__(self) -> None:
        s = pd.Series(self.index)
        self.momentum_short_bps = ((s / s.ewm(span=EMA_SHORT_H, adjust=False).mean() - 1) * 1e4).to_numpy()
        self.momentum_long_bps = ((s / s.ewm(span=EMA_LONG_H, adjust=False).mean() - 1) * 1e4).to_numpy()
        ret = np.log(s).diff()
        self.volatility_bps = (ret.rolling(VOL_WINDOW_H, min_periods=6).std() * 1e4).fillna(0.0).to_numpy()
        for v in self.venues.values():
            current = np.isfinite(v.price)
            for rec in v.recordings:
                current &= rec.current(self.grid)
            v.current = current
            v.run_end = _run_ends(current)

    @classmethod
    def from_lake(cls, config: BotmainConfig, instrument: str, start=None, end=None, venues: list[str] | None = None) -> MarketHistory:
        lake = Lake(config.lake_root)
        cands = candidates(config, instrument, venues)
        notes: list[str] = []
        funding = {c.key: _frame(lake.read("funding", c.venue, c.symbol, start, end)) for c in cands if c.is_perp}
        bars = {c.key: _hourly_bars(lake, c, start, end) for c in cands}

        by_key = {c.key: c for c in cands}
        index_key = next((k for k, f in funding.items() if len(f) and f["oracle_price"].notna().any()), None)
        if index_key is not None:
            with_oracle = funding[index_key].dropna(subset=["oracle_price"]).drop_duplicates("ts", keep="last").sort_values("ts")
            idx = with_oracle.set_index("ts")["oracle_price"]
            index_source = f"oracle price recorded with {index_key}'s funding"
            index_rec = _funding_recording(f"the index ({index_key} oracle)", with_oracle, by_key[index_key].stale_after_s)
        else:
            with_bars = [k for k, b in bars.items() if b is not None]
            if not with_bars:
                raise SelectorError(f"the lake has no funding series or bars for any venue of {instrument} "
                                    f"({', '.join(c.key for c in cands)}): run `botmain ingest` first")
            idx = bars[with_bars[0]]["close"]
            index_source = f"{with_bars[0]} bars"
            index_rec = _bars_recording(f"the index ({with_bars[0]} bars)", bars[with_bars[0]], by_key[with_bars[0]].stale_after_s)
        index_last_rows = idx.index.asi8
        idx = idx.copy()
        idx.index = idx.index.floor("h")  # a row belongs to the hour it was recorded in
        idx = idx[~idx.index.duplicated(keep="last")]
        grid_index = pd.date_range(idx.index[0], idx.index[-1], freq="h", tz="UTC")
        grid = grid_index.asi8
        index_on_grid = idx.reindex(grid_index, method="ffill").to_numpy()
        index_last = _asof_ns(index_last_rows, grid + HOUR_NS)

        out: dict[str, VenueHistory] = {}
        left_out: dict[str, str] = {}
        for c in cands:
            b = bars[c.key]
            if c.is_perp:
                f = funding[c.key]
                if not len(f):
                    notes.append(f"{c.key}: no funding series recorded, left out (its carry cannot be priced)")
                    left_out[c.key] = "no funding series recorded (its carry cannot be priced)"
                    continue
                out[c.key] = _perp_history(c, f, b, grid_index, index_on_grid)
                out[c.key].recordings.append(index_rec)
            elif b is not None:
                price = b["close"].reindex(grid_index, method="ffill").to_numpy()
                volume = b["volume"].rolling(VOL_WINDOW_H, min_periods=1).mean().reindex(grid_index, method="ffill").fillna(0.0).to_numpy()
                out[c.key] = VenueHistory(c, price, volume, _asof_ns(b.index.asi8 + HOUR_NS, grid + HOUR_NS), "own bars",
                                          recordings=[_bars_recording(f"{c.key} {b.attrs['kind']}", b, c.stale_after_s), index_rec])
            else:
                out[c.key] = VenueHistory(c, index_on_grid.copy(), np.zeros(len(grid)), index_last.copy(), "index (no recording)",
                                          recordings=[index_rec])
        by_index = [k for k, v in out.items() if v.source.startswith("index")]
        if by_index:
            notes.append(f"priced at the index (no recording of their own): {', '.join(by_index)}")
        if not out:
            raise SelectorError(f"no venue of {instrument} has enough recorded data to be priced: " + "; ".join(notes))
        return cls(cands[0].base, grid, index_on_grid, index_source, out, notes=notes, left_out=left_out)

    @property
    def decision_ns(self) -> np.ndarray:
        return self.grid + HOUR_NS

    # --- features ------------------------------------------------------------------------

    def state(self, key: str, i: int, now_ns: int | None = None) -> VenueState:
        """The venue's state at the end of hour ``i`` (whether or not it is a candidate then);
        ``InvalidVenueState`` if a value is out of bounds."""
        v = self.venues[key]
        now = self.grid[i] + HOUR_NS if now_ns is None else now_ns
        perp = v.settled is not None
        return venue_state(
            key, self.grid[i],
            price=float(v.price[i]),
            funding_bps_h=float(v.rate_now_h[i] * 1e4) if perp else 0.0,
            funding_mean_24h_bps_h=float(v.funding_mean_bps_h[i]) if perp else 0.0,
            premium_bps=float(v.premium_bps[i]) if perp else 0.0,
            volatility_bps=float(self.volatility_bps[i]),
            momentum_short_bps=float(self.momentum_short_bps[i]),
            momentum_long_bps=float(self.momentum_long_bps[i]),
            volume=float(v.volume[i]),
            staleness_s=max(float(now - v.last_ns[i]) / 1e9, 0.0),
        )

    def is_candidate(self, key: str, i: int) -> bool:
        return bool(self.venues[key].current[i])

    def states(self, i: int, now_ns: int | None = None) -> dict[str, VenueState]:
        """The candidates' states at hour ``i`` (training): a venue that is not current is
        left out; an out-of-bounds value raises ``InvalidVenueState``."""
        return {k: self.state(k, i, now_ns) for k, v in self.venues.items() if v.current[i]}

    def states_at(self, i: int, now_ns: int | None = None) -> tuple[dict[str, VenueState], dict[str, str]]:
        """Serving: the candidates' states at hour ``i`` and, for every venue left out, why
        (not current, or a value out of bounds: that venue alone is left out)."""
        states, excluded = {}, self.excluded(i)
        for k, v in self.venues.items():
            if not v.current[i]:
                continue
            try:
                states[k] = self.state(k, i, now_ns)
            except InvalidVenueState as exc:
                excluded[k] = f"invalid market state: {exc}"
        return states, excluded

    def excluded(self, i: int) -> dict[str, str]:
        """Venues that are not candidates at hour ``i``, with the reason."""
        out = dict(self.left_out)
        for k, v in self.venues.items():
            if v.current[i]:
                continue
            stale = next((rec for rec in v.recordings if not rec.current(self.grid[i : i + 1])[0]), None)
            out[k] = f"not current at {_when(self.decision_ns[i])}: " + (stale.why_not(int(self.grid[i])) if stale else "no price")
        return out

    def candidate_spans(self, key: str) -> list[tuple[int, int]]:
        """The runs of grid hours (first, last; inclusive) during which ``key`` was a candidate."""
        current = self.venues[key].current
        edges = np.flatnonzero(np.diff(np.concatenate([[0], current.astype(np.int8), [0]])))
        return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]

    def span_times(self, key: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """``candidate_spans`` as periods: from the first hour's start to the last hour's end."""
        return [(pd.Timestamp(int(self.grid[a]), tz="UTC"), pd.Timestamp(int(self.grid[b] + HOUR_NS), tz="UTC"))
                for a, b in self.candidate_spans(key)]

    def spans_text(self, key: str | None = None, limit: int = 4) -> str:
        """``key``'s candidate spans in one line (every venue's, ``; ``-separated, without ``key``)."""
        if key is None:
            return "; ".join(f"{k} {self.spans_text(k, limit)}" for k in sorted(self.venues))
        spans = self.candidate_spans(key)
        if not spans:
            return "never a candidate"
        hours = sum(b - a + 1 for a, b in spans)
        shown = [f"{t0:%Y-%m-%d %H:%M} -> {t1:%Y-%m-%d %H:%M}" for t0, t1 in self.span_times(key)[:limit]]
        more = f" and {len(spans) - limit} more" if len(spans) > limit else ""
        return f"{', '.join(shown)}{more} ({hours:,} of {len(self.grid):,} h)"

    # --- realised carry (training labels) ----------------------------------------------------

    def realised_carry_bps(self, key: str, i: np.ndarray, horizon_h: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Funding paid over hours (i, i + horizon] plus the premium change, per side; 0 for
        spot. Meaningful only where the venue is a candidate through i + horizon (``run_end``)."""
        v = self.venues[key]
        if v.settled is None:
            return np.zeros(len(i))
        cum = v.cum_settled
        j = i + horizon_h
        funding = side * (cum[j + 1] - cum[i + 1]) * 1e4
        basis = -side * (v.premium_bps[j] - v.premium_bps[i])
        return funding + basis


def _frame(table) -> pd.DataFrame:
    df = table.to_pandas()
    if len(df):
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def _hourly_bars(lake: Lake, c: Candidate, start, end) -> pd.DataFrame | None:
    """The candidate's bars of its shortest timeframe, one row per hour: the last close known
    by the end of that hour, and the volume of the bars that closed in it. A bar is placed at
    the hour it closes in (its open plus its timeframe), so a 4h or 1d bar is not seen from
    its opening hour on (that would look ahead by up to a bar)."""
    timeframes = lake.bar_timeframes(c.venue, c.symbol)  # shortest first
    if not timeframes:
        return None
    kind = f"bars_{timeframes[0]}"
    df = _frame(lake.read(kind, c.venue, c.symbol, start, end))
    if not len(df):
        return None
    bar_s = timeframe_seconds(timeframes[0])
    closed_by = df["ts"] + pd.Timedelta(seconds=bar_s) - pd.Timedelta(1, "ns")  # in the hour it closes in
    df = df.set_index(pd.DatetimeIndex(closed_by, name="ts"))
    hourly = df.resample("h", label="left", closed="left").agg({"close": "last", "volume": "sum"}).dropna(subset=["close"])
    hourly.attrs["kind"] = kind
    hourly.attrs["interval_s"] = max(bar_s, 3600)
    return hourly


def _bars_recording(label: str, hourly: pd.DataFrame, stale_after_s: float) -> Recording:
    """Hourly bars: a row per hour with a bar (at least one bar of its timeframe)."""
    hours = hourly.index.asi8
    return Recording(label, hours, hours, np.full(len(hours), hourly.attrs["interval_s"] * 1_000_000_000, dtype=np.int64), stale_after_s)


def _funding_recording(label: str, f: pd.DataFrame, stale_after_s: float) -> Recording:
    """Funding settlements (sorted by ``ts``): the next one is due one ``interval_s`` later."""
    ts = pd.DatetimeIndex(f["ts"]).asi8
    hours = (ts // HOUR_NS) * HOUR_NS
    interval = f["interval_s"].clip(lower=1).to_numpy().astype(np.int64) * 1_000_000_000
    return Recording(label, ts, hours, interval, stale_after_s)


def _run_ends(current: np.ndarray) -> np.ndarray:
    """Per position: the last index of the run of True holding it, -1 where False."""
    n = len(current)
    out = np.full(n, -1, dtype=np.int64)
    end = -1
    for i in range(n - 1, -1, -1):
        if current[i]:
            if end < 0:
                end = i
            out[i] = end
        else:
            end = -1
    return out


def _asof_ns(row_ns: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """For each time in ``grid``, the newest row time strictly before it (the first row
    before any)."""
    pos = np.searchsorted(row_ns, grid, side="left") - 1
    return row_ns[np.clip(pos, 0, len(row_ns) - 1)]


def _perp_history(c: Candidate, f: pd.DataFrame, bars: pd.DataFrame | None, grid_index: pd.DatetimeIndex, index_on_grid: np.ndarray) -> VenueHistory:
    f = f.drop_duplicates("ts", keep="last").sort_values("ts")
    recordings = [_funding_recording(f"{c.key} funding", f, c.stale_after_s)]
    f = f.set_index("ts")
    hour = f.index.floor("h")
    settled = pd.Series(f["rate"].to_numpy(), index=hour).groupby(level=0).sum().reindex(grid_index, fill_value=0.0).to_numpy()
    per_hour = pd.Series((f["rate"] / (f["interval_s"].clip(lower=1) / 3600.0)).to_numpy(), index=hour)
    per_hour = per_hour[~per_hour.index.duplicated(keep="last")]
    rate_now_h = per_hour.reindex(grid_index, method="ffill").fillna(0.0).to_numpy()
    if f["mark_price"].notna().any():
        mark = f["mark_price"].dropna()
        mark.index = mark.index.floor("h")
        mark = mark[~mark.index.duplicated(keep="last")].reindex(grid_index, method="ffill").to_numpy()
        source = "funding series (mark recorded with it)"
    elif bars is not None:
        mark = bars["close"].reindex(grid_index, method="ffill").to_numpy()
        source = "funding series, mark from its bars"
        recordings.append(_bars_recording(f"{c.key} {bars.attrs['kind']}", bars, c.stale_after_s))
    else:
        mark = index_on_grid
        source = "funding series (no mark recorded: premium 0)"
    premium = np.nan_to_num((mark - index_on_grid) / index_on_grid * 1e4)
    volume = np.zeros(len(grid_index))
    if bars is not None:
        volume = bars["volume"].rolling(VOL_WINDOW_H, min_periods=1).mean().reindex(grid_index, method="ffill").fillna(0.0).to_numpy()
    price = np.where(np.isfinite(mark), mark, index_on_grid)
    return VenueHistory(c, price, volume, _asof_ns(f.index.asi8, grid_index.asi8 + HOUR_NS), source, settled, rate_now_h, premium,
                        recordings=recordings)
