"""The ingest format readers on the real sample recordings, and the files they refuse.

No database: ``read_file`` only needs the shipped configuration to resolve instruments.
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pytest

from cluster.config import load_config
from cluster.lake import schema_for
from jobs.ingest.formats import read_file
from jobs.ingest.naming import InstrumentResolver
from jobs.ingest.series import IngestFileError, ParsedFile, Series
from cluster.book_snapshots import sample_snapshots

from tests.conftest import SAMPLE

TS = pa.timestamp("ns", tz="UTC")
SOL_1M = SAMPLE / "binance" / "futures" / "SOL_USDT_USDT-1m-futures.feather"
DRIFT_SOL = SAMPLE / "drift" / "SOL-PERP.csv"
USDM = SAMPLE / "hftbacktest" / "usdm" / "btcusdt_20240808.gz"
SPOT = SAMPLE / "hftbacktest" / "spot" / "btcusdt_20240808.gz"
HYPERLIQUID = SAMPLE / "hftbacktest" / "hyperliquid" / "btcusd_20250126.gz"


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture
def resolver(config) -> InstrumentResolver:
    return InstrumentResolver(config)


_parsed_cache: dict[Path, ParsedFile] = {}


def parsed(path: Path) -> ParsedFile:
    """Sample files are read once per module (the Binance recordings take seconds)."""
    if path not in _parsed_cache:
        _parsed_cache[path] = read_file(path, InstrumentResolver(load_config()))
    return _parsed_cache[path]


def by_kind(pf: ParsedFile) -> dict[str, Series]:
    kinds = [s.kind for s in pf.series]
    assert len(kinds) == len(set(kinds)), f"one series per kind expected, got {kinds}"
    return {s.kind: s for s in pf.series}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def assert_lake_schema(series: Series) -> None:
    assert series.table.schema.remove_metadata() == schema_for(series.kind)[0]


def candles(dates, **overrides) -> pa.Table:
    n = len(dates)
    cols = {
        "date": pa.array(np.array(dates, dtype="datetime64[ns]"), TS),
        "open": [10.0 + i for i in range(n)],
        "high": [11.0 + i for i in range(n)],
        "low": [9.0 + i for i in range(n)],
        "close": [10.5 + i for i in range(n)],
        "volume": [100.0] * n,
    }
    cols.update(overrides)
    return pa.table(cols)


MINUTES = ["2024-01-01T00:00", "2024-01-01T00:01", "2024-01-01T00:02", "2024-01-01T00:03"]


def gz_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as handle:
        return handle.read().splitlines()


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


# --- freqtrade candles -----------------------------------------------------------------


def test_freqtrade_sol_perp_1m_bars():
    pf = parsed(SOL_1M)
    assert pf.notes == []
    (bars,) = pf.series
    assert bars.kind == "bars_1m"
    assert bars.instrument.key == "binanceusdm:SOL-PERP"
    assert bars.interval_s == 60
    assert bars.rows == 43_200
    assert bars.table["ts"][0].as_py() == utc("2025-05-04T15:33")
    assert bars.table["ts"][-1].as_py() == utc("2025-06-03T15:32")
    assert_lake_schema(bars)


def test_freqtrade_bars_keep_the_file_values_with_no_gaps():
    bars = parsed(SOL_1M).series[0].table
    raw = feather.read_table(SOL_1M)
    for name in ("open", "high", "low", "close", "volume"):
        assert bars[name].equals(raw[name]), name
    steps = np.diff(bars["ts"].to_numpy().astype(np.int64))
    assert (steps == 60 * 10**9).all()


# --- Drift funding ---------------------------------------------------------------------


def test_drift_sol_perp_funding():
    pf = parsed(DRIFT_SOL)
    (funding,) = pf.series
    assert funding.kind == "funding"
    assert funding.instrument.key == "drift:SOL-PERP"
    assert funding.interval_s == 3600
    assert funding.rows == 8_467
    assert set(funding.table["interval_s"].to_pylist()) == {3600}
    assert funding.table["ts"][0].as_py() == utc("2025-04-14T00:00")
    assert_lake_schema(funding)


def test_drift_rate_is_funding_rate_over_oracle_twap():
    table = parsed(DRIFT_SOL).series[0].table
    with open(DRIFT_SOL, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == table.num_rows
    # Hand check of the first row: -0.000004666 USDC per SOL at a 127.636936 USD oracle TWAP.
    assert rows[0]["fundingRate"] == "-0.000004666" and rows[0]["oraclePriceTwap"] == "127.636936"
    assert table["rate"][0].as_py() == pytest.approx(-3.6557e-8, rel=1e-4)
    for i in (0, 1, 1000, 5000, len(rows) - 1):
        row = rows[i]
        assert table["ts"][i].as_py() == datetime.fromtimestamp(int(row["ts"]), timezone.utc)
        assert table["rate"][i].as_py() == float(row["fundingRate"]) / float(row["oraclePriceTwap"])
        assert table["oracle_price"][i].as_py() == float(row["oraclePriceTwap"])
        assert table["mark_price"][i].as_py() == float(row["markPriceTwap"])


# --- Binance websocket recordings ------------------------------------------------------


@pytest.mark.parametrize(
    "path, key, n_quotes, n_trades",
    [(USDM, "binanceusdm:BTC-PERP", 66_089, 21_313), (SPOT, "binance:BTC-USDT", 28_040, 9_757)],
    ids=["usdm", "spot"],
)
def test_binance_recording_series(path, key, n_quotes, n_trades):
    pf = parsed(path)
    series = by_kind(pf)
    assert set(series) == {"book_updates", "quotes", "trades"}
    assert {s.instrument.key for s in pf.series} == {key}
    assert series["quotes"].rows == n_quotes
    assert series["trades"].rows == n_trades
    assert not [n for n in pf.notes if "gap" in n or "left out" in n], pf.notes
    for s in pf.series:
        assert_lake_schema(s)
    book = series["book_updates"].table
    assert book["is_snapshot"][0].as_py() is True
    first_seq = book["seq"][0].as_py()
    first_msg = book.filter(pc.equal(book["seq"], first_seq))
    assert all(first_msg["is_snapshot"].to_pylist())
    assert set(first_msg["is_bid"].to_pylist()) == {True, False}
    assert set(series["trades"].table["side"].to_pylist()) == {"buy", "sell"}


@pytest.mark.parametrize("path", [USDM, SPOT], ids=["usdm", "spot"])
def test_binance_rebuilt_book_matches_book_ticker_at_same_update_id(path):
    """The rebuilt L2 book's top equals every bookTicker sent at the same update id."""
    series = by_kind(parsed(path))
    snaps = sample_snapshots(series["book_updates"].table, interval_ns=1, depth=1)
    quotes = series["quotes"].table
    by_seq: dict[int, list[tuple[float, float]]] = {}
    for seq, bid, ask in zip(quotes["seq"].to_pylist(), quotes["bid"].to_pylist(), quotes["ask"].to_pylist()):
        by_seq.setdefault(seq, []).append((bid, ask))
    matches, mismatches = 0, []
    for seq, bid_px, ask_px in zip(snaps["seq"].to_pylist(), snaps["bid_px"].to_pylist(), snaps["ask_px"].to_pylist()):
        for bid, ask in by_seq.get(seq, []):
            if bid_px[:1] == [bid] and ask_px[:1] == [ask]:
                matches += 1
            else:
                mismatches.append((seq, bid_px, ask_px, bid, ask))
    assert mismatches == [], mismatches[:5]
    assert matches >= 300


