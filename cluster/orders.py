"""An order's lifecycle: its states, the events that move it, and client order ids.

The states are the field's usual set (NautilusTrader's, FIX's OrdStatus): INITIALIZED
(made, not sent), DENIED (refused before any venue saw it, e.g. by risk), SUBMITTED
(sent, no answer yet), ACCEPTED (acknowledged and working), PARTIALLY_FILLED, FILLED,
CANCELED, EXPIRED, REJECTED (only on a definitive venue answer), and PENDING_CANCEL /
PENDING_UPDATE (a cancel or a modify sent and not yet answered).

``apply(order, event)`` is the whole machine: it returns the order the event makes, the
same object when the event changes nothing (a re-delivered fill, a repeated terminal
report, a stale answer), and raises ``OrderEventRefused`` naming the order, its state and
the event when the event is impossible; orders are frozen, so a refusal leaves no trace.

The real world's edges, and what they do here:

* a fill for a SUBMITTED order before its ack: the fill is the ack (-> PARTIALLY_FILLED or
  FILLED); the ack that arrives afterwards records the venue's order id and nothing else;
* a fill while a cancel or a modify is pending: applied, and the order stays PENDING_*
  unless the fill completes it (-> FILLED). The cancel is still on its way and its answer
  still comes; FIX's OrdStatus ranks "pending cancel" above "partially filled" for the
  same reason. (NautilusTrader moves to PARTIALLY_FILLED here and forgets the request.)
* a fill reported after CANCELED or EXPIRED: it traded before the cancel took effect, money
  moved, so it is applied. The order stays CANCELED (EXPIRED) with the larger filled_qty,
  since the rest will never trade, unless the fill completes it: then it is FILLED. These
  are the only ways out of a terminal state;
* a cancel rejected: back to the working state (SUBMITTED, ACCEPTED or PARTIALLY_FILLED,
  from what the venue has told us so far); a cancel rejected for an order that meanwhile
  filled, or a second answer, changes nothing;
* a modify: PENDING_UPDATE, then Updated (new quantity and/or limit price, back to the
  working state) or UpdateRejected (back, unchanged);
* an unknown outcome (timeout, disconnect, HTTP 5xx on submit, cancel or modify) never
  rejects: the order stays SUBMITTED / PENDING_CANCEL / PENDING_UPDATE with
  ``unknown_since_ns`` and the reason set, until a venue report (a reconciliation) says
  what happened. The flag stays until the state changes on a venue's word; our own
  requests (a retried submit or cancel) carry it along.

Target orders (``target`` set: the exposure the strategy wants; the venue client sizes
them at the venue) start with ``quantity`` None. They learn it from the ack
(``Accepted.quantity``, the size the client placed) or from a fill's ``leaves_qty``
(filled so far + what the venue says is left); a fill that leaves 0 makes them FILLED.
Until then they cannot overfill. A quantity order's ``leaves_qty`` is not used: a venue
that stops one short of its quantity says so with a Canceled or Expired.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, fields, replace
from typing import Union

from cluster.domain import Fill, OrderIntent, OrderType, Side, TimeInForce


class OrderState(str, enum.Enum):
    INITIALIZED = "initialized"
    DENIED = "denied"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELED = "canceled"
    EXPIRED = "expired"
    PENDING_UPDATE = "pending_update"
    PENDING_CANCEL = "pending_cancel"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {OrderState.DENIED, OrderState.REJECTED, OrderState.CANCELED, OrderState.EXPIRED, OrderState.FILLED}
)
OPEN_STATES = frozenset(OrderState) - TERMINAL_STATES  # INITIALIZED included: made, not yet sent or denied
_SENT = frozenset(OrderState) - {OrderState.INITIALIZED, OrderState.DENIED}
_WORKING = frozenset({OrderState.SUBMITTED, OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED})
_PENDING = frozenset({OrderState.PENDING_CANCEL, OrderState.PENDING_UPDATE})
_DONE_AT_VENUE = frozenset({OrderState.CANCELED, OrderState.EXPIRED, OrderState.FILLED})


class Route(str, enum.Enum):
    """How the order's venue was chosen."""

    FIXED = "fixed"  # the strategy's configuration names it
    SELECTOR = "selector"  # the venue selector decided
    RULE_FALLBACK = "rule_fallback"  # the selector was unavailable: the whitepaper's rule


