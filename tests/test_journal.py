"""The trading journal (cluster/store/journal.py) against the real embedded PostgreSQL: runs,
idempotent orders and fills, positions, funding, refusals and failed transactions that
leave nothing behind, a lost connection that is not swallowed, concurrent deliveries, and a
hypothesis state machine that drives orders through every kind of venue event (duplicated
and reordered) and checks the journal against an in-memory model after every step."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from cluster.domain import Fill, OrderType, Side
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
)
from cluster.store.connection import is_transient
from cluster.store.journal import Journal, JournalConflict, UnknownOrder, UnknownRun

S = OrderState
T0 = 1_775_001_600_000_000_000  # 2026-04-01 00:00 UTC; every time here is whole microseconds
RUN = "paper-1"
TABLES = ("trading_runs, orders, order_events, fills, positions, trade_logs, funding_payments, risk_events, "
          "equity_snapshots")  # fmt: skip


def with_journal(dsn: str, body, *, max_size: int = 2):
    async def go():
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
        try:
            journal = Journal(pool)
            await journal.open_run(RUN, mode="paper", strategy="sol_ema_cross", config={"fee_bps": 3.5}, ts_ns=T0)
            return await body(journal, pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def make_order(leg: int = 0, *, quantity: float | None = 2.0, side: Side = Side.BUY, strategy: str = "sol_ema_cross",
               venue: str = "drift", symbol: str = "SOL-PERP", limit: float | None = None, target: float | None = None,
               run_id: str = RUN) -> Order:  # fmt: skip
    return Order(
        client_order_id=client_order_id(run_id, strategy, T0, leg), run_id=run_id, strategy=strategy, venue=venue,
        instrument=f"{venue}:{symbol}", side=side, quantity=quantity,
        order_type=OrderType.LIMIT if limit else OrderType.MARKET, limit_price=limit, target=target,
        decision_ts_ns=T0, route=Route.SELECTOR,
    )  # fmt: skip


def make_fill(order: Order, qty: float, price: float, fill_id: str, *, fee: float = 0.0, ts_ns: int = T0 + 5_000,
              leaves: float | None = None) -> Fill:  # fmt: skip
    return Fill(client_order_id=order.client_order_id, venue=order.venue, venue_fill_id=fill_id, ts_ns=ts_ns,
                instrument=order.instrument, side=order.side, qty=qty, price=price, fee=fee, leaves_qty=leaves)  # fmt: skip


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                for t in ("orders", "order_events", "fills", "positions", "trade_logs", "funding_payments")}  # fmt: skip


async def snapshot(pool: asyncpg.Pool) -> list:
    """Every row of the journal's tables, to compare before and after."""
    async with pool.acquire() as conn:
        return [
            [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in ("orders", "order_events", "fills", "positions", "trade_logs", "funding_payments")
        ]


# --- orders and events ----------------------------------------------------------------------


def test_an_order_is_journaled_once_however_often_its_decision_is_replayed(dsn):
    async def body(journal: Journal, pool):
        order = make_order()
        first = await journal.new_order(order, T0 + 1_000)
        replayed = await journal.new_order(dataclasses.replace(order, venue="binanceusdm",
                                                               instrument="binanceusdm:SOL-PERP"), T0 + 2_000)  # fmt: skip
        return first, replayed, await journal.order_events(order.client_order_id), await counts(pool), order

    first, replayed, events, rows, order = with_journal(dsn, body)
    assert first == order and replayed == order  # the stored one, not a second order on another venue
    assert rows["orders"] == 1 and [(e.event, e.from_state, e.to_state) for e in events] == [("initialized", None, S.INITIALIZED)]
    assert events[0].ts_ns == T0 + 1_000


def test_an_order_walks_its_lifecycle_and_each_change_is_one_journal_line(dsn):
    async def body(journal: Journal, pool):
        order = await journal.new_order(make_order(limit=100.0), T0)
        oid = order.client_order_id
        results = [await journal.record(e) for e in (
            Submitted(oid, T0 + 1_000),
            OutcomeUnknown(oid, T0 + 2_000, VenueRequest.SUBMIT, "timeout after 5 s"),
            Accepted(oid, T0 + 3_000, venue_order_id="77"),
            make_fill(order, 0.5, 100.0, "t1", fee=0.02),
            make_fill(order, 0.5, 100.0, "t1", fee=0.02),  # re-delivered
            PendingUpdate(oid, T0 + 6_000, quantity=3.0),
            Updated(oid, T0 + 7_000, quantity=3.0),
            PendingCancel(oid, T0 + 8_000),
            make_fill(order, 1.0, 99.0, "t2", fee=0.04, ts_ns=T0 + 8_500),
            Canceled(oid, T0 + 9_000, "user"),
            make_fill(order, 0.5, 98.0, "t3", ts_ns=T0 + 8_800),  # traded before the cancel took effect
        )]  # fmt: skip
        return results, await journal.order_events(oid), await journal.order(oid)

    results, events, stored = with_journal(dsn, body)
    assert [r.applied for r in results] == [True, True, True, True, False, True, True, True, True, True, True]
    assert [(e.event, e.to_state) for e in events] == [
        ("initialized", S.INITIALIZED), ("submitted", S.SUBMITTED), ("outcome_unknown", S.SUBMITTED),
        ("accepted", S.ACCEPTED), ("fill", S.PARTIALLY_FILLED), ("pending_update", S.PENDING_UPDATE),
        ("updated", S.PARTIALLY_FILLED), ("pending_cancel", S.PENDING_CANCEL), ("fill", S.PENDING_CANCEL),
        ("canceled", S.CANCELED), ("fill", S.CANCELED),
    ]  # fmt: skip
    assert events[2].payload == {"request": "submit", "reason": "timeout after 5 s", "ts_ns": T0 + 2_000}
    assert events[4].payload["venue_fill_id"] == "t1" and events[4].payload["qty"] == 0.5
    assert stored == results[-1].order
    assert (stored.state, stored.quantity, stored.filled_qty, stored.venue_order_id) == (S.CANCELED, 3.0, 2.0, "77")
    assert stored.avg_px == pytest.approx((0.5 * 100 + 1.0 * 99 + 0.5 * 98) / 2.0)
    assert stored.fees == pytest.approx(0.06) and stored.unknown_since_ns is None and stored.reason == "user"


def test_a_fill_writes_the_fill_the_position_and_the_trade_log_and_a_redelivery_nothing(dsn):
    async def body(journal: Journal, pool):
        buy = await journal.new_order(make_order(0, quantity=2.0), T0)
        sell = await journal.new_order(make_order(1, quantity=3.0, side=Side.SELL), T0)
        for order in (buy, sell):
            await journal.record(Submitted(order.client_order_id, T0 + 1_000))
        await journal.record(make_fill(buy, 2.0, 100.0, "b1", fee=0.07))
        await journal.record(make_fill(sell, 3.0, 110.0, "s1", fee=0.1, ts_ns=T0 + 9_000))
        before = await snapshot(pool)
        again = await journal.record(make_fill(sell, 3.0, 110.0, "s1", fee=0.1, ts_ns=T0 + 9_000))
        async with pool.acquire() as conn:
            logs = await conn.fetch("SELECT pair, trade_type, venue, order_size, price, fill_id FROM trade_logs ORDER BY id")
        return again, before, await snapshot(pool), await journal.positions(RUN), await journal.fills(RUN), logs

    again, before, after, positions, fills, logs = with_journal(dsn, body)
    assert not again.applied and before == after
    (position,) = positions
    assert (position.strategy, position.instrument) == ("sol_ema_cross", "drift:SOL-PERP")
    assert position.size == pytest.approx(-1.0) and position.avg_entry_price == 110.0  # flipped short at 110
    assert position.realized_pnl == pytest.approx(20.0) and position.fees_paid == pytest.approx(0.17)
    assert [f.venue_fill_id for f in fills] == ["b1", "s1"] and fills[1].ts_ns == T0 + 9_000
    assert [tuple(r) for r in logs] == [
        ("drift:SOL-PERP", "BUY", "drift", 2, 100, "drift:b1"), ("drift:SOL-PERP", "SELL", "drift", 3, 110, "drift:s1"),
    ]  # fmt: skip


def test_a_refused_event_a_fill_id_of_another_order_and_a_changed_redelivery_write_nothing(dsn):
    async def body(journal: Journal, pool):
        a = await journal.new_order(make_order(0, quantity=1.0), T0)
        b = await journal.new_order(make_order(1, quantity=1.0), T0)
        for order in (a, b):
            await journal.record(Submitted(order.client_order_id, T0 + 1_000))
        await journal.record(make_fill(a, 0.5, 100.0, "x1"))
        before = await snapshot(pool)
        errors = []
        for event in (
            make_fill(a, 0.6, 100.0, "x2"),  # would overfill
            make_fill(b, 0.5, 100.0, "x1"),  # a's fill id, delivered for b
            make_fill(a, 0.4, 100.0, "x1"),  # a's fill again with another size
            Rejected(a.client_order_id, T0 + 9_000, "too late: it has filled"),
        ):
            with pytest.raises((OrderEventRefused, JournalConflict)) as caught:
                await journal.record(event)
            errors.append(str(caught.value))
        with pytest.raises(UnknownOrder, match="order nope is not in the journal"):
            await journal.record(Submitted("nope", T0))
        return before, await snapshot(pool), errors, a, b

    before, after, errors, a, b = with_journal(dsn, body)
    assert before == after
    assert "would overfill: 0.5 of 1.0 filled" in errors[0]
    assert errors[1] == f"fill drift:x1 for order {b.client_order_id} is journaled for order {a.client_order_id}"
    assert "re-delivered as buy 0.4 @ 100.0" in errors[2] and "journaled as buy 0.5 @ 100.0" in errors[2]
    assert errors[3].startswith(f"order {a.client_order_id}: rejected refused in state partially_filled")


def test_a_transaction_that_fails_midway_leaves_nothing_behind(dsn):
    """The fill's trade_logs line clashes with a line someone else wrote: by then the order,
    its journal line, the fill and the position are written in the transaction; none stays."""

    async def body(journal: Journal, pool):
        order = await journal.new_order(make_order(), T0)
        await journal.record(Submitted(order.client_order_id, T0 + 1_000))
        await journal.record(make_fill(order, 1.0, 100.0, "f1"))
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO trade_logs (pair, trade_type, venue, order_size, price, fill_id) "
                               "VALUES ('drift:SOL-PERP', 'BUY', 'drift', 1, 1, 'drift:f2')")  # fmt: skip
        before = await snapshot(pool)
        with pytest.raises(asyncpg.UniqueViolationError, match="trade_logs_fill_id_key"):
            await journal.record(make_fill(order, 1.0, 101.0, "f2"))
        return before, await snapshot(pool), await journal.order(order.client_order_id)

    before, after, stored = with_journal(dsn, body)
    assert before == after
    assert (stored.state, stored.filled_qty, stored.fill_keys) == (S.PARTIALLY_FILLED, 1.0, frozenset({("drift", "f1")}))