def test_binance_spot_snapshot_after_first_diffs_is_bridged():
    """In the spot file the REST snapshot comes after a few diffs: stale ones are dropped
    and the first applied diff straddles lastUpdateId + 1."""
    lines = gz_lines(SPOT)
    snap_line = next(i for i, line in enumerate(lines) if '"lastUpdateId"' in line)
    early = [json.loads(line.split(" ", 1)[1]) for line in lines[:snap_line]]
    assert any("depthUpdate" == m.get("data", {}).get("e") for m in early)  # the premise
    last_id = json.loads(lines[snap_line].split(" ", 1)[1])["lastUpdateId"]
    book = by_kind(parsed(SPOT))["book_updates"].table
    seqs = book["seq"].to_numpy()
    delta_seqs = seqs[~book["is_snapshot"].to_numpy(zero_copy_only=False)]
    assert seqs[0] == last_id
    assert delta_seqs.min() > last_id


def test_binance_gap_in_diff_chain_is_reported_and_later_diffs_left_out(tmp_path, resolver):
    lines = gz_lines(SPOT)[:300]
    snap_line = next(i for i, line in enumerate(lines) if '"lastUpdateId"' in line)
    last_id = json.loads(lines[snap_line].split(" ", 1)[1])["lastUpdateId"]
    applied = [
        i
        for i, line in enumerate(lines)
        if "depthUpdate" in line and json.loads(line.split(" ", 1)[1])["data"]["u"] > last_id
    ]
    dropped = applied[2]
    kept_u = json.loads(lines[applied[1]].split(" ", 1)[1])["data"]["u"]
    path = write_gz(tmp_path / "btcusdt_gap.gz", lines[:dropped] + lines[dropped + 1 :])
    pf = read_file(path, resolver)
    assert any("1 gap(s)" in n for n in pf.notes), pf.notes
    assert any("left out" in n for n in pf.notes), pf.notes
    book = by_kind(pf)["book_updates"].table
    assert max(book["seq"].to_pylist()) == kept_u


