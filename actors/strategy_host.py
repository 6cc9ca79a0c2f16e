"""A strategy actor's market-data side: subscribe to the MDS, receive its batches, call the
strategy's event hooks, publish the strategy's signals.

``StrategyHost`` (the named actor ``strategy:<name>``) hosts one strategy instance. It
receives the MDS's batches over a batch link (actors/stream/: it runs the receiver, allows
the MDS's key and subscribes with its address); ``on_market_data`` takes the same batches by
actor call. When the MDS announces a restart (``mds_restarted``) it subscribes again. For
every batch it records how long the batch took from its feed to here (``now -
emitted_ns``, the production time of the batch's oldest event, so an upper bound for each
event in it), counts events by kind, keeps the latest consolidated best price per symbol
and the venues currently stale, and hands quotes, funding and signals to the strategy's
hooks. The order intents those hooks return are kept for inspection; routing them through
risk checks to execution is the execution server's job, not this actor's.
"""

from __future__ import annotations

import gc
import time
from collections import deque

import ray

from actors import names
from actors.stream import BatchReceiver, Origin, StreamLimits
from cluster.domain import FundingRate, Quote
from actors.latency import LatencyRecorder
from cluster.events import KIND_OF, BestPrice, EventBatch, Signal, VenueStatus
from strategies.registry import strategy_class

@ray.remote
class StrategyHost:
    def __init__(
        self,
        name: str,
        strategy: str,
        params: dict | None = None,
        kinds: list[str] | None = None,
        symbols: list[str] | None = None,
        signals: list[str] | None = None,
        mds_name: str = names.MDS,
    ) -> None:
        cls = strategy_class(strategy)
        self.name = name
        self.strategy = cls(cls.Params(**(params or {})))
        self.subscription = {"kinds": kinds, "symbols": symbols, "signals": signals}
        self.mds_name = mds_name
        self.mds = ray.get_actor(mds_name, namespace=names.NAMESPACE)
        self.limits = StreamLimits()
        self.subscriptions = 0
        self.latency = LatencyRecorder()
        self.counts: dict[str, int] = {}
        self.events = 0
        self.batches = 0
        self.first_recv_ns = 0
        self.first_emitted_ns = 0
        self.last_recv_ns = 0
        self.last_event_ts_ns = 0
        self.out_of_order = 0
        self.best: dict[str, BestPrice] = {}
        self.stale_venues: set[str] = set()
        self.signals_seen: deque[Signal] = deque(maxlen=1000)
        self.intents: deque = deque(maxlen=1000)
        self.intents_total = 0
        self.receiver: BatchReceiver | None = None

    async def start(self) -> dict:
        if self.receiver is None:
            self.receiver = BatchReceiver(self._on_batch, f"strategy:{self.name}", self.limits)
            await self.receiver.start()
        snapshot = await self._subscribe()
        gc.freeze()  # see actors/__init__.py: keep startup objects out of the collector's walks
        return {"subscribed": self.name, "best": len(snapshot)}

    async def _subscribe(self) -> dict:
        self.mds = ray.get_actor(self.mds_name, namespace=names.NAMESPACE)  # a restarted MDS: looked up again
        self.receiver.allow(await self.mds.stream_key.remote(), "mds")
        me = ray.get_runtime_context().current_actor
        snapshot = await self.mds.subscribe.remote(self.name, me, stream=self.receiver.address, **self.subscription)
        self.best.update(snapshot)
        self.subscriptions += 1
        return snapshot

    async def mds_restarted(self) -> None:
        """The MDS came back (a new process, a new key): subscribe to it again."""
        if self.receiver is not None:
            await self._subscribe()

    async def on_market_data(self, batch: EventBatch) -> None:
        self._on_batch(batch, None)

    def _on_batch(self, batch: EventBatch, origin: Origin | None) -> None:
        now = time.time_ns()
        if not self.first_recv_ns:
            self.first_recv_ns = now
            self.first_emitted_ns = batch.emitted_ns
        self.last_recv_ns = now
        self.latency.record(now - batch.emitted_ns, len(batch.events), now)
        self.batches += 1
        self.events += len(batch.events)
        counts = self.counts
        strategy = self.strategy
        for e in batch.events:
            t = type(e)
            kind = KIND_OF[t]
            counts[kind] = counts.get(kind, 0) + 1
            if t is BestPrice:
                self.best[e.symbol] = e
                continue
            if t is VenueStatus:
                (self.stale_venues.add if e.stale else self.stale_venues.discard)(e.venue)
                continue
            if t is Quote:
                if e.ts_ns < self.last_event_ts_ns:
                    self.out_of_order += 1
                self.last_event_ts_ns = e.ts_ns
                intents = strategy.on_quote(e)
            elif t is FundingRate:
                intents = strategy.on_funding(e)
            elif t is Signal:
                self.signals_seen.append(e)
                intents = strategy.on_signal(e.name, e.value, e.ts_ns)
            else:
                continue
            if intents:
                self.intents.extend(intents)
                self.intents_total += len(intents)

    async def publish_signal(self, name: str, value: float | None = None, instrument: str | None = None, payload: dict | None = None) -> None:
        signal = Signal(time.time_ns(), self.name, name, value, instrument, payload or {})
        await self.mds.publish_signal.remote(signal)

    async def stats(self) -> dict:
        span = (self.last_recv_ns - self.first_recv_ns) / 1e9 if self.events else 0.0
        return {
            "name": self.name,
            "events": self.events,
            "batches": self.batches,
            "by_kind": dict(self.counts),
            "first_recv_ns": self.first_recv_ns,
            "first_emitted_ns": self.first_emitted_ns,
            "last_recv_ns": self.last_recv_ns,
            "span_s": span,
            "latency": self.latency.percentiles(),
            "quotes_out_of_order": self.out_of_order,
            "stale_venues": sorted(self.stale_venues),
            "intents_total": self.intents_total,
            "subscriptions": self.subscriptions,
            "stream_rejected": dict(self.receiver.rejected) if self.receiver else {},
        }

    async def latency_since(self, since_ns: int) -> dict[str, float]:
        """Latency percentiles over the batches received at or after ``since_ns`` (wall ns):
        steady state, without the first calls' warm-up."""
        return self.latency.percentiles(since_ns=since_ns)

    async def best_prices(self) -> dict:
        return dict(self.best)

    async def signals(self) -> list:
        return list(self.signals_seen)

    async def reset_stats(self) -> None:
        self.latency.clear()
        self.counts.clear()
        self.events = self.batches = 0
        self.first_recv_ns = self.first_emitted_ns = self.last_recv_ns = 0
        self.last_event_ts_ns = 0
        self.out_of_order = 0