def test_a_connection_lost_midway_is_raised_to_the_caller_and_leaves_nothing(dsn):
    """The journal's server process dies while its transaction waits on the order's row
    lock (held here by another session): the caller gets the connection error, to pause
    trading on; nothing of the event is written."""

    async def body(journal: Journal, pool):
        order = await journal.new_order(make_order(), T0)
        admin = await asyncpg.connect(dsn)
        try:
            holding = admin.transaction()
            await holding.start()
            await admin.execute("SELECT 1 FROM orders WHERE client_order_id = $1 FOR UPDATE", order.client_order_id)
            recording = asyncio.create_task(journal.record(Submitted(order.client_order_id, T0 + 1_000)))
            for _ in range(200):
                pid = await admin.fetchval("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND wait_event_type = 'Lock'")  # fmt: skip
                if pid:
                    break
                await asyncio.sleep(0.01)
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(Exception) as caught:
                await recording
            await holding.rollback()
            state = await admin.fetchval("SELECT state FROM orders WHERE client_order_id = $1", order.client_order_id)
            lines = await admin.fetchval("SELECT count(*) FROM order_events")
        finally:
            await admin.close()
        return caught.value, state, lines

    error, state, lines = with_journal(dsn, body)
    assert is_transient(error), repr(error)
    assert (state, lines) == ("initialized", 1)


