"""One interface for every venue client: the paper venue (``sim_venue``) today, Drift,
Jupiter, Raydium and the CEXs behind the same methods.

A client speaks in the order lifecycle's events (``cluster.orders``): what a call returns
is what the venue said, for the Execution Server to journal. Its errors say how sure the
answer is:

* ``VenueRejected``: the venue's definitive no. The order is REJECTED (or the cancel or
  modify refused); never retried.
* ``VenueUnavailable``: a timeout, a disconnect, an HTTP 5xx: the venue may or may not
  have acted. The order stays in flight (``OutcomeUnknown``) until a report
  (``order_status``, ``fills_since``) says what happened; never rejected on a guess.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from cluster.domain import Fill
from cluster.orders import Order, OrderEvent


class VenueError(Exception):
    """Base of what a venue client raises."""


class VenueRejected(VenueError):
    """The venue refused the request, definitively; ``reason`` is its word."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class VenueUnavailable(VenueError):
    """No answer (timeout, disconnect, 5xx): the outcome of the request is unknown."""


@dataclass(frozen=True, slots=True)
class VenueOrderReport:
    """What the venue knows of one order (for reconciliation)."""

    client_order_id: str
    venue_order_id: str | None
    status: str  # open | filled | canceled | expired | rejected
    quantity: float | None
    filled_qty: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class VenuePosition:
    instrument: str  # venue:SYMBOL
    size: float  # signed base units
    account: str  # whose position (a strategy's account on the venue)


@dataclass(frozen=True, slots=True)
class VenueBalance:
    venue: str
    account: str
    equity: float  # quote units, marked
    cash: float


class VenueClient(ABC):
    """The calls the Execution Server makes; ``venues`` are the venue names it serves."""

    venues: frozenset[str]

    @abstractmethod
    async def submit(self, order: Order) -> list[OrderEvent]:
        """Place ``order``; the venue's answer as events (an ack, fills that came with it)."""

    @abstractmethod
    async def cancel(self, order: Order) -> list[OrderEvent]:
        """Ask to cancel ``order``; the venue's answer as events."""

    @abstractmethod
    async def modify(self, order: Order, quantity: float | None, limit_price: float | None) -> list[OrderEvent]:
        """Ask to amend a working limit order."""

    @abstractmethod
    async def order_status(self, client_order_id: str) -> VenueOrderReport | None:
        """The venue's view of one order; None when it never saw it."""

    @abstractmethod
    async def fills_since(self, seq: int) -> tuple[list[Fill], int]:
        """The fills after cursor ``seq`` (0: all), oldest first, and the new cursor."""

    @abstractmethod
    async def positions(self) -> list[VenuePosition]:
        """Positions as the venue holds them."""

    @abstractmethod
    async def balances(self) -> list[VenueBalance]:
        """Balances as the venue holds them."""
