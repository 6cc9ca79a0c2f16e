"""The bars a strategy assembles from the Market Data Server's stream are the frame's bars,
funding included: the sample's Drift SOL-PERP funding settlements over one-minute bars (the
sample's SOLUSDT bars stood in as Drift's, with a gap cut out), as events in the order the
replay feed publishes them, against ``load_frame``/``frame_bars`` on the same lake."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from actors.trading.bar_assembler import BarAssembler
from cluster.domain import Bar, FundingRate, Quote
from cluster.lake import Lake
from sim.history import load_frame
from sim.paper import frame_bars

KEY = "drift:SOL-PERP"


def _lake_with_drift_bars(lake_config, root):
    source = Lake(lake_config.lake_root)
    bars = source.read("bars_1m", "binanceusdm", "SOL-PERP")
    ts = bars["ts"].cast(pa.int64()).to_numpy()
    gap = (ts >= ts[3000]) & (ts < ts[3000] + 3 * 3600 * 10**9)  # three hours missing: settlements fall in no bar
    bars = bars.filter(pa.array(~gap))
    funding = source.read("funding", "drift", "SOL-PERP")
    lake = Lake(root)
    lake.write("bars_1m", "drift", "SOL-PERP", bars)
    lake.write("funding", "drift", "SOL-PERP", funding)
    lake_cfg = lake_config.store.lake.model_copy(update={"root": str(root)})
    return dataclasses.replace(lake_config, store=lake_config.store.model_copy(update={"lake": lake_cfg})), bars, funding


def _published(bars: pa.Table, funding: pa.Table):
    """The events in the replay feed's order: by publication time, funding first on a tie."""
    events = []
    f = {c: funding[c].to_pylist() for c in ("rate", "interval_s", "oracle_price", "mark_price")}
    for i, t in enumerate(funding["ts"].cast(pa.int64()).to_pylist()):
        events.append((t, 0, FundingRate(t, KEY, f["rate"][i], f["interval_s"][i], f["oracle_price"][i], f["mark_price"][i])))
    b = {c: bars[c].to_pylist() for c in ("open", "high", "low", "close", "volume")}
    for i, t in enumerate(bars["ts"].cast(pa.int64()).to_pylist()):
        bar = Bar(t, KEY, 60, b["open"][i], b["high"][i], b["low"][i], b["close"][i], b["volume"][i])
        events.append((t + 60 * 10**9, 1, bar))
    events.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in events]


def test_assembled_bars_equal_the_frames_with_funding_and_a_gap(lake_config, tmp_path):
    config, bars, funding = _lake_with_drift_bars(lake_config, tmp_path / "lake")
    frame = load_frame(config, [KEY], "1m")
    expected = list(frame_bars(frame))
    assert sum(1 for _, b in expected if b[0].funding != 0.0) > 20, "the case should settle funding"

    assembler = BarAssembler([KEY], 60.0)
    got = []
    for event in _published(bars, funding):
        got += assembler.on_event(event)
        got += assembler.on_event(Quote(event.ts_ns, KEY, 1.0, 1.0, 2.0, 1.0))  # other kinds change nothing
    assert len(got) == len(expected)
    for (ts_a, a), (ts_b, b) in zip(got, expected):
        assert ts_a == ts_b and a == b, (ts_a, a, b)
    assert assembler.outside_funding > 0 and assembler.late_funding == 0


def test_a_settlement_after_its_bar_is_late_and_a_bar_without_its_other_leg_is_dropped():
    a, b = "drift:SOL-PERP", "jupiter:SOL-USDC"
    asm = BarAssembler([a, b], 60.0)
    m = 60 * 10**9  # bars are stamped with their open: Bar(m) covers (m, 2m]
    assert asm.on_event(Bar(0, a, 60, 1, 1, 1, 1, 1)) == []
    out = asm.on_event(Bar(m, a, 60, 2, 2, 2, 2, 2)) + asm.on_event(Bar(m, b, 60, 3, 3, 3, 3, 3))
    assert [ts for ts, _ in out] == [m] and asm.dropped_bars == 1  # the first bar had no jupiter counterpart
    asm.on_event(FundingRate(2 * m + m // 2, a, 0.001, 3600))  # inside the next bar: waits for it
    asm.on_event(FundingRate(m + m // 2, a, 0.002, 3600))  # inside the bar already emitted: late, not applied
    assert asm.late_funding == 1
    ((ts, legs),) = asm.on_event(Bar(2 * m, a, 60, 4, 4, 4, 4, 4)) + asm.on_event(Bar(2 * m, b, 60, 5, 5, 5, 5, 5))
    assert ts == 2 * m and legs[0].funding == 0.001 and legs[0].funding_known == 0.001
    assert legs[1].funding == 0.0 and legs[1].close == 5.0
    assert asm.on_event(Bar(2 * m, a, 60, 6, 6, 6, 6, 6)) == []  # a bar time already emitted: ignored
