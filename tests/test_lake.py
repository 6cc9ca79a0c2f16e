"""The Parquet lake: layout, idempotent merges, reads, and refusing bad tables without
touching what is stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import cluster.lake as lake_module
from cluster.config import load_config
from cluster.lake import Lake, LakeError, PartitionSummary, schema_for
from jobs.ingest.formats import read_file
from jobs.ingest.naming import InstrumentResolver
from cluster.book_snapshots import sample_snapshots

from tests.conftest import SAMPLE

TS = pa.timestamp("ns", tz="UTC")
PART = "part-0.parquet"


def stamps(*texts: str) -> pa.Array:
    return pa.array(np.array(texts, dtype="datetime64[ns]"), TS)


def bars(*texts: str, base: float = 100.0) -> pa.Table:
    n = len(texts)
    opens = [base + i for i in range(n)]
    return pa.table(
        {
            "ts": stamps(*texts),
            "open": opens,
            "high": [o + 1 for o in opens],
            "low": [o - 1 for o in opens],
            "close": [o + 0.5 for o in opens],
            "volume": [10.0 * (i + 1) for i in range(n)],
        }
    )


def book(rows) -> pa.Table:
    """rows: (ts, seq, is_snapshot, is_bid, price, size)."""
    ts = stamps(*[r[0] for r in rows])
    return pa.table(
        {
            "ts": ts,
            "ts_recv": ts,
            "seq": pa.array([r[1] for r in rows], pa.int64()),
            "is_snapshot": [r[2] for r in rows],
            "is_bid": [r[3] for r in rows],
            "price": [float(r[4]) for r in rows],
            "size": [float(r[5]) for r in rows],
        }
    )


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


MINUTES = ("2024-01-01T00:00", "2024-01-01T00:01", "2024-01-01T00:02")


def test_write_then_read_returns_identical_values(lake):
    table = bars(*MINUTES)
    assert lake.write("bars_1m", "binance", "BTC-USDT", table) == 3
    back = lake.read("bars_1m", "binance", "BTC-USDT")
    assert back.schema == schema_for("bars_1m")[0]
    assert back.equals(table)


def test_layout_is_hive_partitioned_by_utc_date(lake):
    table = bars("2024-01-01T23:58", "2024-01-01T23:59", "2024-01-02T00:00", "2024-01-02T00:01", "2024-01-02T00:02")
    lake.write("bars_1m", "binance", "BTC-USDT", table)
    parts = sorted(str(p.relative_to(lake.root)) for p in lake.root.rglob(PART))
    base = "kind=bars_1m/venue=binance/instrument=BTC-USDT"
    assert parts == [f"{base}/date=2024-01-01/{PART}", f"{base}/date=2024-01-02/{PART}"]
    assert pq.read_table(lake.root / parts[0]).num_rows == 2
    assert pq.read_table(lake.root / parts[1]).num_rows == 3


def test_partition_date_is_the_utc_date_whatever_the_input_timezone(lake):
    # 20:30 in New York on 1 Jan is 01:30 UTC on 2 Jan.
    table = bars("2024-01-02T01:30")
    table = table.set_column(0, "ts", table["ts"].cast(pa.timestamp("ns", tz="America/New_York")))
    lake.write("bars_1m", "binance", "BTC-USDT", table)
    assert [p.parent.name for p in lake.root.rglob(PART)] == ["date=2024-01-02"]
    assert lake.read("bars_1m", "binance", "BTC-USDT")["ts"].to_pylist() == stamps("2024-01-02T01:30").to_pylist()


def test_writing_the_same_table_twice_adds_nothing(lake):
    table = bars("2024-01-01T23:59", "2024-01-02T00:00", "2024-01-02T00:01")
    assert lake.write("bars_1m", "binance", "BTC-USDT", table) == 3
    before = files(lake.root)
    assert lake.write("bars_1m", "binance", "BTC-USDT", table) == 0
    assert lake.read("bars_1m", "binance", "BTC-USDT").num_rows == 3
    assert files(lake.root) == before  # not even rewritten


def test_empty_table_adds_nothing(lake):
    assert lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES).slice(0, 0)) == 0
    assert lake.read("bars_1m", "binance", "BTC-USDT").num_rows == 0


def test_overlapping_write_adds_only_new_rows_and_first_stored_wins(lake):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES, base=100.0))
    overlap = bars("2024-01-01T00:01", "2024-01-01T00:02", "2024-01-01T00:03", base=200.0)
    assert lake.write("bars_1m", "binance", "BTC-USDT", overlap) == 1
    back = lake.read("bars_1m", "binance", "BTC-USDT")
    assert back["ts"].to_pylist() == stamps(*MINUTES, "2024-01-01T00:03").to_pylist()
    assert back["open"].to_pylist() == [100.0, 101.0, 102.0, 202.0]


def test_duplicate_rows_within_one_table_are_collapsed_keeping_the_first(lake):
    table = bars("2024-01-01T00:00", "2024-01-01T00:01", "2024-01-01T00:00", "2024-01-01T00:02")
    assert lake.write("bars_1m", "binance", "BTC-USDT", table) == 3
    back = lake.read("bars_1m", "binance", "BTC-USDT")
    assert back["ts"].to_pylist() == stamps(*MINUTES).to_pylist()
    assert back["open"].to_pylist() == [100.0, 101.0, 103.0]


def test_new_rows_in_a_new_partition_are_added(lake):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES))
    assert lake.write("bars_1m", "binance", "BTC-USDT", bars("2024-01-02T00:00", base=300.0)) == 1
    assert lake.read("bars_1m", "binance", "BTC-USDT")["open"].to_pylist() == [100.0, 101.0, 102.0, 300.0]


def test_duplicates_only_write_keeps_the_stored_values(lake):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES, base=100.0))
    assert lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES, base=500.0)) == 0
    assert lake.read("bars_1m", "binance", "BTC-USDT")["open"].to_pylist() == [100.0, 101.0, 102.0]


def test_read_filters_start_inclusive_end_exclusive(lake):
    stored = bars("2024-01-01T23:58", "2024-01-01T23:59", "2024-01-02T00:00", "2024-01-02T00:01")
    lake.write("bars_1m", "binance", "BTC-USDT", stored)
    read = lambda **kw: lake.read("bars_1m", "binance", "BTC-USDT", **kw)["ts"].to_pylist()  # noqa: E731
    after = stamps("2024-01-01T23:59", "2024-01-02T00:00", "2024-01-02T00:01").to_pylist()
    assert read(start="2024-01-01T23:59") == after
    assert read(end="2024-01-02T00:00") == stamps("2024-01-01T23:58", "2024-01-01T23:59").to_pylist()
    assert read(start=np.datetime64("2024-01-01T23:59"), end=np.datetime64("2024-01-02T00:01")) == stamps(
        "2024-01-01T23:59", "2024-01-02T00:00"
    ).to_pylist()


def test_read_of_an_unknown_series_is_empty(lake):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES))
    empty = lake.read("bars_1m", "binance", "ETH-USDT")
    assert empty.num_rows == 0 and empty.schema == schema_for("bars_1m")[0]


def test_whole_root_reads_as_one_hive_dataset(lake):
    lake.write("bars_1m", "binance", "BTC-USDT", bars("2024-01-01T23:59", "2024-01-02T00:00"))
    lake.write("bars_1m", "binanceusdm", "BTC-PERP", bars(*MINUTES))
    lake.write("bars_5m", "binance", "BTC-USDT", bars("2024-01-03T00:00"))
    dataset = ds.dataset(lake.root, format="parquet", partitioning="hive")
    for name in ("kind", "venue", "instrument", "date"):
        assert name in dataset.schema.names
    table = dataset.to_table()
    assert table.num_rows == 6
    keys = sorted(zip(*(table[c].to_pylist() for c in ("kind", "venue", "instrument", "date"))))
    assert keys == sorted(
        [("bars_1m", "binance", "BTC-USDT", "2024-01-01"), ("bars_1m", "binance", "BTC-USDT", "2024-01-02")]
        + [("bars_1m", "binanceusdm", "BTC-PERP", "2024-01-01")] * 3
        + [("bars_5m", "binance", "BTC-USDT", "2024-01-03")]
    )
    perp = dataset.to_table(filter=(ds.field("venue") == "binanceusdm"))
    assert perp["open"].to_pylist() == [100.0, 101.0, 102.0]


def test_summary_counts_rows_per_series(lake):
    lake.write("bars_1m", "binance", "BTC-USDT", bars("2024-01-01T23:59", "2024-01-02T00:00", "2024-01-03T00:00"))
    lake.write("bars_1m", "binanceusdm", "BTC-PERP", bars(*MINUTES))
    assert lake.summary() == [
        PartitionSummary("bars_1m", "binance", "BTC-USDT", 3, "2024-01-01", "2024-01-03"),
        PartitionSummary("bars_1m", "binanceusdm", "BTC-PERP", 3, "2024-01-01", "2024-01-01"),
    ]


def test_summary_of_an_empty_lake(lake):
    lake.root.mkdir()
    assert lake.summary() == []


@pytest.mark.parametrize(
    "kind, table",
    [
        ("bars_1m", bars(*MINUTES).drop_columns(["volume"])),
        ("candles", bars(*MINUTES)),
        ("bars_1x", bars(*MINUTES)),
        ("bars_1m", bars(*MINUTES).set_column(1, "open", pa.array(["a", "b", "c"]))),
    ],
    ids=["missing-column", "unknown-kind", "bad-timeframe", "uncastable-column"],
)
def test_bad_table_raises_and_leaves_files_untouched(lake, kind, table):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES))
    before = files(lake.root)
    with pytest.raises(LakeError):
        lake.write(kind, "binance", "BTC-USDT", table)
    assert files(lake.root) == before


def test_missing_column_error_names_the_column(lake):
    with pytest.raises(LakeError, match="missing column.*volume"):
        lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES).drop_columns(["volume"]))


def test_crash_during_write_leaves_previous_file_intact(lake, monkeypatch):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES))
    part = lake.partition_dir("bars_1m", "binance", "BTC-USDT", "2024-01-01") / PART
    before = part.read_bytes()

    def crash(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(lake_module.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.write("bars_1m", "binance", "BTC-USDT", bars("2024-01-01T00:03", base=300.0))
    monkeypatch.undo()

    assert part.read_bytes() == before
    assert not list(part.parent.glob(".*.tmp"))  # the failed write cleaned up its partial temp file
    assert lake.read("bars_1m", "binance", "BTC-USDT")["open"].to_pylist() == [100.0, 101.0, 102.0]
    assert ds.dataset(lake.root, format="parquet", partitioning="hive").to_table().num_rows == 3
    # and the partition is writable again (the lock was released)
    assert lake.write("bars_1m", "binance", "BTC-USDT", bars("2024-01-02T00:00", base=300.0)) == 1


def test_book_updates_key_is_seq_snapshot_side_price(lake):
    t = "2024-01-01T00:00"
    stored = [(t, 1, True, True, 100, 1), (t, 1, True, False, 101, 1), (t, 2, False, True, 100, 3)]
    assert lake.write("book_updates", "binance", "BTC-USDT", book(stored)) == 3
    # Same key, other size (and other ts): a duplicate; the stored size stays.
    assert lake.write("book_updates", "binance", "BTC-USDT", book([("2024-01-01T00:00:01", 2, False, True, 100, 9)])) == 0
    # Each differs from a stored row in exactly one key column: all new.
    fresh = [
        (t, 3, False, True, 100, 4),  # seq
        (t, 2, True, True, 100, 5),  # is_snapshot
        (t, 2, False, False, 100, 6),  # is_bid
        (t, 2, False, True, 100.5, 7),  # price
    ]
    assert lake.write("book_updates", "binance", "BTC-USDT", book(fresh)) == 4
    back = lake.read("book_updates", "binance", "BTC-USDT").to_pylist()
    assert len(back) == 7
    assert {(r["seq"], r["is_snapshot"], r["is_bid"], r["price"]): r["size"] for r in back} == {
        (1, True, True, 100.0): 1.0,
        (1, True, False, 101.0): 1.0,
        (2, False, True, 100.0): 3.0,
        (3, False, True, 100.0): 4.0,
        (2, True, True, 100.0): 5.0,
        (2, False, False, 100.0): 6.0,
        (2, False, True, 100.5): 7.0,
    }


def test_book_updates_mixed_duplicate_and_new_rows(lake):
    t = "2024-01-01T00:00"
    lake.write("book_updates", "binance", "BTC-USDT", book([(t, 1, True, True, 100, 1), (t, 1, True, False, 101, 1)]))
    mixed = [(t, 1, True, True, 100, 9), (t, 2, False, True, 100, 0)]
    assert lake.write("book_updates", "binance", "BTC-USDT", book(mixed)) == 1
    back = lake.read("book_updates", "binance", "BTC-USDT").to_pylist()
    assert sorted((r["seq"], r["is_bid"], r["price"], r["size"]) for r in back) == [
        (1, False, 101.0, 1.0),
        (1, True, 100.0, 1.0),
        (2, True, 100.0, 0.0),
    ]


def test_real_book_updates_replay_the_same_book_from_the_lake(lake):
    """Spot recording -> lake -> read back: the rebuilt book is the same at every message."""
    pf = read_file(SAMPLE / "hftbacktest" / "spot" / "btcusdt_20240808.gz", InstrumentResolver(load_config()))
    (updates,) = [s for s in pf.series if s.kind == "book_updates"]
    inst = updates.instrument
    assert lake.write("book_updates", inst.venue, inst.symbol, updates.table) == updates.rows
    back = lake.read("book_updates", inst.venue, inst.symbol)
    assert back.num_rows == updates.rows
    expected = sample_snapshots(updates.table, interval_ns=1, depth=5)
    assert sample_snapshots(back, interval_ns=1, depth=5).equals(expected)
    assert lake.write("book_updates", inst.venue, inst.symbol, updates.table) == 0


# --- appended segments (what the MDS records) ----------------------------------------------


def test_appended_segments_read_like_merged_rows_before_and_after_compaction(lake):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES))
    stored = lake.read("bars_1m", "binance", "BTC-USDT")
    # A recorder appends an overlapping slice (two rows already stored, with other values)
    # and a new one, in two flushes; nothing stored is rewritten.
    part = lake.partition_dir("bars_1m", "binance", "BTC-USDT", "2024-01-01") / PART
    before = part.read_bytes()
    assert lake.append("bars_1m", "binance", "BTC-USDT", bars("2024-01-01T00:01", "2024-01-01T00:02", base=500.0)) == ["2024-01-01"]
    assert lake.append("bars_1m", "binance", "BTC-USDT", bars("2024-01-01T00:03", "2024-01-02T00:00", base=200.0)) == [
        "2024-01-01",
        "2024-01-02",
    ]
    assert part.read_bytes() == before and lake.segments("bars_1m", "binance", "BTC-USDT", "2024-01-01") == 2
    seen = lake.read("bars_1m", "binance", "BTC-USDT")
    assert seen["open"].to_pylist() == [100.0, 101.0, 102.0, 200.0, 201.0]  # the first copy wins
    assert seen.slice(0, 3) == stored
    window = lake.read("bars_1m", "binance", "BTC-USDT", "2024-01-01T00:02", "2024-01-01T00:04")
    assert window["open"].to_pylist() == [102.0, 200.0]
    # Compaction folds the segments into part-0 and reads the same.
    assert lake.compact("bars_1m", "binance", "BTC-USDT", "2024-01-01") == 1
    assert lake.segments("bars_1m", "binance", "BTC-USDT", "2024-01-01") == 0
    assert lake.read("bars_1m", "binance", "BTC-USDT") == seen
    assert [(p.kind, p.rows, p.first_date, p.last_date) for p in lake.summary()] == [("bars_1m", 5, "2024-01-01", "2024-01-02")]


def test_a_merge_folds_waiting_segments_in_and_duplicates_across_them_collapse(lake):
    lake.append("quotes", "drift", "SOL-PERP", quotes([1, 2], seq=[1, 1]))
    lake.append("quotes", "drift", "SOL-PERP", quotes([2, 3], seq=[1, 1], bid=9.0))  # 2 re-sent
    assert lake.write("quotes", "drift", "SOL-PERP", quotes([3, 4], seq=[1, 1], bid=7.0)) == 4
    date_dir = lake.partition_dir("quotes", "drift", "SOL-PERP", "2024-01-01")
    assert sorted(p.name for p in date_dir.glob("*.parquet")) == [PART]
    back = lake.read("quotes", "drift", "SOL-PERP")
    assert back["bid"].to_pylist() == [1.0, 1.0, 9.0, 7.0]


def test_a_crash_while_appending_leaves_no_segment_and_the_stored_rows(lake, monkeypatch):
    lake.write("bars_1m", "binance", "BTC-USDT", bars(*MINUTES))

    def crash(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(lake_module.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.append("bars_1m", "binance", "BTC-USDT", bars("2024-01-01T00:05"))
    monkeypatch.undo()
    directory = lake.partition_dir("bars_1m", "binance", "BTC-USDT", "2024-01-01")
    assert sorted(p.name for p in directory.iterdir() if p.name != ".lock") == [PART]
    assert lake.read("bars_1m", "binance", "BTC-USDT")["open"].to_pylist() == [100.0, 101.0, 102.0]


def quotes(seconds, seq, bid=1.0) -> pa.Table:
    ts = pa.array(np.datetime64("2024-01-01T00:00:00", "ns") + np.array(seconds, dtype="timedelta64[s]"), TS)
    n = len(seconds)
    return pa.table(
        {
            "ts": ts,
            "ts_recv": pa.nulls(n, TS),
            "seq": pa.array(seq, pa.int64()),
            "bid": [bid] * n,
            "bid_size": [1.0] * n,
            "ask": [bid + 1] * n,
            "ask_size": [1.0] * n,
        }
    )


@pytest.mark.parametrize("kind", ["marks", "swap_quotes", "pool_states"])
def test_the_recorded_market_state_kinds_have_schemas(kind, lake):
    schema, key = schema_for(kind)
    assert key[0] == "ts" and "ts" in schema.names