def test_concurrent_deliveries_of_one_order_are_serialised_on_its_row(dsn):
    async def body(journal: Journal, pool):
        order = await journal.new_order(make_order(quantity=10.0), T0)
        await journal.record(Submitted(order.client_order_id, T0 + 1_000))
        fills = [make_fill(order, 1.0, 100.0 + i, f"c{i}") for i in range(10)]
        results = await asyncio.gather(*(journal.record(f) for f in fills + fills[:4]))  # four twice, at once
        return results, await journal.order(order.client_order_id), await journal.positions(RUN), await counts(pool)

    results, stored, (position,), rows = with_journal(dsn, body, max_size=6)
    assert sum(r.applied for r in results) == 10
    assert stored.state is S.FILLED and stored.filled_qty == pytest.approx(10.0)
    assert position.size == pytest.approx(10.0) and position.avg_entry_price == pytest.approx(104.5)
    assert rows["fills"] == rows["trade_logs"] == 10


def test_queries_by_run_state_and_in_flight(dsn):
    async def body(journal: Journal, pool):
        await journal.open_run("paper-2", mode="paper", strategy="sol_ema_cross", ts_ns=T0)
        orders = [await journal.new_order(make_order(leg), T0) for leg in range(5)]
        other = await journal.new_order(make_order(0, run_id="paper-2"), T0)
        denied = await journal.new_order(apply(make_order(9), Denied(make_order(9).client_order_id, T0, "max position")), T0)
        ids = [o.client_order_id for o in orders]
        await journal.record(Submitted(ids[1], T0 + 1))
        await journal.record(Submitted(ids[2], T0 + 1_000))
        await journal.record(OutcomeUnknown(ids[2], T0 + 2_000, VenueRequest.SUBMIT, "HTTP 503"))
        await journal.record(Submitted(ids[3], T0 + 1_000))
        await journal.record(make_fill(orders[3], 2.0, 100.0, "q1"))
        await journal.record(Submitted(ids[4], T0 + 1_000))
        await journal.record(Rejected(ids[4], T0 + 2_000, "bad symbol"))
        return (ids, other, denied, await journal.in_flight_orders(RUN), await journal.in_flight_orders(),
                await journal.orders(RUN, [S.SUBMITTED]), await journal.orders(RUN),
                await journal.order_events(denied.client_order_id))  # fmt: skip

    ids, other, denied, in_flight, everywhere, submitted, all_orders, denied_events = with_journal(dsn, body)
    assert {o.client_order_id for o in in_flight} == {ids[0], ids[1], ids[2]}
    assert {o.client_order_id for o in everywhere} == {ids[0], ids[1], ids[2], other.client_order_id}
    (unknown,) = [o for o in in_flight if o.unknown_since_ns is not None]
    assert (unknown.client_order_id, unknown.state, unknown.reason) == (ids[2], S.SUBMITTED, "HTTP 503")
    assert {o.client_order_id for o in submitted} == {ids[1], ids[2]}
    assert len(all_orders) == 6 and denied.state is S.DENIED
    assert [(e.event, e.to_state, e.payload) for e in denied_events] == [("denied", S.DENIED, {"reason": "max position"})]


