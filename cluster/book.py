"""An in-memory L2 order book that applies venue snapshots and deltas.

Levels are keyed by price; a size of 0 removes a level. Used to rebuild books from
recorded streams (ingest, replay) and by live feeds to keep their books.
"""

from __future__ import annotations

import heapq

import numpy as np

from cluster.domain import L2Book


class OrderBook:
    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def set_level(self, is_bid: bool, price: float, size: float) -> None:
        side = self.bids if is_bid else self.asks
        if size == 0.0:
            side.pop(price, None)
        else:
            side[price] = size

    @property
    def best_bid(self) -> float | None:
        return max(self.bids) if self.bids else None

    @property
    def best_ask(self) -> float | None:
        return min(self.asks) if self.asks else None

    def top(self, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Best ``depth`` levels per side: (bid_px, bid_sz, ask_px, ask_sz), best first."""
        bid_px = np.array(heapq.nlargest(depth, self.bids), dtype=np.float64)
        ask_px = np.array(heapq.nsmallest(depth, self.asks), dtype=np.float64)
        bid_sz = np.array([self.bids[p] for p in bid_px], dtype=np.float64)
        ask_sz = np.array([self.asks[p] for p in ask_px], dtype=np.float64)
        return bid_px, bid_sz, ask_px, ask_sz

    def is_crossed(self) -> bool:
        return bool(self.bids and self.asks and self.best_bid >= self.best_ask)

    def to_l2(self, ts_ns: int, instrument: str, depth: int) -> L2Book:
        bid_px, bid_sz, ask_px, ask_sz = self.top(depth)
        return L2Book(
            ts_ns=ts_ns,
            instrument=instrument,
            bids=tuple(zip(bid_px.tolist(), bid_sz.tolist())),
            asks=tuple(zip(ask_px.tolist(), ask_sz.tolist())),
        )
