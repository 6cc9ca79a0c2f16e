"""How a lake series becomes rows in PostgreSQL: which table, which columns, which batches.

Batch ids are derived from the source file's content hash, the table, the instrument,
the chunk and the settings that shape the rows, so re-ingesting the same file re-sends
identical batches, which the writer's ledger recognises.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from cluster.book_snapshots import sample_snapshots
from cluster.store.writer import Batch
from jobs.ingest.series import Series

BOOK_SNAPSHOT_INTERVAL_S = 1.0
BOOK_SNAPSHOT_DEPTH = 20


def store_rows(series: Series, snapshot_interval_ns: int, snapshot_depth: int) -> tuple[str, pa.Table, str] | None:
    """(table, rows, settings tag) for the store, or None for lake-only kinds."""
    kind = series.kind
    if kind.startswith("bars_"):
        return "bars", series.table, f"i{series.interval_s}"
    if kind == "funding":
        return "funding_rates", series.table, ""
    if kind == "quotes":
        return "quotes", series.table.drop_columns(["ts_recv"]), ""
    if kind == "trades":
        return "market_trades", series.table.drop_columns(["ts_recv"]), ""
    if kind == "book_updates":
        snaps = sample_snapshots(series.table, snapshot_interval_ns, snapshot_depth)
        return "book_snapshots", snaps, f"s{snapshot_interval_ns}d{snapshot_depth}"
    return None  # mark candles stay in the lake


def batches(
    series: Series,
    rows: pa.Table,
    table: str,
    tag: str,
    instrument_id: int,
    source_sha256: str,
    batch_rows: int,
) -> Iterator[Batch]:
    """``rows`` (from ``store_rows``) cut into batches of ``batch_rows``."""
    for chunk_no, start in enumerate(range(0, rows.num_rows, batch_rows)):
        chunk = rows.slice(start, batch_rows)
        columns: dict[str, object] = {"instrument_id": np.full(chunk.num_rows, instrument_id, np.int32)}
        if table == "bars":
            columns["interval_s"] = np.full(chunk.num_rows, series.interval_s, np.int32)
        for name in chunk.column_names:
            col = chunk[name]
            if pa.types.is_string(col.type):
                columns[name] = col  # the encoder reads Arrow's UTF-8 buffers directly
            elif pa.types.is_list(col.type):
                columns[name] = col.to_pylist()
            else:
                columns[name] = col.to_numpy()
        batch_id = f"{source_sha256[:24]}/{table}/{series.instrument.key}/{tag}/{batch_rows}/{chunk_no}"
        yield Batch(table, columns, batch_id)