def test_runs_resume_after_a_restart_and_an_ended_run_takes_no_new_orders(dsn):
    async def body(journal: Journal, pool):
        resumed = await journal.open_run(RUN, mode="paper", strategy="sol_ema_cross", config={"other": 1})
        with pytest.raises(JournalConflict, match="is a paper run of sol_ema_cross, not a live run"):
            await journal.open_run(RUN, mode="live", strategy="sol_ema_cross")
        closed = await journal.close_run(RUN, status="stopped", ts_ns=T0 + 60_000_000)
        again = await journal.close_run(RUN, status="finished")
        with pytest.raises(JournalConflict, match="has stopped: it takes no new orders"):
            await journal.new_order(make_order(), T0)
        with pytest.raises(JournalConflict, match="has stopped; a new run needs a new run id"):
            await journal.open_run(RUN, mode="paper", strategy="sol_ema_cross")
        with pytest.raises(UnknownRun):
            await journal.new_order(make_order(run_id="nobody"), T0)
        with pytest.raises(ValueError, match="run mode must be one of"):
            await journal.open_run("x", mode="backtest", strategy="s")
        return resumed, closed, again, await counts(pool)

    resumed, closed, again, rows = with_journal(dsn, body)
    assert resumed.config == {"fee_bps": 3.5} and resumed.started_ns == T0 and resumed.status == "running"
    assert (closed.status, closed.ended_ns) == ("stopped", T0 + 60_000_000) and again == closed
    assert rows["orders"] == 0


