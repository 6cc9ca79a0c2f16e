"""The consolidated view: per symbol, each venue's top of book and the best across venues.

A venue's top comes from its quotes and from the top level of its books, whichever is
newer; a venue that goes stale is dropped until it quotes again. The best bid is the highest bid of any venue that is not stale (ties go to the
larger size, then to the venue seen first), the best ask the lowest ask likewise. A best
price is recomputed only for the symbol an event touched, over that symbol's few venues.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.domain import FundingRate, L2Book, Quote
from cluster.events import BestPrice, MarkPrice


@dataclass(slots=True)
class VenueTop:
    ts_ns: int
    bid: float | None
    bid_size: float
    ask: float | None
    ask_size: float


class ConsolidatedView:
    def __init__(self) -> None:
        self.tops: dict[str, dict[str, VenueTop]] = {}  # symbol -> venue -> top
        self.books: dict[str, L2Book] = {}  # instrument key -> latest book
        self.funding: dict[str, FundingRate] = {}
        self.marks: dict[str, MarkPrice] = {}
        self.best: dict[str, BestPrice] = {}
        self._stale: set[str] = set()

    def set_stale(self, venue: str, stale: bool, ts_ns: int) -> list[BestPrice]:
        """Mark a venue (in)eligible at ``ts_ns``; returns the best prices that changed.

        A venue going stale also forgets its tops: they are older than its silence, so when
        it speaks again it re-enters the best price with fresh quotes only."""
        if stale == (venue in self._stale):
            return []
        if not stale:
            self._stale.discard(venue)
            return []
        self._stale.add(venue)
        changed = []
        for symbol, venues in self.tops.items():
            if venues.pop(venue, None) is not None:
                update = self._recompute(symbol, ts_ns)
                if update is not None:
                    changed.append(update)
        return changed

    def on_quote(self, quote: Quote) -> BestPrice | None:
        venue, _, symbol = quote.instrument.partition(":")
        return self._set_top(symbol, venue, VenueTop(quote.ts_ns, quote.bid, quote.bid_size, quote.ask, quote.ask_size))

    def on_book(self, book: L2Book) -> BestPrice | None:
        self.books[book.instrument] = book
        venue, _, symbol = book.instrument.partition(":")
        bid, bid_size = book.bids[0] if book.bids else (None, 0.0)
        ask, ask_size = book.asks[0] if book.asks else (None, 0.0)
        return self._set_top(symbol, venue, VenueTop(book.ts_ns, bid, bid_size, ask, ask_size))

    def on_funding(self, funding: FundingRate) -> None:
        self.funding[funding.instrument] = funding

    def on_mark(self, mark: MarkPrice) -> None:
        self.marks[mark.instrument] = mark

    def _set_top(self, symbol: str, venue: str, top: VenueTop) -> BestPrice | None:
        venues = self.tops.get(symbol)
        if venues is None:
            venues = self.tops[symbol] = {}
        current = venues.get(venue)
        if current is not None and current.ts_ns > top.ts_ns:
            return None  # an older top (a book sampled before the latest quote) changes nothing
        venues[venue] = top
        return self._recompute(symbol, top.ts_ns)

    def _recompute(self, symbol: str, ts_ns: int) -> BestPrice | None:
        bid = ask = None
        bid_size = ask_size = 0.0
        bid_venue = ask_venue = None
        for venue, top in self.tops[symbol].items():
            if venue in self._stale:
                continue
            if top.bid is not None and (bid is None or top.bid > bid or (top.bid == bid and top.bid_size > bid_size)):
                bid, bid_size, bid_venue = top.bid, top.bid_size, venue
            if top.ask is not None and (ask is None or top.ask < ask or (top.ask == ask and top.ask_size > ask_size)):
                ask, ask_size, ask_venue = top.ask, top.ask_size, venue
        previous = self.best.get(symbol)
        if previous is not None and (
            previous.bid == bid
            and previous.ask == ask
            and previous.bid_size == bid_size
            and previous.ask_size == ask_size
            and previous.bid_venue == bid_venue
            and previous.ask_venue == ask_venue
        ):
            return None
        best = BestPrice(ts_ns, symbol, bid, bid_size, bid_venue, ask, ask_size, ask_venue)
        self.best[symbol] = best
        return best
