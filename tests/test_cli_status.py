"""How ``botmain status`` / ``mds status`` print spans of time: as durations, not raw seconds."""

from __future__ import annotations

import pytest

from cli.market_data import duration, render_status


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.0, "0.0s"), (12.34, "12.3s"), (59.96, "60.0s"), (60, "1m 00s"), (245, "4m 05s"), (3_600, "1h 00m"),
    (11_520, "3h 12m"), (86_400, "1d 0h"), (26_101_680.0, "302d 2h"), (51_904_798.7, "600d 17h"),
])  # fmt: skip
def test_duration(seconds, shown):
    assert duration(seconds) == shown


def test_a_venue_silent_for_months_reads_as_days():
    status = {"uptime_s": 110.2, "clock": "event", "subscribers": [], "feeds": {}, "sources": {},
              "venues": {"binanceusdm": {"stale": True, "silent_s": 26_101_680.0}, "drift": {"stale": False, "silent_s": 0.0}},
              "best": {"BTC-PERP": {"bid": None, "bid_venue": None, "ask": None, "ask_venue": None},
                       "SOL-PERP": {"bid": 150.1, "bid_venue": "drift", "ask": 150.2, "ask_venue": "drift"}},
              "store": None}  # fmt: skip
    lines = render_status(status)
    assert lines[0].startswith("market data mds up 1m 50s, clock event")
    assert "  venue binanceusdm  STALE  silent 302d 2h" in lines
    assert "  venue drift        live   silent 0.0s" in lines
    assert "  best BTC-PERP   none: no venue quoting it is live" in lines
    assert any(line.startswith("  best SOL-PERP   bid 150.1 @drift") and "ask 150.2 @drift" in line for line in lines)
