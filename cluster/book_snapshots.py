"""Sample a rebuilt order book into ``book_snapshots`` rows for PostgreSQL.

The lake keeps every book update; the store keeps the book as it stood at the end of
each ``interval`` of event time (the state after the last message in the interval),
``depth`` levels per side. Replaying the lake gives the full book; the store answers
"what did the book look like around t" with one indexed lookup.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster.book import OrderBook

SNAPSHOT_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("seq", pa.int64()),
        ("bid_px", pa.list_(pa.float64())),
        ("bid_sz", pa.list_(pa.float64())),
        ("ask_px", pa.list_(pa.float64())),
        ("ask_sz", pa.list_(pa.float64())),
    ]
)


def sample_snapshots(updates: pa.Table, interval_ns: int, depth: int) -> pa.Table:
    """``updates`` in the lake's ``book_updates`` layout, in arrival order."""
    if updates.num_rows == 0:
        return SNAPSHOT_SCHEMA.empty_table()
    ts = updates["ts"].to_numpy().astype(np.int64)
    seq = updates["seq"].to_numpy()
    snap = updates["is_snapshot"].to_numpy(zero_copy_only=False)
    is_bid = updates["is_bid"].to_numpy(zero_copy_only=False)
    price = updates["price"].to_numpy()
    size = updates["size"].to_numpy()
    # A message is a run of rows with the same (seq, is_snapshot).
    change = np.flatnonzero((seq[1:] != seq[:-1]) | (snap[1:] != snap[:-1])) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(seq)]))
    bucket = ts[starts] // interval_ns
    book = OrderBook()
    out: dict[str, list] = {name: [] for name in SNAPSHOT_SCHEMA.names}
    for m, (lo, hi) in enumerate(zip(starts, ends)):
        if snap[lo]:
            book.clear()
        for i in range(lo, hi):
            book.set_level(bool(is_bid[i]), float(price[i]), float(size[i]))
        last_in_bucket = m + 1 == len(starts) or bucket[m + 1] != bucket[m]
        if last_in_bucket:
            bid_px, bid_sz, ask_px, ask_sz = book.top(depth)
            out["ts"].append(int(ts[lo]))
            out["seq"].append(int(seq[lo]))
            out["bid_px"].append(bid_px)
            out["bid_sz"].append(bid_sz)
            out["ask_px"].append(ask_px)
            out["ask_sz"].append(ask_sz)
    return pa.table(out, schema=SNAPSHOT_SCHEMA)
