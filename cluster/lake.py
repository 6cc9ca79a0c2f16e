"""The Parquet lake: bulk history as a hive-partitioned dataset any Arrow tool can read.

Layout: ``<root>/kind=<kind>/venue=<venue>/instrument=<SYMBOL>/date=<YYYY-MM-DD>/part-0.parquet``
(UTC date of ``ts``). Read it with ``pyarrow.dataset.dataset(root, partitioning="hive")``,
DuckDB's ``read_parquet('<root>/**/*.parquet', hive_partitioning=true)``, Polars, Spark...

Each partition is one file, ``part-0.parquet``, rewritten atomically (written beside, then
renamed) with the old and new rows merged and de-duplicated on the kind's key, so
re-ingesting a file adds nothing and a crash mid-write leaves the previous file intact.
Writers of the same partition serialise on a lock file.

A recorder that appends all day (the MDS, ``append``) cannot rewrite a growing partition on
every flush, so it adds segment files beside it (``seg-<ns>-<id>.parquet``, each written
atomically) and ``compact`` folds them into ``part-0`` now and then. Until then, ``read``
merges a partition's files and de-duplicates them on the key (``part-0`` first, then the
segments in the order written: the first copy of a row wins, as in a merge), so what a
reader sees never depends on whether compaction has run.

Kinds and their columns (timestamps are UTC nanoseconds):

* ``bars_<tf>`` / ``mark_bars_<tf>``: ts (open time), open, high, low, close, volume
* ``funding``: ts, rate (fraction per interval, > 0 = longs pay), interval_s, oracle_price, mark_price
* ``quotes``: ts, ts_recv, seq, bid, bid_size, ask, ask_size
* ``trades``: ts, ts_recv, trade_id, price, size, side (aggressor: buy/sell)
* ``book_updates``: ts, ts_recv, seq, is_snapshot, is_bid, price, size. Rows sharing a
  ``seq`` form one venue message; a snapshot message replaces the book, a delta sets
  each level's size (0 removes it).
* ``marks``: ts, mark, oracle (a perp's mark and oracle price)
* ``swap_quotes``: ts, side, size, price, price_impact, route (an aggregator's quote for one size)
* ``pool_states``: ts, pool_id, price, base_reserve, quote_reserve, fee_rate, tvl_usd (an AMM pool)
"""

from __future__ import annotations

import fcntl
import os
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

TS = pa.timestamp("ns", tz="UTC")

_BAR_FIELDS = [
    ("ts", TS),
    ("open", pa.float64()),
    ("high", pa.float64()),
    ("low", pa.float64()),
    ("close", pa.float64()),
    ("volume", pa.float64()),
]

SCHEMAS: dict[str, tuple[pa.Schema, tuple[str, ...]]] = {
    "bars": (pa.schema(_BAR_FIELDS), ("ts",)),
    "mark_bars": (pa.schema(_BAR_FIELDS), ("ts",)),
    "funding": (
        pa.schema(
            [
                ("ts", TS),
                ("rate", pa.float64()),
                ("interval_s", pa.int32()),
                ("oracle_price", pa.float64()),
                ("mark_price", pa.float64()),
            ]
        ),
        ("ts",),
    ),
    "quotes": (
        pa.schema(
            [
                ("ts", TS),
                ("ts_recv", TS),
                ("seq", pa.int64()),
                ("bid", pa.float64()),
                ("bid_size", pa.float64()),
                ("ask", pa.float64()),
                ("ask_size", pa.float64()),
            ]
        ),
        ("ts", "seq"),
    ),
    "trades": (
        pa.schema(
            [
                ("ts", TS),
                ("ts_recv", TS),
                ("trade_id", pa.string()),
                ("price", pa.float64()),
                ("size", pa.float64()),
                ("side", pa.string()),
            ]
        ),
        ("trade_id",),
    ),
    "book_updates": (
        pa.schema(
            [
                ("ts", TS),
                ("ts_recv", TS),
                ("seq", pa.int64()),
                ("is_snapshot", pa.bool_()),
                ("is_bid", pa.bool_()),
                ("price", pa.float64()),
                ("size", pa.float64()),
            ]
        ),
        ("seq", "is_snapshot", "is_bid", "price"),
    ),
    "marks": (
        pa.schema([("ts", TS), ("mark", pa.float64()), ("oracle", pa.float64())]),
        ("ts",),
    ),
    "swap_quotes": (
        pa.schema(
            [
                ("ts", TS),
                ("side", pa.string()),
                ("size", pa.float64()),
                ("price", pa.float64()),
                ("price_impact", pa.float64()),
                ("route", pa.string()),
            ]
        ),
        ("ts", "side", "size"),
    ),
    "pool_states": (
        pa.schema(
            [
                ("ts", TS),
                ("pool_id", pa.string()),
                ("price", pa.float64()),
                ("base_reserve", pa.float64()),
                ("quote_reserve", pa.float64()),
                ("fee_rate", pa.float64()),
                ("tvl_usd", pa.float64()),
            ]
        ),
        ("ts", "pool_id"),
    ),
}

