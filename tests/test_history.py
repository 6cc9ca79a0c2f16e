"""What a backtest's history refuses, and how: a timeframe the lake has no bars of names the
ones it has; a range outside the bars names the range the lake holds; no fallback turns
missing prices into NaN metrics. On the session lake (binanceusdm:SOL-PERP 1m bars of
2025-05-05 to 2025-06-04, Drift SOL-PERP funding with TWAPs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cluster.config import BotmainConfig
from cluster.lake import Lake
from sim.history import HistoryError, load_frame
from tests.test_cli import botmain


def test_a_timeframe_without_bars_names_the_timeframes_there_are(lake_config: BotmainConfig):
    with pytest.raises(HistoryError, match=r"binanceusdm:SOL-PERP: no bars_7m in the lake; it has bars of 1m .*--timeframe 1m"):
        load_frame(lake_config, ["binanceusdm:SOL-PERP"], "7m")


def test_a_start_after_the_last_bar_says_what_range_exists(lake_config: BotmainConfig):
    with pytest.raises(HistoryError) as caught:
        load_frame(lake_config, ["binanceusdm:SOL-PERP"], "1m", "2030-01-01")
    message = str(caught.value)
    assert "its bars_1m in the lake run from 2025-" in message and "none in 2030-01-01 to the end" in message
    assert "ingest data first" not in message


def test_a_fallback_outside_its_funding_range_says_so(lake_config: BotmainConfig):
    with pytest.raises(HistoryError, match=r"drift:SOL-PERP: no bars_1m in the lake, and the drift:SOL-PERP funding records in the lake run from"):
        load_frame(lake_config, ["drift:SOL-PERP"], "1m", "2019-01-01", "2019-02-01")


def test_funding_without_twaps_is_no_fallback(lake_config: BotmainConfig, tmp_path: Path):
    """A CEX's funding series carries no mark TWAPs (NaN): it must not become bars of NaN."""
    import dataclasses

    lake = Lake(tmp_path / "lake")
    ts = np.arange(np.datetime64("2025-05-05T00:00", "ns"), np.datetime64("2025-05-06T00:00", "ns"), np.timedelta64(8, "h"))
    lake.write("funding", "binanceusdm", "SOL-PERP", pa.table({
        "ts": pa.array(ts, pa.timestamp("ns", tz="UTC")), "rate": [1e-4] * len(ts), "interval_s": [28800] * len(ts),
        "oracle_price": [float("nan")] * len(ts), "mark_price": [float("nan")] * len(ts),
    }))  # fmt: skip
    config = dataclasses.replace(lake_config, store=lake_config.store.model_copy(
        update={"lake": lake_config.store.lake.model_copy(update={"root": str(tmp_path / "lake")})}))
    assert config.lake_root == tmp_path / "lake"
    with pytest.raises(HistoryError, match=r"binanceusdm:SOL-PERP: no bars of any timeframe .* no funding series with TWAPs"):
        load_frame(config, ["binanceusdm:SOL-PERP"], "1h")


def test_botmain_backtest_refuses_a_timeframe_and_a_range_it_has_no_bars_for(lake_config: BotmainConfig, session_config_dir: Path):
    seven = botmain(session_config_dir, "backtest", "sol_ema_cross", "--timeframe", "7m")
    assert seven.returncode != 0, seven.stdout
    assert "no bars_7m in the lake; it has bars of 1m" in seven.stderr
    assert "nan" not in seven.stdout.lower()
    late = botmain(session_config_dir, "backtest", "sol_ema_cross", "--start", "2030-01-01")
    assert late.returncode != 0 and "none in 2030-01-01 to the end" in late.stderr
