"""How the ``botmain`` command renders what it is told: status (spans of time as durations,
not raw seconds) and a decision (with the candidates left out, and why)."""

from __future__ import annotations

import pytest

from cli.market_data import duration, render_status
from cli.selector import render_decision


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


def test_a_decision_names_the_candidates_it_left_out():
    decision = {
        "side": "buy", "size": 10.0, "instrument": "SOL-PERP", "horizon_h": 24.0, "venue": "drift", "kind": "perp",
        "market": "drift:SOL-PERP", "expected_cost_bps": 5.65, "decided_by": "model", "model_version": "vs-1",
        "features_from": "MDS live (drift:SOL-PERP), history features from the lake",
        "alternatives": [{"market": "drift:SOL-PERP", "kind": "perp", "cost_bps": 5.65}],
        "excluded": [{"venue": "binance", "market": "binance:SOL-USDT",
                      "reason": "the MDS calls binance stale: nothing from it within its stale_after_s (10 s)"}],
    }  # fmt: skip
    lines = render_decision(decision)
    assert lines[-1] == "left out   binance:SOL-USDT: the MDS calls binance stale: nothing from it within its stale_after_s (10 s)"
    assert not any(line.startswith("left out") for line in render_decision({**decision, "excluded": []}))
