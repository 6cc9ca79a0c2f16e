"""Latency percentiles over event batches.

Each sample is one batch: how long its oldest event took to get here, and how many events
it carried; percentiles weight each batch by its events, so they read as per-event figures
(upper bounds, since every event in a batch is at most as old as its oldest).
"""

from __future__ import annotations

from collections import deque

import numpy as np

LATENCY_SAMPLES = 200_000  # batches remembered


class LatencyRecorder:
    """Per-batch latencies, weighted by the batch's event count for percentiles."""

    def __init__(self, capacity: int = LATENCY_SAMPLES) -> None:
        self.samples: deque[tuple[int, int, int]] = deque(maxlen=capacity)  # (at, latency, events)

    def record(self, latency_ns: int, events: int, at_ns: int = 0) -> None:
        self.samples.append((at_ns, latency_ns, events))

    def percentiles(self, qs=(50, 99), since_ns: int = 0) -> dict[str, float]:
        """Event-weighted percentiles in ms, over batches recorded at or after ``since_ns``."""
        rows = [s for s in self.samples if s[0] >= since_ns] if since_ns else list(self.samples)
        if not rows:
            return {f"p{q}_ms": float("nan") for q in qs} | {"max_ms": float("nan")}
        arr = np.array(rows, dtype=np.float64)[:, 1:]
        order = np.argsort(arr[:, 0])
        lat, weight = arr[order, 0], arr[order, 1]
        cum = np.cumsum(weight) / weight.sum()
        out = {f"p{q}_ms": float(lat[min(np.searchsorted(cum, q / 100.0), len(lat) - 1)] / 1e6) for q in qs}
        out["max_ms"] = float(lat[-1] / 1e6)
        return out

    def clear(self) -> None:
        self.samples.clear()