class VenueRequest(str, enum.Enum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    MODIFY = "modify"


_AWAITING = {
    VenueRequest.SUBMIT: OrderState.SUBMITTED,
    VenueRequest.CANCEL: OrderState.PENDING_CANCEL,
    VenueRequest.MODIFY: OrderState.PENDING_UPDATE,
}

_REL_TOL = 1e-9  # float sums of partial fills: 0.1 + 0.2 + 0.7 fills 1.0


class OrderEventRefused(ValueError):
    """An event the order's state does not allow, or one that does not fit the order."""

    def __init__(self, order: Order, event: OrderEvent, why: str) -> None:
        self.client_order_id = order.client_order_id
        self.state = order.state
        self.event = event
        super().__init__(
            f"order {order.client_order_id}: {event_name(event)} refused in state {order.state.value}: {why}"
        )


# --- events ---------------------------------------------------------------------------
# Ours (the Execution Server's decisions and requests) and the venue's (reports). Each
# names its order and when it happened; a Fill (cluster.domain) is the venue's fill report.


@dataclass(frozen=True, slots=True)
class Denied:
    client_order_id: str
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class Submitted:
    """We are sending it (journaled before it goes). Again for a SUBMITTED order: a
    retried submit with the same client order id, for a venue that dedups on it."""

    client_order_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Accepted:
    client_order_id: str
    ts_ns: int
    venue_order_id: str | None = None
    quantity: float | None = None  # a target order's size as the venue client placed it


@dataclass(frozen=True, slots=True)
class Rejected:
    """The venue's definitive no to the submit. Not for timeouts: see OutcomeUnknown."""

    client_order_id: str
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class PendingCancel:
    client_order_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class CancelRejected:
    client_order_id: str
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class Canceled:
    client_order_id: str
    ts_ns: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Expired:
    client_order_id: str
    ts_ns: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PendingUpdate:
    client_order_id: str
    ts_ns: int
    quantity: float | None = None  # requested; the order changes only when Updated says so
    limit_price: float | None = None


@dataclass(frozen=True, slots=True)
class Updated:
    client_order_id: str
    ts_ns: int
    quantity: float | None = None  # None: unchanged
    limit_price: float | None = None
    venue_order_id: str | None = None  # some venues give an amended order a new id


@dataclass(frozen=True, slots=True)
class UpdateRejected:
    client_order_id: str
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class OutcomeUnknown:
    """A request whose answer never came (timeout, disconnect, HTTP 5xx): the venue may or
    may not have acted on it."""

    client_order_id: str
    ts_ns: int
    request: VenueRequest
    reason: str


OrderEvent = Union[
    Denied, Submitted, Accepted, Rejected, PendingCancel, CancelRejected, Canceled, Expired,
    PendingUpdate, Updated, UpdateRejected, OutcomeUnknown, Fill,
]  # fmt: skip

EVENT_NAMES: dict[type, str] = {
    Denied: "denied",
    Submitted: "submitted",
    Accepted: "accepted",
    Rejected: "rejected",
    PendingCancel: "pending_cancel",
    CancelRejected: "cancel_rejected",
    Canceled: "canceled",
    Expired: "expired",
    PendingUpdate: "pending_update",
    Updated: "updated",
    UpdateRejected: "update_rejected",
    OutcomeUnknown: "outcome_unknown",
    Fill: "fill",
}
EVENT_TYPES: dict[str, type] = {name: kind for kind, name in EVENT_NAMES.items()}


def event_name(event: OrderEvent) -> str:
    return EVENT_NAMES.get(type(event), type(event).__name__)


def event_fields(event: OrderEvent) -> dict:
    """The event's own fields (its order's id left out), enums as their values: what the
    journal keeps of it."""
    out = {}
    for f in fields(event):
        if f.name == "client_order_id":
            continue
        value = getattr(event, f.name)
        out[f.name] = value.value if isinstance(value, enum.Enum) else value
    return out


# --- the order ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    client_order_id: str
    run_id: str
    strategy: str
    venue: str
    instrument: str  # venue:SYMBOL
    side: Side
    quantity: float | None  # base units; None: a target order the venue has not sized yet
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    target: float | None = None  # a target order's exposure (fraction of its allocation's equity)
    decision_ts_ns: int = 0
    route: Route = Route.FIXED
    state: OrderState = OrderState.INITIALIZED
    filled_qty: float = 0.0
    avg_px: float = 0.0
    fees: float = 0.0
    venue_order_id: str | None = None
    reason: str | None = None  # the latest reason an event gave (deny, reject, cancel, unknown outcome)
    accepted_ns: int | None = None  # when the venue acknowledged it (its ack, or its first fill)
    unknown_since_ns: int | None = None
    fill_keys: frozenset[tuple[str, str]] = frozenset()  # (venue, venue_fill_id) applied

    def __post_init__(self) -> None:
        check_client_order_id(self.client_order_id)
        if self.instrument.partition(":")[0] != self.venue or ":" not in self.instrument:
            raise ValueError(f"order {self.client_order_id}: instrument {self.instrument!r} is not on venue {self.venue!r}")
        if self.quantity is None:
            if self.target is None:
                raise ValueError(f"order {self.client_order_id}: a quantity order needs a quantity")
        elif not (self.quantity > 0 and math.isfinite(self.quantity)):
            raise ValueError(f"order {self.client_order_id}: quantity must be a positive number, got {self.quantity!r}")
        if (self.order_type is OrderType.LIMIT) != (self.limit_price is not None):
            raise ValueError(f"order {self.client_order_id}: a limit order and only a limit order has a limit_price")
        if self.limit_price is not None and not (self.limit_price > 0 and math.isfinite(self.limit_price)):
            raise ValueError(
                f"order {self.client_order_id}: limit_price must be a positive number, got {self.limit_price!r}"
            )

    @property
    def is_target(self) -> bool:
        return self.target is not None

    @property
    def leaves_qty(self) -> float | None:
        """What is left to fill; None while a target order is unsized."""
        if self.quantity is None:
            return None
        return max(self.quantity - self.filled_qty, 0.0)


def order_from_intent(intent: OrderIntent, *, run_id: str, venue: str, route: Route) -> Order:
    """The INITIALIZED order for an intent routed to ``venue``. The intent's instrument is
    a symbol (``SOL-PERP``: the router picked the venue) or ``venue:SYMBOL``, which must
    then be ``venue``."""
    on, sep, symbol = intent.instrument.partition(":")
    if not sep:
        symbol = on
    elif on != venue:
        raise ValueError(f"intent for {intent.instrument} was routed to venue {venue!r}")
    return Order(
        client_order_id=client_order_id(run_id, intent.strategy, intent.ts_ns, intent.leg, intent.seq),
        run_id=run_id,
        strategy=intent.strategy,
        venue=venue,
        instrument=f"{venue}:{symbol}",
        side=intent.side,
        quantity=None if intent.target is not None else intent.size,
        order_type=intent.order_type,
        limit_price=intent.limit_price,
        time_in_force=intent.time_in_force,
        reduce_only=intent.reduce_only,
        target=intent.target,
        decision_ts_ns=intent.ts_ns,
        route=route,
    )


# --- client order ids -----------------------------------------------------------------

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's: no i, l, o, u
_MAX_LEG, _MAX_SEQ = 36**2, 36**3
CLIENT_ORDER_ID_MAX = 32


def _base36(n: int) -> str:
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = _B36[digit] + out
        if n == 0:
            return out


def client_order_id(run_id: str, strategy: str, decision_ts_ns: int, leg: int = 0, seq: int = 0) -> str:
    """The id of the order one decision makes: the same inputs give the same id, so a
    decision replayed after a crash is refused as a duplicate (by the journal, and by a
    venue that dedups on client ids).

    ``{tag}-{ts}-{leg}-{seq}``: ``tag`` is 10 base32 characters of a BLAKE2b hash of run id
    and strategy, the rest base36 of the decision's ns timestamp, leg and seq. At most 31
    characters of ``[0-9a-z-]``, lower case so that a venue that folds case keeps them
    apart. The timestamp stays readable (``int(ts, 36)``) to find the decision.
    """
    if not run_id or not strategy:
        raise ValueError("a client order id needs a run id and a strategy")
    if decision_ts_ns < 0:
        raise ValueError(f"decision timestamp must be >= 0 ns, got {decision_ts_ns}")
    if not 0 <= leg < _MAX_LEG:
        raise ValueError(f"leg must be in 0..{_MAX_LEG - 1}, got {leg}")
    if not 0 <= seq < _MAX_SEQ:
        raise ValueError(f"seq must be in 0..{_MAX_SEQ - 1}, got {seq}")
    digest = hashlib.blake2b(f"{run_id}\x1f{strategy}".encode(), digest_size=8).digest()
    bits = int.from_bytes(digest, "big")
    tag = "".join(_B32[(bits >> (5 * i)) & 31] for i in range(10))  # 50 bits
    return f"{tag}-{_base36(decision_ts_ns)}-{_base36(leg)}-{_base36(seq)}"


def check_client_order_id(value: str) -> None:
    if not (0 < len(value) <= CLIENT_ORDER_ID_MAX) or not all(c.isascii() and (c.isalnum() or c == "-") for c in value):
        raise ValueError(f"client order id {value!r} must be 1-{CLIENT_ORDER_ID_MAX} characters of [A-Za-z0-9-]")


# --- the machine ----------------------------------------------------------------------


def apply(order: Order, event: OrderEvent) -> Order:
    """The order after ``event``; ``order`` itself when the event changes nothing."""
    if event.client_order_id != order.client_order_id:
        raise OrderEventRefused(order, event, f"the event is for order {event.client_order_id}")
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise OrderEventRefused(order, event, f"{type(event).__name__} is not an order event")
    new = handler(order, event)
    if new is order:
        return order
    if new.state != order.state and type(event) not in _OUR_REQUESTS:
        new = replace(new, unknown_since_ns=None)  # the venue has spoken: no longer in doubt
    return new


def _working_state(order: Order) -> OrderState:
    """Where an order stands at the venue as far as the venue has told us: the state a
    pending request's refusal returns it to."""
    if order.filled_qty > 0:
        return OrderState.PARTIALLY_FILLED
    if order.accepted_ns is not None:
        return OrderState.ACCEPTED
    return OrderState.SUBMITTED


def _refuse_unless(order: Order, event: OrderEvent, allowed: frozenset[OrderState], why: str = "") -> None:
    if order.state not in allowed:
        raise OrderEventRefused(order, event, why or "not a transition of the order lifecycle")


def _positive(order: Order, event: OrderEvent, name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise OrderEventRefused(order, event, f"{name} must be a positive number, got {value!r}")


def _venue_order_id(order: Order, event: OrderEvent, venue_order_id: str | None) -> str | None:
    if venue_order_id is not None and order.venue_order_id not in (None, venue_order_id):
        raise OrderEventRefused(
            order, event, f"venue order id {venue_order_id!r} differs from the order's {order.venue_order_id!r}"
        )
    return venue_order_id or order.venue_order_id


def _denied(order: Order, event: Denied) -> Order:
    if order.state is OrderState.DENIED:
        return order
    _refuse_unless(order, event, frozenset({OrderState.INITIALIZED}), "only an order not yet sent can be denied")
    return replace(order, state=OrderState.DENIED, reason=event.reason)


def _submitted(order: Order, event: Submitted) -> Order:
    _refuse_unless(order, event, frozenset({OrderState.INITIALIZED, OrderState.SUBMITTED}))
    return replace(order, state=OrderState.SUBMITTED)


def _accepted(order: Order, event: Accepted) -> Order:
    _refuse_unless(order, event, _SENT - {OrderState.REJECTED})
    _positive(order, event, "quantity", event.quantity)
    venue_order_id = _venue_order_id(order, event, event.venue_order_id)
    quantity = order.quantity
    if event.quantity is not None:
        if order.is_target and order.quantity is None:
            quantity = event.quantity
        elif not math.isclose(event.quantity, order.quantity or 0.0, rel_tol=_REL_TOL):
            raise OrderEventRefused(order, event, f"the ack's quantity {event.quantity} is not the order's {order.quantity}")
    if quantity is not None and order.filled_qty > quantity * (1 + _REL_TOL):
        raise OrderEventRefused(order, event, f"quantity {quantity} is below the {order.filled_qty} already filled")
    if order.state is OrderState.SUBMITTED:
        return replace(order, state=OrderState.ACCEPTED, venue_order_id=venue_order_id,
                       accepted_ns=event.ts_ns, quantity=quantity)  # fmt: skip
    # A late ack (after a fill, a cancel request, the end): it only adds what it knows.
    new = replace(order, venue_order_id=venue_order_id, quantity=quantity,
                  accepted_ns=order.accepted_ns if order.accepted_ns is not None else event.ts_ns)  # fmt: skip
    if new.state not in _DONE_AT_VENUE and _done(new):
        new = replace(new, state=OrderState.FILLED)  # a target order whose fills had already reached the size
    return order if new == order else new


def _rejected(order: Order, event: Rejected) -> Order:
    if order.state is OrderState.REJECTED:
        return order
    _refuse_unless(order, event, frozenset({OrderState.SUBMITTED}) | _PENDING)
    if order.accepted_ns is not None or order.filled_qty > 0:
        raise OrderEventRefused(order, event, "the venue has acknowledged or filled it; a venue that drops it cancels it")
    return replace(order, state=OrderState.REJECTED, reason=event.reason)


def _pending_cancel(order: Order, event: PendingCancel) -> Order:
    _refuse_unless(order, event, _WORKING | _PENDING, "only an order at the venue, not done, can be canceled")
    return replace(order, state=OrderState.PENDING_CANCEL)


def _cancel_rejected(order: Order, event: CancelRejected) -> Order:
    _refuse_unless(order, event, _SENT, "no cancel was sent")
    if order.state is not OrderState.PENDING_CANCEL:
        return order  # a second answer, or one for an order that meanwhile filled or ended
    return replace(order, state=_working_state(order), reason=event.reason)


def _canceled(order: Order, event: Canceled) -> Order:
    if order.state is OrderState.CANCELED:
        return order
    _refuse_unless(order, event, _WORKING | _PENDING)
    return replace(order, state=OrderState.CANCELED, reason=event.reason or order.reason)


def _expired(order: Order, event: Expired) -> Order:
    if order.state is OrderState.EXPIRED:
        return order
    _refuse_unless(order, event, _WORKING | _PENDING)
    return replace(order, state=OrderState.EXPIRED, reason=event.reason or order.reason)


def _pending_update(order: Order, event: PendingUpdate) -> Order:
    _refuse_unless(
        order, event,
        frozenset({OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED, OrderState.PENDING_UPDATE}),
        "only an acknowledged working order can be modified",
    )  # fmt: skip
    if order.order_type is not OrderType.LIMIT:
        raise OrderEventRefused(order, event, "only a limit order can be modified")
    if event.quantity is None and event.limit_price is None:
        raise OrderEventRefused(order, event, "a modify changes the quantity, the limit price or both")
    _positive(order, event, "quantity", event.quantity)
    _positive(order, event, "limit_price", event.limit_price)
    if event.quantity is not None and event.quantity < order.filled_qty * (1 - _REL_TOL):
        raise OrderEventRefused(order, event, f"quantity {event.quantity} is below the {order.filled_qty} already filled")
    return replace(order, state=OrderState.PENDING_UPDATE)


def _updated(order: Order, event: Updated) -> Order:
    _refuse_unless(order, event, _SENT - {OrderState.REJECTED}, "no modify was sent")
    if order.state in _DONE_AT_VENUE:
        return order  # the amendment's ack came after the order ended: nothing left to amend
    _positive(order, event, "quantity", event.quantity)
    _positive(order, event, "limit_price", event.limit_price)
    if order.order_type is not OrderType.LIMIT:
        raise OrderEventRefused(order, event, "only a limit order can be modified")
    quantity = event.quantity if event.quantity is not None else order.quantity
    limit_price = event.limit_price if event.limit_price is not None else order.limit_price
    if quantity is not None and order.filled_qty > quantity * (1 + _REL_TOL):
        raise OrderEventRefused(order, event, f"quantity {quantity} is below the {order.filled_qty} already filled")
    new = replace(order, quantity=quantity, limit_price=limit_price,
                  venue_order_id=event.venue_order_id or order.venue_order_id)  # fmt: skip
    if order.state not in _PENDING:
        if new == order:
            return order  # the same amendment reported again
        raise OrderEventRefused(order, event, "no modify was pending")
    if order.state is OrderState.PENDING_UPDATE:
        new = replace(new, state=_working_state(new))
    if _done(new):
        new = replace(new, state=OrderState.FILLED)  # reduced to what had already filled
    return new


def _update_rejected(order: Order, event: UpdateRejected) -> Order:
    _refuse_unless(order, event, _SENT, "no modify was sent")
    if order.state is not OrderState.PENDING_UPDATE:
        return order  # a second answer, or one that came after a cancel request or the end
    return replace(order, state=_working_state(order), reason=event.reason)


def _outcome_unknown(order: Order, event: OutcomeUnknown) -> Order:
    _refuse_unless(order, event, _SENT, "nothing was sent")
    if order.state is not _AWAITING[VenueRequest(event.request)]:
        return order  # the venue has answered that request already
    since = order.unknown_since_ns if order.unknown_since_ns is not None else event.ts_ns
    return replace(order, unknown_since_ns=since, reason=event.reason)


def _done(order: Order) -> bool:
    return order.quantity is not None and order.filled_qty >= order.quantity * (1 - _REL_TOL)


def _fill(order: Order, fill: Fill) -> Order:
    if fill.key in order.fill_keys:
        return order  # re-delivered
    _refuse_unless(
        order, fill, _WORKING | _PENDING | {OrderState.CANCELED, OrderState.EXPIRED, OrderState.FILLED},
        "the order never reached the venue",
    )  # fmt: skip
    for name, ours, theirs in (("venue", order.venue, fill.venue), ("instrument", order.instrument, fill.instrument),
                               ("side", order.side, fill.side)):  # fmt: skip
        if ours != theirs:
            raise OrderEventRefused(order, fill, f"fill {fill.venue_fill_id} has {name} {theirs!r}, the order {ours!r}")
    _positive(order, fill, "qty", fill.qty)
    _positive(order, fill, "price", fill.price)
    if not math.isfinite(fill.fee):
        raise OrderEventRefused(order, fill, f"fee must be a finite number, got {fill.fee!r}")
    if fill.leaves_qty is not None and not (fill.leaves_qty >= 0 and math.isfinite(fill.leaves_qty)):
        raise OrderEventRefused(order, fill, f"leaves_qty must be >= 0, got {fill.leaves_qty!r}")
    filled = order.filled_qty + fill.qty
    quantity = order.quantity
    if order.is_target and fill.leaves_qty is not None:
        quantity = filled + fill.leaves_qty  # the venue's word sizes a target order
    if quantity is not None and filled > quantity * (1 + _REL_TOL):
        raise OrderEventRefused(
            order, fill, f"fill {fill.venue_fill_id} of {fill.qty} would overfill: {order.filled_qty} of {quantity} filled"
        )
    new = replace(
        order,
        quantity=quantity,
        filled_qty=filled,
        avg_px=(order.avg_px * order.filled_qty + fill.price * fill.qty) / filled,
        fees=order.fees + fill.fee,
        accepted_ns=order.accepted_ns if order.accepted_ns is not None else fill.ts_ns,  # a fill is an ack
        fill_keys=order.fill_keys | {fill.key},
    )
    if _done(new):
        return replace(new, state=OrderState.FILLED)
    if order.state in (OrderState.SUBMITTED, OrderState.ACCEPTED):
        return replace(new, state=OrderState.PARTIALLY_FILLED)
    return new  # PARTIALLY_FILLED, PENDING_* (the request is still out), CANCELED / EXPIRED (late fill)


_HANDLERS = {
    Denied: _denied,
    Submitted: _submitted,
    Accepted: _accepted,
    Rejected: _rejected,
    PendingCancel: _pending_cancel,
    CancelRejected: _cancel_rejected,
    Canceled: _canceled,
    Expired: _expired,
    PendingUpdate: _pending_update,
    Updated: _updated,
    UpdateRejected: _update_rejected,
    OutcomeUnknown: _outcome_unknown,
    Fill: _fill,
}
_OUR_REQUESTS = frozenset({Submitted, PendingCancel, PendingUpdate, OutcomeUnknown})
