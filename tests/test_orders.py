"""The order lifecycle (cluster.orders): every state against every event, the real world's
edges one by one, target orders, refusals that say what was wrong, and client order ids."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest

from cluster.domain import Fill, OrderIntent, OrderType, Side
from cluster.orders import (
    Accepted,
    Canceled,
    CancelRejected,
    Denied,
    Expired,
    Order,
    OrderEventRefused,
    OrderState,
    OutcomeUnknown,
    PendingCancel,
    PendingUpdate,
    Rejected,
    Route,
    Submitted,
    Updated,
    UpdateRejected,
    VenueRequest,
    apply,
    client_order_id,
    order_from_intent,
)

S = OrderState
OID = client_order_id("run-1", "sol_ema_cross", 1_746_372_780_000_000_000)
_fill_ids = itertools.count()


def limit_order(quantity: float = 4.0, **kw) -> Order:
    base = dict(
        client_order_id=OID, run_id="run-1", strategy="sol_ema_cross", venue="drift", instrument="drift:SOL-PERP",
        side=Side.BUY, quantity=quantity, order_type=OrderType.LIMIT, limit_price=100.0,
    )  # fmt: skip
    return Order(**{**base, **kw})


def target_order() -> Order:
    return limit_order(quantity=None, order_type=OrderType.MARKET, limit_price=None, target=0.5)


def fill(qty: float, price: float = 100.0, *, fill_id: str | None = None, leaves: float | None = None, **kw) -> Fill:
    base = dict(
        client_order_id=OID, venue="drift", venue_fill_id=fill_id or f"f{next(_fill_ids)}", ts_ns=5_000,
        instrument="drift:SOL-PERP", side=Side.BUY, qty=qty, price=price, fee=0.01, leaves_qty=leaves,
    )  # fmt: skip
    return Fill(**{**base, **kw})


def run(order: Order, *events) -> Order:
    for event in events:
        order = apply(order, event)
    return order


submitted = Submitted(OID, 1_000)
accepted = Accepted(OID, 2_000, venue_order_id="v1")

# How each state is reached, through the machine itself.
PATHS = {
    S.INITIALIZED: [],
    S.DENIED: [Denied(OID, 1_000, "max position")],
    S.SUBMITTED: [submitted],
    S.ACCEPTED: [submitted, accepted],
    S.REJECTED: [submitted, Rejected(OID, 2_000, "insufficient collateral")],
    S.CANCELED: [submitted, accepted, Canceled(OID, 3_000)],
    S.EXPIRED: [submitted, accepted, Expired(OID, 3_000)],
    S.PENDING_UPDATE: [submitted, accepted, PendingUpdate(OID, 3_000, quantity=5.0)],
    S.PENDING_CANCEL: [submitted, accepted, PendingCancel(OID, 3_000)],
    S.PARTIALLY_FILLED: [submitted, accepted, fill(1.0, fill_id="p1")],
    S.FILLED: [submitted, accepted, fill(4.0, fill_id="p1")],
}


def in_state(state: OrderState) -> Order:
    order = run(limit_order(), *PATHS[state])
    assert order.state is state
    return order


PROBES = {
    "submitted": lambda: Submitted(OID, 9_000),
    "denied": lambda: Denied(OID, 9_000, "kill switch"),
    "accepted": lambda: Accepted(OID, 9_000, venue_order_id="v1"),
    "rejected": lambda: Rejected(OID, 9_000, "bad price"),
    "pending_cancel": lambda: PendingCancel(OID, 9_000),
    "cancel_rejected": lambda: CancelRejected(OID, 9_000, "too late to cancel"),
    "canceled": lambda: Canceled(OID, 9_000),
    "expired": lambda: Expired(OID, 9_000),
    "pending_update": lambda: PendingUpdate(OID, 9_000, quantity=5.0),
    "updated": lambda: Updated(OID, 9_000, quantity=5.0),
    "update_rejected": lambda: UpdateRejected(OID, 9_000, "price off the band"),
    "unknown_submit": lambda: OutcomeUnknown(OID, 9_000, VenueRequest.SUBMIT, "timeout after 5 s"),
    "unknown_cancel": lambda: OutcomeUnknown(OID, 9_000, VenueRequest.CANCEL, "HTTP 503"),
    "unknown_modify": lambda: OutcomeUnknown(OID, 9_000, VenueRequest.MODIFY, "disconnected"),
    "fill": lambda: fill(1.0),
}

# The table: the state after the event; '=' the event changes nothing (the same order
# comes back, the journal writes nothing); 'x' refused. A state named where the order was
# already in it is an applied event (a retried request, a flag set, a fill added).
SHORT = {"init": S.INITIALIZED, "den": S.DENIED, "sub": S.SUBMITTED, "acc": S.ACCEPTED, "rej": S.REJECTED,
         "cxl": S.CANCELED, "exp": S.EXPIRED, "pupd": S.PENDING_UPDATE, "pcxl": S.PENDING_CANCEL,
         "part": S.PARTIALLY_FILLED, "fill": S.FILLED}  # fmt: skip
TABLE = """
           submitted denied accepted rejected pending_cancel cancel_rejected canceled expired pending_update updated update_rejected unknown_submit unknown_cancel unknown_modify fill