def test_funding_is_paid_once_into_the_position(dsn):
    async def body(journal: Journal, pool):
        order = await journal.new_order(make_order(), T0)
        await journal.record(Submitted(order.client_order_id, T0 + 1))
        await journal.record(make_fill(order, 2.0, 100.0, "f1"))
        paid = [await journal.record_funding(RUN, "sol_ema_cross", "drift:SOL-PERP", T0 + 3_600_000_000_000, 0.03),
                await journal.record_funding(RUN, "sol_ema_cross", "drift:SOL-PERP", T0 + 3_600_000_000_000, 0.03),
                await journal.record_funding(RUN, "sol_ema_cross", "drift:SOL-PERP", T0 + 7_200_000_000_000, -0.01)]  # fmt: skip
        with pytest.raises(JournalConflict, match="re-delivered as 0.5; it is journaled as 0.03"):
            await journal.record_funding(RUN, "sol_ema_cross", "drift:SOL-PERP", T0 + 3_600_000_000_000, 0.5)
        return paid, await journal.positions(RUN)

    paid, (position,) = with_journal(dsn, body)
    assert paid == [True, False, True]
    assert position.funding_paid == pytest.approx(0.02) and position.size == 2.0


def test_risk_events_and_equity_snapshots(dsn):
    async def body(journal: Journal, pool):
        first = await journal.record_risk_event("reject", ts_ns=T0, run_id=RUN, strategy="sol_ema_cross",
                                                rule="max_position", detail={"size": 12.5, "limit": 10})  # fmt: skip
        second = await journal.record_risk_event("cancel_all", ts_ns=T0 + 1_000, rule="kill_switch")
        keyed = [await journal.record_risk_event("stop_moved", ts_ns=T0 + 2_000, run_id=RUN, strategy="sol_ema_cross",
                                                 key="sol_ema_cross:1:mark:0")  # fmt: skip
                 for _ in range(2)]  # the same decision journaled again (after a restart): a no-op
        assert keyed[0] is not None and keyed[1] is None
        with pytest.raises(asyncpg.CheckViolationError):
            await journal.record_risk_event("Not A Kind", ts_ns=T0)
        snapshots = [await journal.record_equity(RUN, "sol_ema_cross", T0, 10_000.0, 9_000.0),
                     await journal.record_equity(RUN, "sol_ema_cross", T0, 10_001.0, 9_000.0)]  # fmt: skip
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT id, run_id, kind, rule, detail FROM risk_events ORDER BY id")
        return first, second, snapshots, rows

    first, second, snapshots, rows = with_journal(dsn, body)
    assert second == first + 1 and snapshots == [True, False]
    assert [(r["run_id"], r["kind"], r["rule"]) for r in rows] == [
        (RUN, "reject", "max_position"), (None, "cancel_all", "kill_switch"), (RUN, "stop_moved", None),
    ]  # fmt: skip


def test_order_events_are_append_only(dsn):
    async def body(journal: Journal, pool):
        await journal.new_order(make_order(), T0)
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.RaiseError, match="order_events is append-only"):
                await conn.execute("UPDATE order_events SET event = 'x'")
            with pytest.raises(asyncpg.RaiseError, match="order_events is append-only"):
                await conn.execute("DELETE FROM order_events")

    with_journal(dsn, body)


def test_a_venue_name_that_trade_logs_cannot_hold_is_refused_before_the_order_exists(dsn):
    async def body(journal: Journal, pool):
        with pytest.raises(ValueError, match="must fit trade_logs"):
            await journal.new_order(make_order(venue="a-venue-name-over-twenty"), T0)

    with_journal(dsn, body)


# --- the state machine ------------------------------------------------------------------------

