"""The selector's hourly view of a candidate's bars: the shortest timeframe the lake holds,
each bar seen from the hour it closes in, never from its opening hour (no look-ahead)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from cluster.config import BotmainConfig
from cluster.lake import Lake
from serve.selector.candidates import candidates
from serve.selector.history import _hourly_bars

T0 = np.datetime64("2025-05-05T00:00", "ns")


def bars(n: int, every: np.timedelta64, first_close: float) -> pa.Table:
    ts = T0 + np.arange(n) * every
    close = first_close + np.arange(n, dtype=float)
    return pa.table({"ts": pa.array(ts, pa.timestamp("ns", tz="UTC")), "open": close, "high": close, "low": close,
                     "close": close, "volume": np.ones(n)})  # fmt: skip


def test_a_four_hour_bar_is_seen_from_the_hour_it_closes_in_and_the_shortest_timeframe_wins(lake_config: BotmainConfig, tmp_path):
    (spot,) = [c for c in candidates(lake_config, "SOL-PERP") if c.key == "binance:SOL-USDT"]
    lake = Lake(tmp_path / "lake")
    lake.write("bars_4h", spot.venue, spot.symbol, bars(6, np.timedelta64(4, "h"), 100.0))
    hourly = _hourly_bars(lake, spot, None, None)
    assert hourly.attrs["kind"] == "bars_4h" and hourly.attrs["interval_s"] == 4 * 3600
    # the 00:00-04:00 bar (close 100) is known at 04:00, the end of hour 03:00, not in hours 00:00-02:00
    first = pd.Timestamp("2025-05-05 03:00", tz="UTC")
    assert hourly.index[0] == first and hourly["close"].iloc[0] == 100.0
    assert list(hourly.index) == [first + pd.Timedelta(hours=4 * k) for k in range(6)]
    # a shorter timeframe beside it is what is read (1d sorts before 4h by name, and looks ahead further)
    lake.write("bars_1d", spot.venue, spot.symbol, bars(2, np.timedelta64(1, "D"), 500.0))
    lake.write("bars_1h", spot.venue, spot.symbol, bars(24, np.timedelta64(1, "h"), 200.0))
    hourly = _hourly_bars(lake, spot, None, None)
    assert hourly.attrs["kind"] == "bars_1h"
    assert hourly.index[0] == pd.Timestamp("2025-05-05 00:00", tz="UTC") and hourly["close"].iloc[0] == 200.0