init       sub       den    x        x        x              x               x        x       x              x       x               x              x              x              x
den        x         =      x        x        x              x               x        x       x              x       x               x              x              x              x
sub        sub       x      acc      rej      pcxl           =               cxl      exp     x              x       =               sub            =              =              part
acc        x         x      =        x        pcxl           =               cxl      exp     pupd           x       =               =              =              =              part
rej        x         x      x        =        x              =               x        x       x              x       =               =              =              =              x
cxl        x         x      =        x        x              =               =        x       x              =       =               =              =              =              cxl
exp        x         x      =        x        x              =               x        =       x              =       =               =              =              =              exp
pupd       x         x      =        x        pcxl           =               cxl      exp     pupd           acc     acc             =              =              pupd           pupd
pcxl       x         x      =        x        pcxl           acc             cxl      exp     x              pcxl    =               =              pcxl           =              pcxl
part       x         x      =        x        pcxl           =               cxl      exp     pupd           x       =               =              =              =              part
fill       x         x      =        x        x              =               x        x       x              =       =               =              =              =              x
"""


def _table() -> list[tuple[OrderState, str, str]]:
    header, *rows = TABLE.strip().splitlines()
    events = header.split()
    cells = []
    for row in rows:
        state, *outcomes = row.split()
        assert len(outcomes) == len(events), row
        cells += [(SHORT[state], event, outcome) for event, outcome in zip(events, outcomes)]
    return cells


def test_the_table_covers_every_state_and_event():
    cells = _table()
    assert {c[0] for c in cells} == set(OrderState)
    assert {c[1] for c in cells} == set(PROBES)


@pytest.mark.parametrize(("state", "event", "outcome"), _table(), ids=lambda v: getattr(v, "value", v))
def test_state_machine_table(state, event, outcome):
    order = in_state(state)
    before = dataclasses.asdict(order)
    probe = PROBES[event]()
    if outcome == "x":
        with pytest.raises(OrderEventRefused) as refused:
            apply(order, probe)
        assert OID in str(refused.value) and state.value in str(refused.value)
        assert refused.value.client_order_id == OID and refused.value.state is state
    else:
        new = apply(order, probe)
        if outcome == "=":
            assert new is order
        else:
            assert new is not order and new.state is SHORT[outcome]
    assert dataclasses.asdict(order) == before  # whatever happened, the order given is untouched


# --- the real world's edges -----------------------------------------------------------------


def test_happy_path_submitted_accepted_partial_filled():
    order = run(limit_order(), submitted, accepted)
    assert (order.state, order.venue_order_id, order.accepted_ns) == (S.ACCEPTED, "v1", 2_000)
    order = apply(order, fill(1.0, 100.0))
    assert order.state is S.PARTIALLY_FILLED and order.leaves_qty == pytest.approx(3.0)
    order = apply(order, fill(3.0, 104.0))
    assert order.state is S.FILLED and order.state.is_terminal
    assert order.avg_px == pytest.approx(103.0)  # (1*100 + 3*104) / 4
    assert order.fees == pytest.approx(0.02)
    assert order.leaves_qty == 0.0


def test_a_fill_before_the_ack_is_the_ack_and_the_late_ack_only_adds_the_venue_id():
    order = run(limit_order(), submitted, fill(1.0))
    assert order.state is S.PARTIALLY_FILLED and order.accepted_ns == 5_000 and order.venue_order_id is None
    order = apply(order, Accepted(OID, 6_000, venue_order_id="v9"))
    assert order.state is S.PARTIALLY_FILLED and order.venue_order_id == "v9" and order.accepted_ns == 5_000
    filled = run(limit_order(), submitted, fill(4.0))
    assert apply(filled, Accepted(OID, 6_000)) is filled


def test_an_ack_naming_another_venue_order_id_is_refused():
    order = run(limit_order(), submitted, accepted)
    with pytest.raises(OrderEventRefused, match="venue order id 'v2' differs from the order's 'v1'"):
        apply(order, Accepted(OID, 3_000, venue_order_id="v2"))


def test_fills_while_a_cancel_is_pending_keep_it_pending_until_one_completes_the_order():
    order = run(limit_order(), submitted, accepted, PendingCancel(OID, 3_000), fill(1.0))
    assert order.state is S.PENDING_CANCEL and order.filled_qty == 1.0  # the cancel's answer is still to come
    assert apply(order, Canceled(OID, 4_000)).state is S.CANCELED
    assert apply(order, CancelRejected(OID, 4_000, "too late")).state is S.PARTIALLY_FILLED
    assert apply(order, fill(3.0)).state is S.FILLED


def test_a_fill_reported_after_canceled_is_applied_and_the_order_stays_canceled_unless_it_completes():
    canceled = run(limit_order(), submitted, accepted, fill(1.0), PendingCancel(OID, 3_000), Canceled(OID, 4_000))
    late = apply(canceled, fill(1.0))
    assert late.state is S.CANCELED and late.filled_qty == 2.0  # money moved: applied; the rest never trades
    assert apply(late, fill(2.0)).state is S.FILLED  # the cancel lost the whole race
    with pytest.raises(OrderEventRefused, match="would overfill"):
        apply(late, fill(2.5))
    expired = run(limit_order(), submitted, accepted, Expired(OID, 4_000))
    assert apply(expired, fill(1.0)).state is S.EXPIRED


def test_a_cancel_rejected_returns_to_where_the_venue_has_the_order():
    unacked = run(limit_order(), submitted, PendingCancel(OID, 2_000), CancelRejected(OID, 3_000, "unknown order"))
    assert unacked.state is S.SUBMITTED and unacked.reason == "unknown order"
    acked = run(limit_order(), submitted, accepted, PendingCancel(OID, 3_000), CancelRejected(OID, 4_000, "no"))
    assert acked.state is S.ACCEPTED
    part = run(limit_order(), submitted, fill(1.0), PendingCancel(OID, 6_000), CancelRejected(OID, 7_000, "no"))
    assert part.state is S.PARTIALLY_FILLED
    late_ack = run(limit_order(), submitted, PendingCancel(OID, 2_000), accepted, CancelRejected(OID, 4_000, "no"))
    assert late_ack.state is S.ACCEPTED  # the submit's ack came while the cancel was out


def test_a_cancel_rejected_for_an_order_that_meanwhile_filled_changes_nothing():
    filled = run(limit_order(), submitted, accepted, PendingCancel(OID, 3_000), fill(4.0))
    assert filled.state is S.FILLED
    assert apply(filled, CancelRejected(OID, 5_000, "order already filled")) is filled


def test_a_submit_rejected_while_a_cancel_is_out_is_rejected_but_not_once_acknowledged():
    order = run(limit_order(), submitted, PendingCancel(OID, 2_000))
    assert apply(order, Rejected(OID, 3_000, "margin")).state is S.REJECTED
    with pytest.raises(OrderEventRefused, match="acknowledged or filled"):
        apply(apply(order, accepted), Rejected(OID, 3_000, "margin"))


def test_modify_updated_applies_the_new_quantity_and_price():
    order = run(limit_order(), submitted, accepted, PendingUpdate(OID, 3_000, quantity=6.0, limit_price=99.0))
    assert order.state is S.PENDING_UPDATE and order.quantity == 4.0  # requested, not yet done
    order = apply(order, Updated(OID, 4_000, quantity=6.0, limit_price=99.0))
    assert (order.state, order.quantity, order.limit_price) == (S.ACCEPTED, 6.0, 99.0)
    assert apply(order, Updated(OID, 5_000, quantity=6.0, limit_price=99.0)) is order  # the same ack again


def test_modify_rejected_goes_back_unchanged_and_a_partial_fill_meanwhile_is_kept():
    order = run(limit_order(), submitted, accepted, PendingUpdate(OID, 3_000, limit_price=101.0), fill(1.0))
    assert order.state is S.PENDING_UPDATE
    back = apply(order, UpdateRejected(OID, 4_000, "price band"))
    assert (back.state, back.limit_price, back.reason) == (S.PARTIALLY_FILLED, 100.0, "price band")
    down = apply(order, Updated(OID, 4_000, quantity=1.0))
    assert down.state is S.FILLED  # reduced to what had already filled


@pytest.mark.parametrize(
    ("order", "event", "message"),
    [
        (run(limit_order(), submitted, accepted, fill(2.0)), PendingUpdate(OID, 3, quantity=1.0), "below the 2.0 already filled"),
        (run(limit_order(), submitted, accepted), PendingUpdate(OID, 3), "changes the quantity, the limit price or both"),
        (run(limit_order(), submitted), PendingUpdate(OID, 3, quantity=5.0), "only an acknowledged working order"),
        (run(target_order(), submitted, accepted), PendingUpdate(OID, 3, quantity=5.0), "only a limit order"),
        (run(limit_order(), submitted, accepted), PendingUpdate(OID, 3, limit_price=-1.0), "limit_price must be a positive"),
    ],
)
def test_impossible_modifies_are_refused(order, event, message):
    with pytest.raises(OrderEventRefused, match=message):
        apply(order, event)


def test_an_unknown_submit_outcome_never_rejects_and_stays_in_flight_until_the_venue_speaks():
    order = run(limit_order(), submitted, OutcomeUnknown(OID, 2_000, VenueRequest.SUBMIT, "timeout after 5 s"))
    assert (order.state, order.unknown_since_ns, order.reason) == (S.SUBMITTED, 2_000, "timeout after 5 s")
    assert not order.state.is_terminal
    again = run(order, submitted, OutcomeUnknown(OID, 3_000, VenueRequest.SUBMIT, "HTTP 502"))
    assert (again.unknown_since_ns, again.reason) == (2_000, "HTTP 502")  # a retry keeps the first doubt's time
    assert apply(again, accepted).unknown_since_ns is None
    assert apply(again, fill(1.0)).unknown_since_ns is None
    settled = apply(again, Rejected(OID, 4_000, "reconciliation: the venue has no such order"))
    assert (settled.state, settled.unknown_since_ns) == (S.REJECTED, None)


def test_an_unknown_cancel_outcome_stays_pending_through_partial_fills():
    order = run(limit_order(), submitted, accepted, PendingCancel(OID, 3_000),
                OutcomeUnknown(OID, 4_000, VenueRequest.CANCEL, "disconnected"), fill(1.0))  # fmt: skip
    assert (order.state, order.unknown_since_ns) == (S.PENDING_CANCEL, 4_000)  # still not known whether it took
    assert apply(order, PendingCancel(OID, 5_000)).unknown_since_ns == 4_000  # our retry is not an answer
    assert apply(order, Canceled(OID, 6_000)).unknown_since_ns is None
    assert apply(order, CancelRejected(OID, 6_000, "no")).state is S.PARTIALLY_FILLED


def test_an_unknown_outcome_for_an_order_never_sent_is_refused():
    with pytest.raises(OrderEventRefused, match="nothing was sent"):
        apply(limit_order(), OutcomeUnknown(OID, 1, VenueRequest.SUBMIT, "timeout"))


def test_a_redelivered_fill_is_a_no_op_even_after_the_order_is_done():
    first = fill(1.0, fill_id="dup")
    order = run(limit_order(), submitted, first)
    assert apply(order, dataclasses.replace(first, ts_ns=99)) is order
    done = apply(order, fill(3.0))
    assert apply(done, first) is done


def test_an_overfill_is_refused_and_leaves_the_order_as_it_was():
    order = run(limit_order(quantity=1.0), submitted, fill(0.6))
    with pytest.raises(OrderEventRefused) as refused:
        apply(order, fill(0.5, fill_id="big"))
    message = str(refused.value)
    assert message.startswith(f"order {OID}: fill refused in state partially_filled:")
    assert "fill big of 0.5 would overfill: 0.6 of 1.0 filled" in message
    assert order.filled_qty == 0.6 and order.fill_keys == frozenset({("drift", order_fill_id(order))})


def order_fill_id(order: Order) -> str:
    (key,) = order.fill_keys
    return key[1]


def test_partial_fills_that_add_up_in_floating_point_fill_the_order():
    order = run(limit_order(quantity=1.0), submitted, fill(0.1), fill(0.2))
    assert apply(order, fill(0.7)).state is S.FILLED


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"side": Side.SELL}, "has side"),
        ({"venue": "binanceusdm"}, "has venue 'binanceusdm'"),
        ({"instrument": "drift:BTC-PERP"}, "has instrument 'drift:BTC-PERP'"),
        ({"qty": 0.0}, "qty must be a positive number"),
        ({"price": float("nan")}, "price must be a positive number"),
        ({"fee": float("inf")}, "fee must be a finite number"),
        ({"client_order_id": "someone-else"}, "the event is for order someone-else"),
    ],
)
def test_a_fill_that_does_not_fit_the_order_is_refused(change, message):
    order = run(limit_order(), submitted)
    with pytest.raises(OrderEventRefused, match=re.escape(message)):
        apply(order, dataclasses.replace(fill(1.0), **change))


def test_a_fill_for_an_order_never_sent_is_refused():
    with pytest.raises(OrderEventRefused, match="never reached the venue"):
        apply(limit_order(), fill(1.0))


# --- target orders ----------------------------------------------------------------------------


def test_a_target_order_is_sized_by_the_venue_and_filled_when_the_venue_says_it_is_done():
    order = run(target_order(), submitted, fill(1.5))
    assert (order.state, order.quantity, order.filled_qty, order.leaves_qty) == (S.PARTIALLY_FILLED, None, 1.5, None)
    order = apply(order, fill(2.0, leaves=0.0))
    assert (order.state, order.quantity, order.filled_qty) == (S.FILLED, 3.5, 3.5)


def test_a_target_order_learns_its_quantity_from_the_ack_or_a_fills_leaves():
    acked = run(target_order(), submitted, Accepted(OID, 2_000, venue_order_id="v1", quantity=3.0))
    assert acked.quantity == 3.0
    assert apply(acked, fill(3.0)).state is S.FILLED
    with pytest.raises(OrderEventRefused, match="would overfill"):
        apply(acked, fill(3.5))
    leaves = run(target_order(), submitted, fill(1.0, leaves=2.0))
    assert (leaves.quantity, leaves.state) == (3.0, S.PARTIALLY_FILLED)
    late_ack = run(target_order(), submitted, fill(2.0), Accepted(OID, 6_000, quantity=2.0))
    assert late_ack.state is S.FILLED


def test_a_quantity_order_ack_with_another_quantity_is_refused():
    with pytest.raises(OrderEventRefused, match="the ack's quantity 5.0 is not the order's 4.0"):
        run(limit_order(), submitted, Accepted(OID, 2_000, quantity=5.0))


# --- orders and client order ids ---------------------------------------------------------------


def test_client_order_ids_are_deterministic_short_and_plain():
    args = ("paper-2026-04-01", "sol_ema_cross", 1_775_001_600_123_456_789, 1, 2)
    first = client_order_id(*args)
    assert first == client_order_id(*args)  # the decision replayed after a crash
    assert len(first) <= 32 and re.fullmatch(r"[0-9a-z-]+", first)
    ts = first.split("-")[1]
    assert int(ts, 36) == args[2]  # the decision's time is readable back
    others = {
        client_order_id("paper-2026-04-02", *args[1:]),
        client_order_id(args[0], "sol_breakout", *args[2:]),
        client_order_id(*args[:2], args[2] + 1, *args[3:]),
        client_order_id(*args[:3], 2, 2),
        client_order_id(*args[:4], 3),
        client_order_id(args[0] + "sol", "_ema_cross", *args[2:]),  # the boundary between run and strategy counts
    }
    assert first not in others and len(others) == 6
    longest = client_order_id("r" * 500, "s" * 500, 2**63 - 1, 36**2 - 1, 36**3 - 1)
    assert len(longest) <= 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "s", 0), "needs a run id and a strategy"),
        (("r", "s", -1), "decision timestamp must be >= 0"),
        (("r", "s", 0, 36**2), "leg must be in 0..1295"),
        (("r", "s", 0, 0, -1), "seq must be in 0..46655"),
    ],
)
def test_client_order_id_refuses_what_it_cannot_encode(args, message):
    with pytest.raises(ValueError, match=message):
        client_order_id(*args)


def test_an_order_from_an_intent():
    intent = OrderIntent(strategy="sol_ema_cross", instrument="SOL-PERP", side=Side.SELL, size=2.0,
                         order_type=OrderType.LIMIT, limit_price=150.0, ts_ns=1_000, leg=1, seq=2)  # fmt: skip
    order = order_from_intent(intent, run_id="run-1", venue="drift", route=Route.SELECTOR)
    assert order.client_order_id == client_order_id("run-1", "sol_ema_cross", 1_000, 1, 2)
    assert (order.instrument, order.quantity, order.state, order.route) == ("drift:SOL-PERP", 2.0, S.INITIALIZED, Route.SELECTOR)
    target = OrderIntent(strategy="s", instrument="drift:SOL-PERP", side=Side.BUY, size=1.5, target=-0.25)
    sized_later = order_from_intent(target, run_id="run-1", venue="drift", route=Route.FIXED)
    assert (sized_later.quantity, sized_later.target) == (None, -0.25)
    with pytest.raises(ValueError, match="intent for drift:SOL-PERP was routed to venue 'binanceusdm'"):
        order_from_intent(target, run_id="run-1", venue="binanceusdm", route=Route.FIXED)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client_order_id": "x" * 33}, "must be 1-32 characters"),
        ({"client_order_id": "a_b"}, "must be 1-32 characters"),
        ({"instrument": "SOL-PERP"}, "is not on venue 'drift'"),
        ({"instrument": "binanceusdm:SOL-PERP"}, "is not on venue 'drift'"),
        ({"quantity": None}, "a quantity order needs a quantity"),
        ({"quantity": float("inf")}, "quantity must be a positive number"),
        ({"limit_price": None}, "a limit order and only a limit order has a limit_price"),
    ],
)
def test_an_order_that_cannot_be_is_refused_when_made(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        limit_order(**change)