# --- Hyperliquid -----------------------------------------------------------------------


def test_hyperliquid_recording():
    pf = parsed(HYPERLIQUID)
    series = by_kind(pf)
    assert set(series) == {"book_updates", "quotes", "trades"}
    assert {s.instrument.key for s in pf.series} == {"hyperliquid:BTC-PERP"}
    assert series["quotes"].rows == 45
    assert series["trades"].rows == 64
    assert len(set(series["trades"].table["trade_id"].to_pylist())) == 64
    assert any("redelivered" in n for n in pf.notes), pf.notes
    book = series["book_updates"].table
    assert all(book["is_snapshot"].to_pylist())
    assert len(set(book["seq"].to_pylist())) == 45
    for s in pf.series:
        assert_lake_schema(s)


def test_hyperliquid_quotes_are_the_top_of_each_l2book():
    series = by_kind(parsed(HYPERLIQUID))
    book = series["book_updates"].table.to_pylist()
    quotes = series["quotes"].table.to_pylist()
    for q in quotes:
        levels = [r for r in book if r["seq"] == q["seq"]]
        bids = [r for r in levels if r["is_bid"]]
        asks = [r for r in levels if not r["is_bid"]]
        best_bid = max(bids, key=lambda r: r["price"])
        best_ask = min(asks, key=lambda r: r["price"])
        assert (q["bid"], q["bid_size"]) == (best_bid["price"], best_bid["size"])
        assert (q["ask"], q["ask_size"]) == (best_ask["price"], best_ask["size"])
        assert q["bid"] < q["ask"]


def test_hyperliquid_redelivered_trades_are_dropped_by_tid(tmp_path, resolver):
    lines = gz_lines(HYPERLIQUID)
    trades_line = next(line for line in lines if '"channel":"trades"' in line)
    n_repeated = len(json.loads(trades_line.split(" ", 1)[1])["data"])
    path = write_gz(tmp_path / "btcusd_redelivered.gz", lines + [trades_line])
    pf = read_file(path, resolver)
    assert by_kind(pf)["trades"].rows == 64
    # The sample already carries one redelivered l2Book message.
    assert f"{1 + n_repeated} redelivered message(s) or trade(s) dropped" in pf.notes


# --- freqtrade funding -----------------------------------------------------------------


def test_freqtrade_funding_rate_file_infers_settlement_interval(tmp_path, resolver):
    dates = np.array("2024-03-01T00:00", dtype="datetime64[ns]") + np.arange(6) * np.timedelta64(8, "h")
    rates = [0.0001, -0.00005, 0.0002, 0.0, 0.00012, 0.00003]
    zeros = [0.0] * 6
    table = pa.table(
        {
            "date": pa.array(dates, TS),
            "open": rates,
            "high": zeros,
            "low": zeros,
            "close": zeros,
            "volume": zeros,
        }
    )
    path = tmp_path / "binance" / "futures" / "SOL_USDT_USDT-1h-funding_rate.feather"
    path.parent.mkdir(parents=True)
    feather.write_feather(table, path)
    (funding,) = read_file(path, resolver).series
    assert funding.kind == "funding"
    assert funding.interval_s == 28_800
    assert set(funding.table["interval_s"].to_pylist()) == {28_800}
    assert funding.instrument.key == "binanceusdm:SOL-PERP"
    assert funding.table["rate"].to_pylist() == rates
    assert funding.table["ts"].to_numpy().astype(np.int64).tolist() == dates.astype(np.int64).tolist()
    assert_lake_schema(funding)


# --- refused files ---------------------------------------------------------------------


