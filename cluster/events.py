"""Market-data events beyond the core domain objects, and the batch they travel in.

Feeds publish, and the Market Data Server relays, the domain's ``Quote``, ``Trade``,
``L2Book``, ``FundingRate`` and ``Bar`` plus the events below. Every event has ``ts_ns``
(event time, UTC ns); market events name their instrument as ``venue:SYMBOL``.

Events cross process boundaries in large numbers, so each class rebuilds itself
positionally when unpickled (``__reduce__``), about 2.5x faster than the dataclass default;
``EventBatch`` carries many of them per Ray call, so a batch costs one round trip.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

from cluster.domain import Bar, FundingRate, L2Book, Quote, Side, Trade


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """A perp's mark and oracle price (Drift: vAMM/order-book mark, Pyth/Switchboard oracle)."""

    ts_ns: int
    instrument: str
    mark: float
    oracle: float | None = None

    def __reduce__(self):
        return (MarkPrice, (self.ts_ns, self.instrument, self.mark, self.oracle))


@dataclass(frozen=True, slots=True)
class SwapQuote:
    """An aggregator's quote for one size: what ``size`` base units cost (buy) or fetch
    (sell) in quote units, per unit, all fees included; ``price_impact`` is a fraction."""

    ts_ns: int
    instrument: str
    side: Side
    size: float
    price: float
    price_impact: float
    route: str = ""

    def __reduce__(self):
        return (SwapQuote, (self.ts_ns, self.instrument, self.side, self.size, self.price, self.price_impact, self.route))


@dataclass(frozen=True, slots=True)
class PoolState:
    """An AMM pool: its price (quote per base), reserves in human units, fee and value."""

    ts_ns: int
    instrument: str
    pool_id: str
    price: float
    base_reserve: float
    quote_reserve: float
    fee_rate: float
    tvl_usd: float | None = None

    def __reduce__(self):
        return (
            PoolState,
            (self.ts_ns, self.instrument, self.pool_id, self.price, self.base_reserve, self.quote_reserve, self.fee_rate, self.tvl_usd),
        )


@dataclass(frozen=True, slots=True)
class ChainEvent:
    """Something seen on the Solana chain: a slot, a program's log, a priority-fee sample.

    ``kind`` is ``slot``, ``log`` or ``priority_fee``; ``signature`` is '' for events that
    are not transactions; ``payload`` holds the kind's details (parent/root, log lines,
    the fee in micro-lamports per compute unit...)."""

    ts_ns: int
    kind: str
    slot: int
    signature: str = ""
    program: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def __reduce__(self):
        return (ChainEvent, (self.ts_ns, self.kind, self.slot, self.signature, self.program, self.payload))


@dataclass(frozen=True, slots=True)
class NewsItem:
    """A headline from a configured feed, de-duplicated by ``item_id``, tagged with the
    instruments (symbols) it mentions and a sentiment score in [-1, 1]."""

    ts_ns: int  # published
    item_id: str
    source: str
    title: str
    url: str | None = None
    summary: str | None = None
    instruments: tuple[str, ...] = ()
    sentiment: float = 0.0

    def __reduce__(self):
        return (
            NewsItem,
            (self.ts_ns, self.item_id, self.source, self.title, self.url, self.summary, self.instruments, self.sentiment),
        )


@dataclass(frozen=True, slots=True)
class Signal:
    """A value a strategy publishes for other strategies (a regime flag, a forecast)."""

    ts_ns: int
    strategy: str
    name: str
    value: float | None = None
    instrument: str | None = None  # venue:SYMBOL, if the signal is about one
    payload: dict[str, Any] = field(default_factory=dict)

    def __reduce__(self):
        return (Signal, (self.ts_ns, self.strategy, self.name, self.value, self.instrument, self.payload))


@dataclass(frozen=True, slots=True)
class BestPrice:
    """The consolidated top of book for one symbol across every venue that is not stale:
    the highest bid and the lowest ask, each with the venue that shows it."""

    ts_ns: int
    symbol: str
    bid: float | None
    bid_size: float
    bid_venue: str | None
    ask: float | None
    ask_size: float
    ask_venue: str | None

    def __reduce__(self):
        return (
            BestPrice,
            (self.ts_ns, self.symbol, self.bid, self.bid_size, self.bid_venue, self.ask, self.ask_size, self.ask_venue),
        )


@dataclass(frozen=True, slots=True)
class VenueStatus:
    """A venue went stale (silent past its limit) or came back; execution excludes stale venues."""

    ts_ns: int
    venue: str
    stale: bool
    silent_s: float


MarketEvent = (
    Quote | Trade | L2Book | FundingRate | Bar | MarkPrice | SwapQuote | PoolState | ChainEvent | NewsItem | Signal
)

# The name subscribers use to ask for a kind of event.
KIND_OF: dict[type, str] = {
    Quote: "quote",
    Trade: "trade",
    L2Book: "book",
    FundingRate: "funding",
    Bar: "bar",
    MarkPrice: "mark",
    SwapQuote: "swap_quote",
    PoolState: "pool",
    ChainEvent: "chain",
    NewsItem: "news",
    Signal: "signal",
    BestPrice: "best",
    VenueStatus: "venue_status",
}
KINDS = frozenset(KIND_OF.values())


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events in event-time order, with the wall-clock time (ns) at which the oldest of them
    was produced by its feed: ``now - emitted_ns`` bounds every event's latency from above."""

    events: list
    emitted_ns: int
    source: str = ""
    # Where the source stands after the batch's last event, if it can resume from there
    # (a replay's position in its recording); None for live feeds.
    cursor: int | None = None

    def __len__(self) -> int:
        return len(self.events)

    def __reduce__(self):
        # Pickled here, as bytes, so that Ray's serializer (cloudpickle, which calls back into
        # Python for every object) sees one bytes object: about 3x cheaper per batch. This is
        # for Ray's own calls only; between actors' sockets batches travel as MessagePack
        # (actors/stream/codec.py).
        return (_unpack_batch, (pickle.dumps(self.events, protocol=5), self.emitted_ns, self.source, self.cursor))


def _unpack_batch(events: bytes, emitted_ns: int, source: str, cursor: int | None = None) -> EventBatch:
    return EventBatch(pickle.loads(events), emitted_ns, source, cursor)
