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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cluster.config import BotmainConfig
from cluster.lake import Lake
from serve.selector.candidates import Candidate, SelectorError, candidates
from serve.selector.features import VenueState

HOUR_NS = 3_600_000_000_000
EMA_SHORT_H, EMA_LONG_H, VOL_WINDOW_H, FUNDING_WINDOW_H = 10, 50, 24, 24


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

    def __post_init__(self) -> None:
        s = pd.Series(self.index)
        self.momentum_short_bps = ((s / s.ewm(span=EMA_SHORT_H, adjust=False).mean() - 1) * 1e4).to_numpy()
        self.momentum_long_bps = ((s / s.ewm(span=EMA_LONG_H, adjust=False).mean() - 1) * 1e4).to_numpy()
        ret = np.log(s).diff()
        self.volatility_bps = (ret.rolling(VOL_WINDOW_H, min_periods=6).std() * 1e4).fillna(0.0).to_numpy()

    @classmethod
    def from_lake(cls, config: BotmainConfig, instrument: str, start=None, end=None, venues: list[str] | None = None) -> MarketHistory:
        lake = Lake(config.lake_root)
        cands = candidates(config, instrument, venues)
        notes: list[str] = []
        funding = {c.key: _frame(lake.read("funding", c.venue, c.symbol, start, end)) for c in cands if c.is_perp}
        bars = {c.key: _hourly_bars(lake, c, start, end) for c in cands}

        index_key = next((k for k, f in funding.items() if len(f) and f["oracle_price"].notna().any()), None)
        if index_key is not None:
            idx = funding[index_key].set_index("ts")["oracle_price"].dropna()
            index_source = f"oracle price recorded with {index_key}'s funding"
        else:
            with_bars = [k for k, b in bars.items() if b is not None]
            if not with_bars:
                raise SelectorError(f"the lake has no funding series or bars for any venue of {instrument} "
                                    f"({', '.join(c.key for c in cands)}): run `botmain ingest` first")
            idx = bars[with_bars[0]]["close"]
            index_source = f"{with_bars[0]} bars"
        index_last_rows = idx.index.asi8
        idx = idx.copy()
        idx.index = idx.index.floor("h")  # a row belongs to the hour it was recorded in
        idx = idx[~idx.index.duplicated(keep="last")]
        grid_index = pd.date_range(idx.index[0], idx.index[-1], freq="h", tz="UTC")
        grid = grid_index.asi8
        index_on_grid = idx.reindex(grid_index, method="ffill").to_numpy()
        index_last = _asof_ns(index_last_rows, grid + HOUR_NS)

        out: dict[str, VenueHistory] = {}
        for c in cands:
            b = bars[c.key]
            if c.is_perp:
                f = funding[c.key]
                if not len(f):
                    notes.append(f"{c.key}: no funding series recorded, left out (its carry cannot be priced)")
                    continue
                out[c.key] = _perp_history(c, f, b, grid_index, index_on_grid)
            elif b is not None:
                price = b["close"].reindex(grid_index, method="ffill").to_numpy()
                volume = b["volume"].rolling(VOL_WINDOW_H, min_periods=1).mean().reindex(grid_index, method="ffill").fillna(0.0).to_numpy()
                out[c.key] = VenueHistory(c, price, volume, _asof_ns(b.index.asi8 + HOUR_NS, grid + HOUR_NS), "own bars")
            else:
                out[c.key] = VenueHistory(c, index_on_grid.copy(), np.zeros(len(grid)), index_last.copy(), "index (no recording)")
        by_index = [k for k, v in out.items() if v.source.startswith("index")]
        if by_index:
            notes.append(f"priced at the index (no recording of their own): {', '.join(by_index)}")
        if not out:
            raise SelectorError(f"no venue of {instrument} has enough recorded data to be priced: " + "; ".join(notes))
        return cls(cands[0].base, grid, index_on_grid, index_source, out, notes=notes)

    @property
    def decision_ns(self) -> np.ndarray:
        return self.grid + HOUR_NS

    # --- features ------------------------------------------------------------------------

    def state(self, key: str, i: int, now_ns: int | None = None) -> VenueState:
        v = self.venues[key]
        now = self.grid[i] + HOUR_NS if now_ns is None else now_ns
        perp = v.settled is not None
        return VenueState(
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

    def states(self, i: int, now_ns: int | None = None) -> dict[str, VenueState]:
        return {k: self.state(k, i, now_ns) for k in self.venues if np.isfinite(self.venues[k].price[i])}

    # --- realised carry (training labels) ----------------------------------------------------

    def realised_carry_bps(self, key: str, i: np.ndarray, horizon_h: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Funding paid over hours (i, i + horizon] plus the premium change, per side; 0 for spot."""
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
    kinds = sorted({p.kind for p in lake.summary() if p.venue == c.venue and p.instrument == c.symbol and p.kind.startswith("bars_")})
    if not kinds:
        return None
    df = _frame(lake.read(kinds[0], c.venue, c.symbol, start, end))
    if not len(df):
        return None
    df = df.set_index("ts")
    hourly = df.resample("h", label="left", closed="left").agg({"close": "last", "volume": "sum"}).dropna(subset=["close"])
    return hourly


def _asof_ns(row_ns: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """For each time in ``grid``, the newest row time strictly before it (the first row
    before any)."""
    pos = np.searchsorted(row_ns, grid, side="left") - 1
    return row_ns[np.clip(pos, 0, len(row_ns) - 1)]


def _perp_history(c: Candidate, f: pd.DataFrame, bars: pd.DataFrame | None, grid_index: pd.DatetimeIndex, index_on_grid: np.ndarray) -> VenueHistory:
    f = f.drop_duplicates("ts", keep="last").set_index("ts")
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
    else:
        mark = index_on_grid
        source = "funding series (no mark recorded: premium 0)"
    premium = np.nan_to_num((mark - index_on_grid) / index_on_grid * 1e4)
    volume = np.zeros(len(grid_index))
    if bars is not None:
        volume = bars["volume"].rolling(VOL_WINDOW_H, min_periods=1).mean().reindex(grid_index, method="ffill").fillna(0.0).to_numpy()
    price = np.where(np.isfinite(mark), mark, index_on_grid)
    return VenueHistory(c, price, volume, _asof_ns(f.index.asi8, grid_index.asi8 + HOUR_NS), source, settled, rate_now_h, premium)