_KIND = re.compile(
    r"^(?P<base>bars|mark_bars)_(?P<tf>\d+[smhdw])$|^(?P<plain>funding|quotes|trades|book_updates|marks|swap_quotes|pool_states)$"
)
_PART = "part-0.parquet"
_SEGMENT_GLOB = "seg-*.parquet"


class LakeError(ValueError):
    pass


def schema_for(kind: str) -> tuple[pa.Schema, tuple[str, ...]]:
    match = _KIND.match(kind)
    if not match:
        raise LakeError(f"unknown lake kind {kind!r}")
    return SCHEMAS[match.group("base") or match.group("plain")]


@dataclass(frozen=True)
class PartitionSummary:
    kind: str
    venue: str
    instrument: str
    rows: int
    first_date: str
    last_date: str


class Lake:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def series_dir(self, kind: str, venue: str, instrument: str) -> Path:
        return self.root / f"kind={kind}" / f"venue={venue}" / f"instrument={instrument}"

    def partition_dir(self, kind: str, venue: str, instrument: str, date: str) -> Path:
        return self.series_dir(kind, venue, instrument) / f"date={date}"

    def write(self, kind: str, venue: str, instrument: str, table: pa.Table) -> int:
        """Merge ``table`` into the lake (and any segments into ``part-0``); returns how
        many rows were new."""
        schema, key = schema_for(kind)
        table = conform(table, schema, kind)
        if table.num_rows == 0:
            return 0
        added = 0
        for date, part in _by_date(table):
            added += self._merge_partition(self.partition_dir(kind, venue, instrument, date), part, key)
        return added

    def append(self, kind: str, venue: str, instrument: str, table: pa.Table) -> list[str]:
        """Add ``table`` as one new segment per date, without touching what is stored (cost:
        the new rows only); returns the dates written. Duplicates of stored rows are
        allowed here: reads and ``compact`` keep the first copy."""
        schema, key = schema_for(kind)
        table = conform(table, schema, kind)
        dates = []
        for date, part in _by_date(table):
            directory = self.partition_dir(kind, venue, instrument, date)
            directory.mkdir(parents=True, exist_ok=True)
            name = f"seg-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            _write_atomic(_dedupe(part, key), directory / name)
            dates.append(date)
        return dates

    def segments(self, kind: str, venue: str, instrument: str, date: str) -> int:
        return len(list(self.partition_dir(kind, venue, instrument, date).glob(_SEGMENT_GLOB)))

    def compact(self, kind: str, venue: str, instrument: str, date: str) -> int:
        """Fold a partition's segments into ``part-0``; returns how many rows were new."""
        _, key = schema_for(kind)
        directory = self.partition_dir(kind, venue, instrument, date)
        if not directory.exists():
            return 0
        return self._merge_partition(directory, None, key)

    def _merge_partition(self, directory: Path, new: pa.Table | None, key: tuple[str, ...]) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _PART
        with _locked(directory):
            segments = sorted(directory.glob(_SEGMENT_GLOB))
            old = pq.read_table(path) if path.exists() else None
            old_rows = old.num_rows if old is not None else 0
            tables = [t for t in [old, *(pq.read_table(p) for p in segments), new] if t is not None]
            if not tables:
                return 0
            schema = tables[0].schema
            merged = pa.concat_tables([t.cast(schema) for t in tables])
            merged = _dedupe(merged, key)  # the first copy wins: stored rows are never replaced
            if old is not None and merged.num_rows == old_rows and not segments:
                return 0
            merged = merged.sort_by([(k, "ascending") for k in ("ts", *[c for c in key if c != "ts"])])
            _write_atomic(merged, path)
            for segment in segments:  # folded in: a crash before this leaves copies that reads de-duplicate
                segment.unlink(missing_ok=True)
        return merged.num_rows - old_rows

    def read(
        self,
        kind: str,
        venue: str,
        instrument: str,
        start: np.datetime64 | str | None = None,
        end: np.datetime64 | str | None = None,
    ) -> pa.Table:
        """Rows of one series with ``start <= ts < end``, sorted by time."""
        schema, key = schema_for(kind)
        base = self.series_dir(kind, venue, instrument)
        if not base.exists():
            return schema.empty_table()
        expr = None
        if start is not None:
            expr = pc.field("ts") >= pa.scalar(np.datetime64(start, "ns")).cast(TS)
        if end is not None:
            cond = pc.field("ts") < pa.scalar(np.datetime64(end, "ns")).cast(TS)
            expr = cond if expr is None else expr & cond
        if not any(base.glob(f"date=*/{_SEGMENT_GLOB}")):
            dataset = ds.dataset(base, format="parquet", partitioning="hive", schema=schema.append(pa.field("date", pa.string())))
            return dataset.to_table(filter=expr, columns=schema.names).sort_by("ts")
        # Recorded segments not compacted yet: each partition's files in merge order, first copy wins.
        parts = []
        for date_dir in sorted(base.glob("date=*")):
            files = ([date_dir / _PART] if (date_dir / _PART).exists() else []) + sorted(date_dir.glob(_SEGMENT_GLOB))
            for path in files:
                parts.append(ds.dataset(path, format="parquet", schema=schema).to_table(filter=expr, columns=schema.names))
        if not parts:
            return schema.empty_table()
        return _dedupe(pa.concat_tables(parts), key).sort_by("ts")

    def bar_timeframes(self, venue: str, instrument: str, base: str = "bars") -> list[str]:
        """The timeframes (``1m``, ``1h``...) of the ``<base>_<tf>`` series the lake holds for one
        instrument, shortest first."""
        found = []
        for kind_dir in self.root.glob(f"kind={base}_*"):
            match = _KIND.match(kind_dir.name.split("=", 1)[1])
            if match and match.group("base") == base and any(
                _partition_files(d) for d in (kind_dir / f"venue={venue}" / f"instrument={instrument}").glob("date=*")
            ):
                found.append(match.group("tf"))
        return sorted(found, key=timeframe_seconds)

    def span(self, kind: str, venue: str, instrument: str) -> tuple[np.datetime64, np.datetime64] | None:
        """The first and last ``ts`` of one series (reading its first and last day only), or None."""
        dates = sorted(d for d in self.series_dir(kind, venue, instrument).glob("date=*") if _partition_files(d))
        if not dates:
            return None
        ends = []
        for directory, pick in ((dates[0], pc.min), (dates[-1], pc.max)):
            ts = pa.concat_tables(pq.read_table(p, columns=["ts"]) for p in _partition_files(directory))["ts"]
            ends.append(np.datetime64(pick(ts).cast(pa.int64()).as_py(), "ns"))
        return ends[0], ends[1]

    def summary(self) -> list[PartitionSummary]:
        """Row counts per series, from Parquet footers (no data read)."""
        out = []
        for kind_dir in sorted(self.root.glob("kind=*")):
            for venue_dir in sorted(kind_dir.glob("venue=*")):
                for inst_dir in sorted(venue_dir.glob("instrument=*")):
                    files = {d: _partition_files(d) for d in sorted(inst_dir.glob("date=*"))}
                    dates = [d.name.split("=", 1)[1] for d, paths in files.items() if paths]
                    if not dates:
                        continue
                    # Segments not yet compacted may repeat rows: an upper bound until then.
                    rows = sum(pq.ParquetFile(p).metadata.num_rows for paths in files.values() for p in paths)
                    out.append(
                        PartitionSummary(
                            kind=kind_dir.name.split("=", 1)[1],
                            venue=venue_dir.name.split("=", 1)[1],
                            instrument=inst_dir.name.split("=", 1)[1],
                            rows=rows,
                            first_date=dates[0],
                            last_date=dates[-1],
                        )
                    )
        return out