EVENT_KINDS = ("submit", "deny", "accept", "reject", "fill", "fill_all", "cancel", "cancel_reject", "canceled",
               "expired", "unknown", "modify", "updated", "update_reject")  # fmt: skip
EXPECTED = {
    S.INITIALIZED: ["submit"],
    S.DENIED: ["deny", "submit"],
    S.SUBMITTED: ["accept", "accept", "fill", "fill_all", "reject", "cancel", "unknown", "canceled", "expired", "submit"],
    S.ACCEPTED: ["fill", "fill_all", "cancel", "modify", "modify", "expired", "canceled", "unknown", "accept"],
    S.PARTIALLY_FILLED: ["fill", "fill_all", "cancel", "modify", "modify", "canceled", "expired", "accept"],
    S.PENDING_CANCEL: ["canceled", "cancel_reject", "fill", "fill_all", "unknown", "accept", "cancel", "updated"],
    S.PENDING_UPDATE: ["updated", "update_reject", "fill", "fill_all", "cancel", "unknown", "modify", "canceled"],
    S.CANCELED: ["fill", "fill_all", "cancel_reject", "accept", "canceled"],
    S.EXPIRED: ["fill", "fill_all", "expired", "update_reject"],
    S.FILLED: ["cancel_reject", "fill", "accept", "updated"],
    S.REJECTED: ["reject", "cancel_reject", "unknown", "accept"],
}
REQUEST_AWAITED = {S.SUBMITTED: VenueRequest.SUBMIT, S.PENDING_CANCEL: VenueRequest.CANCEL,
                   S.PENDING_UPDATE: VenueRequest.MODIFY}  # fmt: skip
PRICES = st.sampled_from([95.0, 99.5, 100.0, 100.25, 104.0, 110.0])
TERMINAL_EXITS = {(S.CANCELED, S.FILLED), (S.EXPIRED, S.FILLED)}  # the late fill that completes the order


def reference_position(fills: list[Fill]) -> tuple[float, float, float, float]:
    """Average-cost accounting written out again, independently of cluster.domain.Position:
    (size, average entry, realized PnL, fees) after the fills in this order."""
    size = avg = realized = fees = 0.0
    for f in fills:
        q = f.signed_qty
        fees += f.fee
        if size == 0 or (size > 0) == (q > 0):
            avg = (avg * abs(size) + f.price * abs(q)) / abs(size + q)
            size += q
            continue
        realized += min(abs(q), abs(size)) * (f.price - avg) * (1 if size > 0 else -1)
        if abs(size + q) < 1e-12:
            size = avg = 0.0
        elif (size + q > 0) != (size > 0):
            size, avg = size + q, f.price
        else:
            size += q
    return size, avg, realized, fees


