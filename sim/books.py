"""Recorded L2 books at each bar's open, for the ``book`` impact model.

The lake keeps every book update (snapshot + diffs). Replaying them gives the book as it
stood at the end of each bar; bar ``i`` fills against the book at the end of bar
``i - 1`` (the last one known at its open), carried forward over bars without updates.
Levels are stored as offsets from that book's mid (asks above, bids below, both
positive fractions), so the walk applies to whatever price the fill uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cluster.book_snapshots import sample_snapshots
from cluster.config.loader import BotmainConfig
from cluster.lake import Lake
from sim.market import MarketArrays
from sim.settings import SimSettings
from strategies.frame import Frame

Books = dict[int, tuple[np.ndarray, np.ndarray]]  # leg -> (offsets, sizes), each (bars, 2, levels)


def bar_books(lake: Lake, venue: str, symbol: str, ts: np.ndarray, bar_ns: int, depth: int) -> tuple[np.ndarray, np.ndarray] | None:
    end = np.datetime64(int(ts[-1]) + bar_ns, "ns")
    updates = lake.read("book_updates", venue, symbol, None, end)
    if updates.num_rows == 0:
        return None
    snaps = sample_snapshots(updates, bar_ns, depth)
    snap_ts = snaps["ts"].cast("int64").to_numpy()
    n = len(ts)
    off = np.zeros((n, 2, depth))
    size = np.zeros((n, 2, depth))
    # the last snapshot taken before bar i opened
    idx = np.searchsorted(snap_ts, ts, side="left") - 1
    rows = {}
    for k in np.unique(idx[idx >= 0]):
        bid_px = np.asarray(snaps["bid_px"][int(k)].as_py())
        ask_px = np.asarray(snaps["ask_px"][int(k)].as_py())
        if not len(bid_px) or not len(ask_px):
            continue
        mid = 0.5 * (bid_px[0] + ask_px[0])
        a, b = len(ask_px), len(bid_px)
        o = np.zeros((2, depth))
        s = np.zeros((2, depth))
        o[0, :a] = ask_px / mid - 1.0
        s[0, :a] = snaps["ask_sz"][int(k)].as_py()
        o[1, :b] = 1.0 - bid_px / mid
        s[1, :b] = snaps["bid_sz"][int(k)].as_py()
        rows[int(k)] = (o, s)
    covered = 0
    for i, k in enumerate(idx):
        row = rows.get(int(k))
        if row is not None:
            off[i], size[i] = row
            covered += 1
    return (off, size) if covered else None


def load_books(config: BotmainConfig, frame: Frame, settings: SimSettings, notes: list[str] | None = None) -> Books:
    """Books for every leg whose impact model is ``book``; legs without recorded books
    fall back to the square-root model (the kernel does that per bar)."""
    lake = Lake(config.lake_root)
    bar_ns = int(frame.bar_seconds * 1e9)
    books: Books = {}
    for i, costs in enumerate(settings.legs):
        if costs.impact != "book":
            continue
        inst = config.instrument(costs.key)
        depth = config.simulation.costs.resolve(inst.venue, costs.key).book_depth
        found = bar_books(lake, inst.venue, inst.symbol, frame.ts, bar_ns, depth)
        if found is None:
            if notes is not None:
                notes.append(f"{costs.key}: no recorded book in the lake: square-root impact instead")
            continue
        books[i] = found
    return books


def market_with_books(config: BotmainConfig, frame: Frame, settings: SimSettings) -> tuple[Frame, MarketArrays]:
    """The kernel's market arrays with every recorded book the settings ask for, and the
    frame with a note for each leg that falls back to square-root impact instead."""
    notes = list(frame.notes)
    market = MarketArrays.build(frame, settings, load_books(config, frame, settings, notes))
    return dataclasses.replace(frame, notes=tuple(notes)), market