_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def timeframe_seconds(timeframe: str) -> int:
    """``1m`` -> 60, ``4h`` -> 14,400: the length of a ``bars_<timeframe>`` kind's bar."""
    return int(timeframe[:-1]) * _UNIT_S[timeframe[-1]]


def conform(table: pa.Table, schema: pa.Schema, kind: str) -> pa.Table:
    """Select and cast ``table`` to the kind's schema; a missing column is an error."""
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise LakeError(f"{kind}: missing column(s) {', '.join(missing)}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise LakeError(f"{kind}: columns do not fit the lake schema: {exc}") from None


def _by_date(table: pa.Table):
    """(UTC date, rows of that date) for the dates ``table`` covers."""
    dates = pc.strftime(table["ts"], format="%Y-%m-%d")
    for date in pc.unique(dates).to_pylist():
        yield date, table.filter(pc.equal(dates, date))


def _partition_files(directory: Path) -> list[Path]:
    main = [directory / _PART] if (directory / _PART).exists() else []
    return main + sorted(directory.glob(_SEGMENT_GLOB))


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Written beside, flushed, then renamed: a reader sees the old file or the new one."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves neither a torn file nor litter


def _dedupe(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    indexed = table.append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    first = indexed.group_by(list(key), use_threads=False).aggregate([("__row", "min")])["__row_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))  # first row of each key, in order


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