class JournalMachine(RuleBasedStateMachine):
    """Orders of two strategies on two venues, driven by our requests and the venue's
    reports, some held back and delivered later, some delivered twice. The model applies
    each event with ``cluster.orders.apply`` to its own copy; the journal applies it to the
    stored order. They must agree on every outcome, refusals included."""

    sql_runner: asyncio.Runner
    pool: asyncpg.Pool
    runs = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.journal = Journal(self.pool)
        self.run_id = f"hyp-{next(self.runs)}"
        self.model: dict[str, Order] = {}
        self.created: dict[str, Order] = {}
        self.lines: dict[str, int] = {}  # journal lines per order
        self.fills: list[Fill] = []  # applied, in journal order
        self.delivered: list = []
        self.held: list = []
        self.clock = itertools.count(T0 + 1_000, 1_000)
        self.fill_ids = itertools.count()

    def sql(self, coro):
        return self.sql_runner.run(coro)

    @initialize()
    def fresh_run(self) -> None:
        async def go():
            async with self.pool.acquire() as conn:
                await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
            await self.journal.open_run(self.run_id, mode="paper", strategy="hyp")

        self.sql(go())

    @precondition(lambda self: len(self.model) < 8 and sum(not o.state.is_terminal for o in self.model.values()) < 3)
    @rule(strategy=st.sampled_from(["a", "b"]), venue=st.sampled_from(["drift", "binanceusdm"]),
          side=st.sampled_from(Side), shape=st.sampled_from(["limit", "market", "limit", "target"]),
          quantity=st.sampled_from([0.5, 1.0, 2.5, 4.0]), denied=st.integers(0, 5).map(lambda i: i == 5))  # fmt: skip
    def create(self, strategy, venue, side, shape, quantity, denied):
        ts = next(self.clock)
        oid = client_order_id(self.run_id, strategy, ts)
        order = Order(
            client_order_id=oid, run_id=self.run_id, strategy=strategy, venue=venue, instrument=f"{venue}:SOL-PERP",
            side=side, quantity=None if shape == "target" else quantity,
            order_type=OrderType.LIMIT if shape == "limit" else OrderType.MARKET,
            limit_price=100.0 if shape == "limit" else None, target=0.5 if shape == "target" else None,
            decision_ts_ns=ts, route=Route.FIXED,
        )  # fmt: skip
        if denied:
            order = apply(order, Denied(oid, ts, "risk: max position"))
        assert self.sql(self.journal.new_order(order, ts)) == order
        self.model[oid] = self.created[oid] = order
        self.lines[oid] = 1

    def pick(self, data) -> str:
        """An order to drive: mostly one still open (a done one takes few events)."""
        open_ = [oid for oid, o in self.model.items() if not o.state.is_terminal]
        dead = data.draw(st.integers(0, 4)) == 4 or not open_
        return data.draw(st.sampled_from(list(self.model) if dead else open_))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def replay_the_decision(self, data):
        oid = self.pick(data)
        assert self.sql(self.journal.new_order(self.created[oid], next(self.clock))) == self.model[oid]

    @precondition(lambda self: self.model)
    @rule(data=st.data(), hold=st.booleans(), share=st.sampled_from([0.25, 0.5, 1.0]), price=PRICES, done=st.booleans())
    def venue_event(self, data, hold, share, price, done):
        """An event for an order: mostly one its state expects (so that orders get deep
        into their lifecycle), sometimes any at all (which the machine may refuse)."""
        oid = self.pick(data)
        order = self.model[oid]
        any_kind = data.draw(st.integers(0, 4)) == 4
        kind = data.draw(st.sampled_from(EVENT_KINDS if any_kind else EXPECTED[order.state]))
        request = data.draw(st.sampled_from([REQUEST_AWAITED.get(order.state, VenueRequest.SUBMIT)] * 3 + list(VenueRequest)))
        ts = next(self.clock)
        left = order.leaves_qty
        if kind in ("fill", "fill_all"):
            if left is None:  # an unsized target order: the venue says how much and when it is done
                qty, leaves = 2.0 * share, 0.0 if done or kind == "fill_all" else None
            else:
                qty, leaves = (left if kind == "fill_all" or left == 0 else left * share) or share, None
            event = Fill(client_order_id=oid, venue=order.venue, venue_fill_id=f"{order.venue}-{next(self.fill_ids)}",
                         ts_ns=ts, instrument=order.instrument, side=order.side, qty=qty, price=price,
                         fee=round(qty * price * 0.0005, 6), leaves_qty=leaves)  # fmt: skip
        else:
            new_qty = (order.quantity or 1.0) * (0.5 + share)
            event = {
                "submit": lambda: Submitted(oid, ts),
                "deny": lambda: Denied(oid, ts, "risk"),
                "accept": lambda: Accepted(oid, ts, venue_order_id=f"v{oid[-8:]}",
                                           quantity=2.0 if order.is_target and done else None),
                "reject": lambda: Rejected(oid, ts, "insufficient collateral"),
                "cancel": lambda: PendingCancel(oid, ts),
                "cancel_reject": lambda: CancelRejected(oid, ts, "too late to cancel"),
                "canceled": lambda: Canceled(oid, ts, "requested"),
                "expired": lambda: Expired(oid, ts),
                "unknown": lambda: OutcomeUnknown(oid, ts, request, "timeout"),
                "modify": lambda: PendingUpdate(oid, ts, quantity=new_qty),
                "updated": lambda: Updated(oid, ts, quantity=new_qty),
                "update_reject": lambda: UpdateRejected(oid, ts, "price band"),
            }[kind]()  # fmt: skip
        if hold:
            self.held.append(event)
        else:
            self.deliver(event)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def deliver_a_held_event(self, data):
        self.deliver(self.held.pop(data.draw(st.integers(0, len(self.held) - 1))))

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def deliver_again(self, data):
        self.deliver(data.draw(st.sampled_from(self.delivered[-8:])))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), hold=st.booleans(), share=st.sampled_from([0.25, 0.5, 1.0]), price=PRICES, done=st.booleans())
    def another_venue_event(self, data, hold, share, price, done):
        """Venue events are most of what happens to an order: twice the weight."""
        self.venue_event(data, hold, share, price, done)

    def deliver(self, event) -> None:
        before = self.model[event.client_order_id]
        try:
            expected = apply(before, event)
        except OrderEventRefused:
            expected = None
        try:
            got = self.sql(self.journal.record(event))
        except OrderEventRefused:
            assert expected is None, f"the journal refused what the model applied: {event}"
            return
        assert expected is not None, f"the journal applied what the model refused: {event}"
        assert got.order == expected
        assert got.applied == (expected is not before)
        if before.state.is_terminal:
            assert expected.state is before.state or (before.state, expected.state) in TERMINAL_EXITS, (before, event)
            if expected.state is not before.state:
                assert isinstance(event, Fill)
        self.model[event.client_order_id] = expected
        self.delivered.append(event)
        if got.applied:
            self.lines[event.client_order_id] += 1
            if isinstance(event, Fill):
                self.fills.append(event)

    @invariant()
    def the_journal_is_the_model(self):
        async def read():
            async with self.pool.acquire() as conn:
                lines = dict(await conn.fetch("SELECT client_order_id, count(*) FROM order_events GROUP BY 1"))
                logs = await conn.fetch("SELECT fill_id, pair, trade_type, order_size::float8 AS qty FROM trade_logs ORDER BY id")
                keys = await conn.fetchval("SELECT count(DISTINCT (venue, venue_fill_id)) FROM fills")
            return (await self.journal.orders(self.run_id), await self.journal.fills(self.run_id),
                    await self.journal.positions(self.run_id), lines, logs, keys)  # fmt: skip

        orders, fills, positions, lines, logs, distinct = self.sql(read())
        assert {o.client_order_id: o for o in orders} == self.model
        assert fills == self.fills and distinct == len(fills)
        assert lines == self.lines
        assert [(r["fill_id"], r["pair"], r["trade_type"]) for r in logs] == [
            (f"{f.venue}:{f.venue_fill_id}", f.instrument, f.side.value.upper()) for f in fills
        ]
        for order in orders:
            own = [f.qty for f in fills if f.client_order_id == order.client_order_id]
            assert order.filled_qty == pytest.approx(sum(own), rel=1e-12, abs=1e-12)
            if order.quantity is not None:
                assert order.filled_qty <= order.quantity * (1 + 1e-9)
        books = {}
        for f in fills:
            books.setdefault((self.model[f.client_order_id].strategy, f.instrument), []).append(f)
        assert {(p.strategy, p.instrument) for p in positions} == set(books)
        for p in positions:
            book = books[(p.strategy, p.instrument)]
            size, avg, realized, fees = reference_position(book)
            assert p.size == pytest.approx(sum(f.signed_qty for f in book), abs=1e-9)
            assert (p.size, p.avg_entry_price, p.realized_pnl, p.fees_paid) == pytest.approx((size, avg, realized, fees), abs=1e-9)
            # whatever the method, realized + unrealized is the cash the fills moved plus the position's value
            assert p.realized_pnl - p.size * p.avg_entry_price == pytest.approx(-sum(f.signed_qty * f.price for f in book), abs=1e-6)


def test_journal_state_machine(dsn):
    async def make_pool():
        return await asyncpg.create_pool(dsn, min_size=1, max_size=1)

    with asyncio.Runner() as runner:  # one loop and one pool for every example
        JournalMachine.sql_runner, JournalMachine.pool = runner, runner.run(make_pool())
        try:
            run_state_machine_as_test(
                JournalMachine,
                settings=settings(max_examples=40, stateful_step_count=60, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),  # fmt: skip
            )
        finally:
            runner.run(JournalMachine.pool.close())
