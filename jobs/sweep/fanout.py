"""Fan a sweep's combos out over the Ray cluster: data put once, chunks as tasks,
results collected with ``ray.wait`` in completion order.

The frame and the kernel's market arrays go into the object store once; each worker
process keeps what it fetched, keyed by the sweep's data key, so every later chunk on that
worker starts computing at once (and the strategy's indicator cache, an EMA per span, is
shared across those chunks too).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import ray

from sim.backtest import evaluate
from sim.market import MarketArrays
from sim.metrics import Metrics
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.frame import Frame

_WORKER_DATA: dict[str, tuple[Frame, MarketArrays]] = {}


@dataclass(frozen=True)
class ChunkResult:
    rows: list[tuple[int, dict, Metrics]]  # (combo id, params, metrics)


def run_chunk_local(
    frame: Frame, market: MarketArrays, settings: SimSettings, strategy: type[Strategy], combos: list[tuple[int, dict]]
) -> ChunkResult:
    params = [strategy.Params(**p) for _, p in combos]
    metrics = evaluate(strategy, params, frame, settings, market)
    return ChunkResult([(cid, p, m) for (cid, p), m in zip(combos, metrics, strict=True)])


@ray.remote(num_cpus=1)
def run_chunk(data_box: list, data_key: str, settings: SimSettings, strategy: type[Strategy], combos: list[tuple[int, dict]]) -> ChunkResult:
    cached = _WORKER_DATA.get(data_key)
    if cached is None:
        _WORKER_DATA.clear()  # one sweep's data per worker at a time
        cached = ray.get(data_box[0])
        _WORKER_DATA[data_key] = cached
    frame, market = cached
    return run_chunk_local(frame, market, settings, strategy, combos)


def fan_out(
    frame: Frame,
    market: MarketArrays,
    data_key: str,
    settings: SimSettings,
    strategy: type[Strategy],
    combos: list[tuple[int, dict]],
    chunk_size: int,
    max_retries: int = 3,
) -> Iterator[ChunkResult]:
    """Yield each chunk's results as soon as its task finishes. A task that raises is
    retried up to ``max_retries`` times; if it still fails, the error propagates (and no
    row of that chunk has been handed to the caller)."""
    data_ref = ray.put((frame, market))
    task = run_chunk.options(max_retries=max_retries, retry_exceptions=True)
    pending = [
        task.remote([data_ref], data_key, settings, strategy, combos[i : i + chunk_size])
        for i in range(0, len(combos), chunk_size)
    ]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])