def refused(path: Path, resolver: InstrumentResolver, *reason_parts: str, venue: str | None = None) -> str:
    with pytest.raises(IngestFileError) as info:
        read_file(path, resolver, venue)
    message = str(info.value)
    assert str(path) in message
    for part in reason_parts:
        assert part in message, message
    return message


def test_truncated_gzip_is_refused(tmp_path, resolver):
    data = USDM.read_bytes()
    path = tmp_path / "btcusdt_truncated.gz"
    path.write_bytes(data[: len(data) // 2])
    refused(path, resolver, "not a readable gzip file")


def test_truncated_hyperliquid_gzip_is_refused(tmp_path, resolver):
    data = HYPERLIQUID.read_bytes()
    path = tmp_path / "btcusd_truncated.gz"
    path.write_bytes(data[: len(data) // 2])
    refused(path, resolver, "not a readable gzip file")


def test_gzip_line_that_is_not_stamp_and_json_is_refused(tmp_path, resolver):
    lines = gz_lines(SPOT)[:5]
    path = write_gz(tmp_path / "btcusdt_bad_line.gz", lines[:2] + ["this is not a message"] + lines[2:])
    refused(path, resolver, "line 3", "<receive time ns> <JSON>")


def test_gzip_line_with_broken_json_is_refused(tmp_path, resolver):
    lines = gz_lines(SPOT)[:5]
    broken = lines[3][: len(lines[3]) // 2]  # "<stamp> {half a JSON object"
    path = write_gz(tmp_path / "btcusdt_bad_json.gz", lines[:3] + [broken] + lines[4:])
    refused(path, resolver, "line 4")


def test_feather_missing_close_column_is_refused(tmp_path, resolver):
    path = tmp_path / "binance" / "SOL_USDT-1m.feather"
    path.parent.mkdir()
    feather.write_feather(candles(MINUTES).drop_columns(["close"]), path)
    refused(path, resolver, "missing column(s) close")


def test_feather_with_non_increasing_dates_is_refused(tmp_path, resolver):
    path = tmp_path / "binance" / "SOL_USDT-1m.feather"
    path.parent.mkdir()
    dates = [MINUTES[0], MINUTES[1], MINUTES[1], MINUTES[2]]
    feather.write_feather(candles(dates), path)
    refused(path, resolver, "not strictly increasing", "row 2")


def test_feather_with_high_below_low_is_refused_naming_the_row(tmp_path, resolver):
    path = tmp_path / "binance" / "SOL_USDT-1m.feather"
    path.parent.mkdir()
    table = candles(
        MINUTES,
        open=[10.0, 11.0, 11.6, 13.0],
        high=[11.0, 12.0, 11.5, 14.0],  # row 2: high 11.5 < low 11.8
        low=[9.0, 10.0, 11.8, 12.0],
        close=[10.5, 11.5, 11.6, 13.5],
    )
    feather.write_feather(table, path)
    refused(path, resolver, "row 2", "high below")


def test_valid_feather_control_is_accepted(tmp_path, resolver):
    """The hand-made candles the refusal tests start from are themselves valid."""
    path = tmp_path / "binance" / "SOL_USDT-1m.feather"
    path.parent.mkdir()
    feather.write_feather(candles(MINUTES), path)
    (bars,) = read_file(path, resolver).series
    assert (bars.kind, bars.instrument.key, bars.rows) == ("bars_1m", "binance:SOL-USDT", 4)


def drift_csv(path: Path, edit) -> Path:
    with open(DRIFT_SOL, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:6]
    edit(header, body)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *body])
    return path


def test_drift_csv_with_empty_funding_rate_is_refused(tmp_path, resolver):
    def edit(header, body):
        body[2][header.index("fundingRate")] = ""

    path = drift_csv(tmp_path / "SOL-PERP.csv", edit)
    refused(path, resolver, "fundingRate", "empty")


def test_drift_csv_with_zero_oracle_price_is_refused(tmp_path, resolver):
    def edit(header, body):
        body[3][header.index("oraclePriceTwap")] = "0"

    path = drift_csv(tmp_path / "SOL-PERP.csv", edit)
    refused(path, resolver, "row 3", "oraclePriceTwap must be positive")


def test_drift_csv_control_is_accepted(tmp_path, resolver):
    path = drift_csv(tmp_path / "SOL-PERP.csv", lambda header, body: None)
    assert read_file(path, resolver).series[0].rows == 5


def test_freqtrade_file_in_unconfigured_venue_folder_is_refused(tmp_path, resolver):
    path = tmp_path / "notavenue" / "SOL_USDT-1m.feather"
    path.parent.mkdir()
    feather.write_feather(candles(MINUTES), path)
    refused(path, resolver, "notavenue", "--venue")
    # ...and --venue is indeed the way out.
    (bars,) = read_file(path, resolver, venue="binance").series
    assert bars.instrument.key == "binance:SOL-USDT"


@pytest.mark.parametrize(
    "name, content",
    [("README.txt", "hello\n"), ("prices.json", '{"a": 1}\n'), ("other.csv", "a,b\n1,2\n")],
)
def test_unrecognised_file_is_refused(tmp_path, resolver, name, content):
    path = tmp_path / name
    path.write_text(content)
    refused(path, resolver, "unrecognised format")


def test_missing_path_is_refused(tmp_path, resolver):
    refused(tmp_path / "nope" / "SOL_USDT-1m.feather", resolver, "no such file")


# --- sample_snapshots ------------------------------------------------------------------


def book_updates(rows) -> pa.Table:
    """rows: (ts seconds, seq, is_snapshot, is_bid, price, size)."""
    ts = [int(r[0] * 1e9) for r in rows]
    return pa.table(
        {
            "ts": pa.array(ts, TS),
            "ts_recv": pa.array(ts, TS),
            "seq": pa.array([r[1] for r in rows], pa.int64()),
            "is_snapshot": [r[2] for r in rows],
            "is_bid": [r[3] for r in rows],
            "price": [float(r[4]) for r in rows],
            "size": [float(r[5]) for r in rows],
        }
    )


HAND_BOOK = [
    # second 0: snapshot, then a delta deleting the best bid and resizing the best ask
    (0.1, 1, True, True, 100, 1),
    (0.1, 1, True, True, 99, 2),
    (0.1, 1, True, False, 101, 1),
    (0.1, 1, True, False, 102, 3),
    (0.5, 2, False, True, 100, 0),
    (0.5, 2, False, False, 101, 5),
    # second 1: two deltas, new best bid and new best ask
    (1.2, 3, False, True, 100.5, 4),
    (1.7, 4, False, False, 100.8, 2),
    # second 2: nothing; second 3: the 100.8 ask is taken away
    (3.1, 5, False, False, 100.8, 0),
]


def test_sample_snapshots_hand_made_book():
    snaps = sample_snapshots(book_updates(HAND_BOOK), interval_ns=10**9, depth=2).to_pylist()
    got = [(s["seq"], s["bid_px"], s["bid_sz"], s["ask_px"], s["ask_sz"]) for s in snaps]
    assert got == [
        (2, [99.0], [2.0], [101.0, 102.0], [5.0, 3.0]),
        (4, [100.5, 99.0], [4.0, 2.0], [100.8, 101.0], [2.0, 5.0]),
        (5, [100.5, 99.0], [4.0, 2.0], [101.0, 102.0], [5.0, 3.0]),
    ]
    # ts is that of the last message in each interval
    assert [s["ts"] for s in snaps] == [utc("1970-01-01T00:00:00.5"), utc("1970-01-01T00:00:01.7"), utc("1970-01-01T00:00:03.1")]


def test_sample_snapshots_depth_one_every_message():
    snaps = sample_snapshots(book_updates(HAND_BOOK), interval_ns=1, depth=1).to_pylist()
    tops = [(s["seq"], s["bid_px"], s["ask_px"]) for s in snaps]
    assert tops == [
        (1, [100.0], [101.0]),
        (2, [99.0], [101.0]),
        (3, [100.5], [101.0]),
        (4, [100.5], [100.8]),
        (5, [100.5], [101.0]),
    ]


def test_sample_snapshots_later_snapshot_replaces_the_book():
    rows = HAND_BOOK[:6] + [
        (1.5, 6, True, True, 90, 1),
        (1.5, 6, True, False, 95, 1),
    ]
    snaps = sample_snapshots(book_updates(rows), interval_ns=10**9, depth=5).to_pylist()
    assert [(s["seq"], s["bid_px"], s["ask_px"]) for s in snaps] == [
        (2, [99.0], [101.0, 102.0]),
        (6, [90.0], [95.0]),
    ]


def test_sample_snapshots_empty_table():
    assert sample_snapshots(book_updates([]).slice(0, 0), interval_ns=10**9, depth=5).num_rows == 0
