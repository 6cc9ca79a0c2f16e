"""The trading journal in PostgreSQL: runs, orders and every change of them, fills,
positions, funding payments, risk decisions and equity snapshots.

An order change is journaled before anyone acts on it: ``record`` locks the order's row,
applies the event to the *stored* order with the lifecycle in ``cluster.orders`` (never to
a caller's copy, which may be stale), and writes the new order, its journal line and, for
a fill, the fill, the position and the whitepaper's ``trade_logs`` line, all in one
transaction. A refusal (``OrderEventRefused``), a conflict or any failure of that
transaction leaves nothing written. A lost connection raises asyncpg's or the OS's error
as it is: the caller decides what to do (pause trading) and nothing here retries, since a
retried write whose commit may have happened is the caller's question to ask
(``order``, ``order_events``).

Times are the events' own (the venue's for its reports, the caller's clock for ours, so
paper trading on a replay journals replay time), kept to PostgreSQL's microsecond.

One statement per event, when it can. A journal remembers each order as it last wrote or
read it, with the order's ``version`` (raised by every change), and each position's
numbers. An event on a remembered order is applied to that copy and written in one
statement (the order's update, its journal line and, for a fill, the fill, the position and
the trade log line), conditional on the stored version and position still being the ones
remembered: the stored order is still what the event is applied to. When they are not
(another writer, a transaction that did not commit), the statement writes nothing and the
event takes the path above (lock, read, apply, write). What a transaction wrote is
remembered only once it has committed; a transaction that failed, or whose commit is
unknown, makes the journal forget every order and position it touched.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from cluster.domain import Fill, FillReason, Liquidity, OrderType, Position, Side, TimeInForce
from cluster.orders import (
    OPEN_STATES,
    Order,
    OrderEvent,
    OrderState,
    Route,
    apply,
    event_fields,
    event_name,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_VENUE_WIDTH, _PAIR_WIDTH = 20, 50  # trade_logs.venue and .pair: every fill must fit there
RUN_MODES = ("paper", "live")
RUN_END_STATUSES = ("finished", "failed", "stopped")


def _ts(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _ns(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // _US * 1000


class UnknownOrder(LookupError):
    def __init__(self, client_order_id: str) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"order {client_order_id} is not in the journal")


class UnknownRun(LookupError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"trading run {run_id} is not in the journal")


class JournalConflict(ValueError):
    """What was asked contradicts what is stored under the same key (a fill id already
    journaled for another order or with other numbers, a run reopened as another mode)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    order: Order  # as stored after the event
    applied: bool  # False: a no-op (a re-delivered fill, a stale answer); nothing was written


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    client_order_id: str
    event: str
    from_state: OrderState | None  # None: the order's creation
    to_state: OrderState
    payload: dict[str, Any]
    ts_ns: int


@dataclass(frozen=True, slots=True)
class TradingRun:
    run_id: str
    mode: str
    strategy: str
    status: str
    config: dict[str, Any]
    started_ns: int
    ended_ns: int | None


_ORDER_COLUMNS = """
    o.client_order_id, o.run_id, o.strategy, o.venue, o.instrument, o.side, o.quantity, o.order_type,
    o.limit_price, o.time_in_force, o.reduce_only, o.target, o.decision_ts, o.route, o.state,
    o.filled_qty, o.avg_px, o.fees, o.venue_order_id, o.reason, o.accepted_at, o.unknown_since,
    o.version, ARRAY(SELECT f.venue_fill_id FROM fills f WHERE f.client_order_id = o.client_order_id) AS fill_ids
"""

PositionKey = tuple[str, str, str, str]  # run, strategy, instrument, venue
PositionNumbers = tuple[float, float, float, float]  # size, avg entry price, realized PnL, fees paid


def _order_changes(order: Order) -> tuple:
    """``$1``-``$11`` of an order's update: what an event can change."""
    return (
        order.client_order_id, order.quantity, order.limit_price, order.state.value, order.filled_qty, order.avg_px,
        order.fees, order.venue_order_id, order.reason, None if order.accepted_ns is None else _ts(order.accepted_ns),
        None if order.unknown_since_ns is None else _ts(order.unknown_since_ns),
    )  # fmt: skip


# A new order and its creation line, if its run is running; the run's status either way.
_NEW_ORDER = """
WITH r AS (SELECT status FROM trading_runs WHERE run_id = $2 FOR SHARE),
i AS (
    INSERT INTO orders (client_order_id, run_id, strategy, venue, instrument, side, quantity, order_type,
                        limit_price, time_in_force, reduce_only, target, decision_ts, route, state, reason)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 FROM r WHERE r.status = 'running'
    ON CONFLICT (client_order_id) DO NOTHING RETURNING client_order_id
),
e AS (
    INSERT INTO order_events (client_order_id, event, from_state, to_state, payload, ts)
    SELECT client_order_id, $15, NULL, $15, $17::jsonb, $18 FROM i RETURNING seq
)
SELECT (SELECT status FROM r) AS status, (SELECT count(*) FROM e) AS created
"""

_UPDATE_IF_VERSION = """
    UPDATE orders SET quantity = $2, limit_price = $3, state = $4, filled_qty = $5, avg_px = $6, fees = $7,
        venue_order_id = $8, reason = $9, accepted_at = $10, unknown_since = $11, version = version + 1,
        updated_at = now()
    WHERE client_order_id = $1 AND version = $12
"""

# A remembered order's change and its journal line, if the order is still at that version.
_CHANGE = f"""
WITH u AS ({_UPDATE_IF_VERSION} RETURNING client_order_id)
INSERT INTO order_events (client_order_id, event, from_state, to_state, payload, ts)
SELECT client_order_id, $13, $14, $15, $16::jsonb, $17 FROM u RETURNING seq
"""

# A remembered order's fill: the order's change ($1-$17 as in _CHANGE), the fill ($18-$29),
# the position ($30-$33 its key, $34 true when it has no row yet, $35-$38 the remembered
# numbers, $39-$42 the new ones) and the trade log line ($43-$44), if the order is still at
# its version and the position still has the remembered numbers.
_FILL = f"""
WITH u AS (
    {_UPDATE_IF_VERSION}
    AND CASE WHEN $34 THEN NOT EXISTS (
            SELECT 1 FROM positions p WHERE p.run_id = $30 AND p.strategy = $31 AND p.instrument = $32 AND p.venue = $33)
        ELSE coalesce((
            SELECT p.size = $35 AND p.avg_entry_price = $36 AND p.realized_pnl = $37 AND p.fees_paid = $38
            FROM positions p WHERE p.run_id = $30 AND p.strategy = $31 AND p.instrument = $32 AND p.venue = $33), false)
        END
    RETURNING client_order_id
),
e AS (
    INSERT INTO order_events (client_order_id, event, from_state, to_state, payload, ts)
    SELECT client_order_id, $13, $14, $15, $16::jsonb, $17 FROM u RETURNING seq, client_order_id
),
f AS (
    INSERT INTO fills (venue, venue_fill_id, client_order_id, event_seq, run_id, strategy, instrument, side,
                       qty, price, fee, liquidity, reason, leaves_qty, ts)
    SELECT $18, $19, e.client_order_id, e.seq, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $17 FROM e
    ON CONFLICT (venue, venue_fill_id) DO NOTHING RETURNING event_seq
),
p AS (
    INSERT INTO positions (run_id, strategy, instrument, venue, size, avg_entry_price, realized_pnl, fees_paid)
    SELECT $30, $31, $32, $33, $39, $40, $41, $42 FROM f
    ON CONFLICT (run_id, strategy, instrument, venue) DO UPDATE SET size = EXCLUDED.size,
        avg_entry_price = EXCLUDED.avg_entry_price, realized_pnl = EXCLUDED.realized_pnl,
        fees_paid = EXCLUDED.fees_paid, updated_at = now()
    WHERE positions.size = $35 AND positions.avg_entry_price = $36 AND positions.realized_pnl = $37
      AND positions.fees_paid = $38
    RETURNING 1
),
t AS (
    INSERT INTO trade_logs (pair, trade_type, venue, order_size, price, "timestamp", fill_id)
    SELECT $22, $43, $18, $24::float8, $25::float8, $17, $44 FROM f RETURNING 1
)
SELECT (SELECT seq FROM e) AS seq, (SELECT count(*) FROM f) AS filled, (SELECT count(*) FROM p) AS positioned
"""


def _order(row: asyncpg.Record) -> Order:
    return Order(
        client_order_id=row["client_order_id"],
        run_id=row["run_id"],
        strategy=row["strategy"],
        venue=row["venue"],
        instrument=row["instrument"],
        side=Side(row["side"]),
        quantity=row["quantity"],
        order_type=OrderType(row["order_type"]),
        limit_price=row["limit_price"],
        time_in_force=TimeInForce(row["time_in_force"]),
        reduce_only=row["reduce_only"],
        target=row["target"],
        decision_ts_ns=_ns(row["decision_ts"]),
        route=Route(row["route"]),
        state=OrderState(row["state"]),
        filled_qty=row["filled_qty"],
        avg_px=row["avg_px"],
        fees=row["fees"],
        venue_order_id=row["venue_order_id"],
        reason=row["reason"],
        accepted_ns=_ns(row["accepted_at"]),
        unknown_since_ns=_ns(row["unknown_since"]),
        fill_keys=frozenset((row["venue"], fill_id) for fill_id in row["fill_ids"]),
    )


def _fill(row: asyncpg.Record) -> Fill:
    return Fill(
        client_order_id=row["client_order_id"],
        venue=row["venue"],
        venue_fill_id=row["venue_fill_id"],
        ts_ns=_ns(row["ts"]),
        instrument=row["instrument"],
        side=Side(row["side"]),
        qty=row["qty"],
        price=row["price"],
        fee=row["fee"],
        liquidity=Liquidity(row["liquidity"]),
        reason=FillReason(row["reason"]),
        leaves_qty=row["leaves_qty"],
    )


def _run(row: asyncpg.Record) -> TradingRun:
    return TradingRun(
        run_id=row["run_id"],
        mode=row["mode"],
        strategy=row["strategy"],
        status=row["status"],
        config=json.loads(row["config"]),
        started_ns=_ns(row["started_at"]),
        ended_ns=_ns(row["ended_at"]),
    )


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, allow_nan=False, sort_keys=True)


def _us(ns: int | None) -> int | None:
    return None if ns is None else _ns(_ts(ns))


def _as_stored(order: Order) -> Order:
    """``order`` as reading it back gives it: its times at PostgreSQL's microsecond."""
    return replace(order, decision_ts_ns=_us(order.decision_ts_ns), accepted_ns=_us(order.accepted_ns),
                   unknown_since_ns=_us(order.unknown_since_ns))  # fmt: skip


class _Memory:
    """What a journal remembers of the orders and positions it wrote or read (module doc)."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[Order, int]] = {}  # client order id -> (order, version)
        self.positions: dict[PositionKey, PositionNumbers | None] = {}  # None: no row yet

    def forget(self, orders: Iterable[str], positions: Iterable[PositionKey]) -> None:
        for cid in orders:
            self.orders.pop(cid, None)
        for key in positions:
            self.positions.pop(key, None)


class _Pending:
    """A transaction's writes, remembered once it commits."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[Order, int] | None] = {}  # None: forget it
        self.positions: dict[PositionKey, PositionNumbers | None] = {}

    def commit_to(self, memory: _Memory) -> None:
        for cid, entry in self.orders.items():
            if entry is None or entry[0].state.is_terminal:
                memory.orders.pop(cid, None)  # a done order is rarely written again: read it then
            else:
                memory.orders[cid] = entry
        memory.positions.update(self.positions)


class Journal:
    """The journal over an asyncpg pool (the caller makes and closes it).

    Each write is its own transaction, unless made through ``batch()``: then the writes
    made through the journal it yields commit together, or none of them (a refusal, a
    conflict or a lost connection rolls back the lot), in one commit instead of one each."""

    def __init__(self, pool: asyncpg.Pool, _bound: asyncpg.Connection | None = None, _memory: _Memory | None = None,
                 _pending: _Pending | None = None) -> None:  # fmt: skip
        self._pool = pool
        self._bound = _bound  # the batch's connection, inside its transaction
        self._memory = _memory if _memory is not None else _Memory()
        self._pending = _pending  # the batch's writes, remembered when it commits

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Journal]:
        """``async with journal.batch() as j: await j.record(a); await j.record(b)``."""
        if self._bound is not None:
            yield self
            return
        pending = _Pending()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield Journal(self._pool, conn, self._memory, pending)
        except BaseException:
            self._memory.forget(pending.orders, pending.positions)  # rolled back, or its commit unknown
            raise
        pending.commit_to(self._memory)

    def _remembered(self, client_order_id: str) -> tuple[Order, int] | None:
        if self._pending is not None and client_order_id in self._pending.orders:
            return self._pending.orders[client_order_id]
        return self._memory.orders.get(client_order_id)

    def _remembered_position(self, key: PositionKey) -> tuple[bool, PositionNumbers | None]:
        if self._pending is not None and key in self._pending.positions:
            return True, self._pending.positions[key]
        if key in self._memory.positions:
            return True, self._memory.positions[key]
        return False, None

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        if self._bound is not None:
            yield self._bound
        else:
            async with self._pool.acquire() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.Connection]:
        if self._bound is not None:
            yield self._bound  # the batch's transaction holds it
        else:
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn

    # --- runs ---------------------------------------------------------------------------

    async def open_run(
        self, run_id: str, *, mode: str, strategy: str, config: dict[str, Any] | None = None, ts_ns: int | None = None
    ) -> TradingRun:
        """Start a run, or resume it (after a restart) if it is still running under the
        same mode and strategy; a run that ended stays ended."""
        if mode not in RUN_MODES:
            raise ValueError(f"run mode must be one of {RUN_MODES}, got {mode!r}")
        async with self._conn() as conn:
            row = await conn.fetchrow(
                """
                INSERT INTO trading_runs (run_id, mode, strategy, config, started_at)
                VALUES ($1, $2, $3, $4::jsonb, coalesce($5, now()))
                ON CONFLICT (run_id) DO NOTHING RETURNING *
                """,
                run_id, mode, strategy, _json(config or {}), None if ts_ns is None else _ts(ts_ns),
            )  # fmt: skip
            if row is None:
                row = await conn.fetchrow("SELECT * FROM trading_runs WHERE run_id = $1", run_id)
        run = _run(row)
        if (run.mode, run.strategy) != (mode, strategy):
            raise JournalConflict(f"run {run_id} is a {run.mode} run of {run.strategy}, not a {mode} run of {strategy}")
        if run.status != "running":
            raise JournalConflict(f"run {run_id} has {run.status}; a new run needs a new run id")
        return run

    async def close_run(self, run_id: str, *, status: str = "finished", ts_ns: int | None = None) -> TradingRun:
        """End a run. Orders still in flight stay as they are (``in_flight_orders``);
        closing an ended run again changes nothing."""
        if status not in RUN_END_STATUSES:
            raise ValueError(f"a run ends as one of {RUN_END_STATUSES}, got {status!r}")
        async with self._conn() as conn:
            row = await conn.fetchrow(
                """
                UPDATE trading_runs SET status = $2, ended_at = coalesce($3, now())
                WHERE run_id = $1 AND status = 'running' RETURNING *
                """,
                run_id, status, None if ts_ns is None else _ts(ts_ns),
            )  # fmt: skip
            if row is None:
                row = await conn.fetchrow("SELECT * FROM trading_runs WHERE run_id = $1", run_id)
        if row is None:
            raise UnknownRun(run_id)
        return _run(row)

    async def run(self, run_id: str) -> TradingRun | None:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT * FROM trading_runs WHERE run_id = $1", run_id)
        return None if row is None else _run(row)

    async def runs(self, limit: int = 50) -> list[tuple[TradingRun, int, float | None]]:
        """Paper and live runs, newest first, each with its fill count and last equity."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                """
                SELECT r.*, (SELECT count(*) FROM fills f WHERE f.run_id = r.run_id) AS n_fills,
                       (SELECT sum(e.equity) FROM equity_snapshots e
                        WHERE e.run_id = r.run_id AND e.ts = (SELECT max(ts) FROM equity_snapshots WHERE run_id = r.run_id)
                       ) AS equity
                FROM trading_runs r ORDER BY r.started_at DESC, r.run_id LIMIT $1
                """,
                limit,
            )
        return [(_run(r), r["n_fills"], r["equity"]) for r in rows]

    async def latest_run(self, mode: str | None = None) -> TradingRun | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM trading_runs WHERE $1::text IS NULL OR mode = $1 ORDER BY started_at DESC, run_id LIMIT 1",
                mode,
            )
        return None if row is None else _run(row)

    async def latest_risk_event(self, run_id: str, kind: str) -> dict[str, Any] | None:
        """The detail of a run's latest risk event of ``kind`` (e.g. its ``allocation`` summary)."""
        async with self._conn() as conn:
            detail = await conn.fetchval(
                "SELECT detail FROM risk_events WHERE run_id = $1 AND kind = $2 ORDER BY ts DESC, id DESC LIMIT 1",
                run_id, kind,
            )  # fmt: skip
        return None if detail is None else json.loads(detail)

    async def risk_event_counts(self, run_id: str) -> dict[str, int]:
        """A run's journaled Risk Monitor decisions, by kind."""
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT kind, count(*) AS n FROM risk_events WHERE run_id = $1 GROUP BY kind", run_id)
        return {r["kind"]: r["n"] for r in rows}

    # --- orders -------------------------------------------------------------------------

    async def new_order(self, order: Order, ts_ns: int) -> Order:
        """Journal a new order, INITIALIZED or DENIED (the risk check refused it), with its
        creation line. The same client order id again (a decision replayed after a crash)
        returns the stored order and writes nothing: never a second order."""
        if order.state not in (OrderState.INITIALIZED, OrderState.DENIED) or order.filled_qty or order.fill_keys:
            raise ValueError(f"order {order.client_order_id}: a new order is initialized or denied, not {order.state.value}")
        if len(order.venue) > _VENUE_WIDTH or len(order.instrument) > _PAIR_WIDTH:
            raise ValueError(
                f"order {order.client_order_id}: venue and instrument must fit trade_logs "
                f"({_VENUE_WIDTH} and {_PAIR_WIDTH} characters): {order.venue!r}, {order.instrument!r}"
            )
        if self._bound is None:
            async with self.batch() as j:
                return await j.new_order(order, ts_ns)
        conn = self._bound
        payload = {"reason": order.reason} if order.state is OrderState.DENIED else {}
        row = await conn.fetchrow(
            _NEW_ORDER,
            order.client_order_id, order.run_id, order.strategy, order.venue, order.instrument,
            order.side.value, order.quantity, order.order_type.value, order.limit_price,
            order.time_in_force.value, order.reduce_only, order.target, _ts(order.decision_ts_ns),
            order.route.value, order.state.value, order.reason, _json(payload), _ts(ts_ns),
        )  # fmt: skip
        if row["status"] is None:
            raise UnknownRun(order.run_id)
        if row["created"]:
            stored = _as_stored(order)
            self._remember_order(stored, 1)
            return stored
        try:
            stored, version = await self._stored_row(conn, order.client_order_id)
        except UnknownOrder:
            raise JournalConflict(f"run {order.run_id} has {row['status']}: it takes no new orders") from None
        self._remember_order(stored, version)
        return stored

    async def record(self, event: OrderEvent) -> Recorded:
        """Apply one event to the stored order and journal the result (see the module)."""
        remembered = self._remembered(event.client_order_id)
        if remembered is not None:
            order, version = remembered
            new = apply(order, event)
            if new is not order:
                new = _as_stored(new)
                if not isinstance(event, Fill):
                    if await self._write_change(order, version, new, event):
                        return Recorded(new, applied=True)
                elif self._bound is not None:
                    if await self._write_fill(order, version, new, event):
                        return Recorded(new, applied=True)
                else:
                    async with self.batch() as j:  # a fill's writes commit together or not at all
                        return await j.record(event)
            self._forget_order(event.client_order_id)  # not what is stored, or a no-op to check: read it
        if self._bound is None:
            async with self.batch() as j:
                return await j.record(event)
        return await self._record_read(event)

    async def _record_read(self, event: OrderEvent) -> Recorded:
        conn = self._bound
        order, version = await self._stored_row(conn, event.client_order_id, lock=True)
        new = apply(order, event)
        if new is order:
            self._remember_order(order, version)
            if isinstance(event, Fill):
                await self._check_redelivered(conn, event)
            return Recorded(order, applied=False)
        new = _as_stored(new)
        version = await conn.fetchval(
            """
            UPDATE orders SET quantity = $2, limit_price = $3, state = $4, filled_qty = $5, avg_px = $6,
                fees = $7, venue_order_id = $8, reason = $9, accepted_at = $10, unknown_since = $11,
                version = version + 1, updated_at = now()
            WHERE client_order_id = $1 RETURNING version
            """,
            *_order_changes(new),
        )
        seq = await self._append(
            conn, new.client_order_id, event_name(event), order.state, new.state, event_fields(event), event.ts_ns
        )
        if isinstance(event, Fill):
            await self._journal_fill(conn, new, event, seq)
        self._remember_order(new, version)
        return Recorded(new, applied=True)

    async def _write_change(self, order: Order, version: int, new: Order, event: OrderEvent) -> bool:
        """A change of a remembered order in one statement; False (nothing written) when
        the stored order is no longer the remembered one."""
        args = (*_order_changes(new), version, event_name(event), order.state.value, new.state.value,
                _json(event_fields(event)), _ts(event.ts_ns))  # fmt: skip
        if self._bound is not None:
            seq = await self._bound.fetchval(_CHANGE, *args)
        else:
            try:
                async with self._pool.acquire() as conn:
                    seq = await conn.fetchval(_CHANGE, *args)  # one statement: atomic without a transaction
            except BaseException:
                self._memory.forget([order.client_order_id], ())  # written or not: unknown
                raise
        if seq is None:
            return False
        self._remember_order(new, version + 1)
        return True

    async def _write_fill(self, order: Order, version: int, new: Order, fill: Fill) -> bool:
        """A fill of a remembered order, with its position and trade log line, in one
        statement inside the batch; False (nothing written) when the stored order or
        position is no longer the remembered one."""
        key = (new.run_id, new.strategy, new.instrument, new.venue)
        known, numbers = self._remembered_position(key)
        if not known:
            return False
        size, avg, realized, fees = numbers if numbers is not None else (0.0, 0.0, 0.0, 0.0)
        position = Position(new.instrument, size, avg, realized, fees, strategy=new.strategy)
        position.apply_fill(fill)
        after = (position.size, position.avg_entry_price, position.realized_pnl, position.fees_paid)
        before = numbers if numbers is not None else (None, None, None, None)
        row = await self._bound.fetchrow(
            _FILL,
            *_order_changes(new), version, event_name(fill), order.state.value, new.state.value,
            _json(event_fields(fill)), _ts(fill.ts_ns),
            fill.venue, fill.venue_fill_id, new.run_id, new.strategy, new.instrument, fill.side.value, fill.qty,
            fill.price, fill.fee, fill.liquidity.value, fill.reason.value, fill.leaves_qty,
            *key, numbers is None, *before, *after, fill.side.value.upper(), f"{fill.venue}:{fill.venue_fill_id}",
        )  # fmt: skip
        if row["seq"] is None:
            self._forget_position(key)
            return False
        if not row["filled"]:
            owner = await self._bound.fetchval(
                "SELECT client_order_id FROM fills WHERE venue = $1 AND venue_fill_id = $2", fill.venue, fill.venue_fill_id
            )
            raise JournalConflict(
                f"fill {fill.venue}:{fill.venue_fill_id} for order {new.client_order_id} is journaled for order {owner}"
            )
        if not row["positioned"]:
            raise JournalConflict(f"position {key} changed under the journal while it wrote fill {fill.venue_fill_id}")
        self._remember_order(new, version + 1)
        self._pending.positions[key] = after
        return True

    def _remember_order(self, order: Order, version: int) -> None:
        if self._pending is not None:
            self._pending.orders[order.client_order_id] = (order, version)
        elif order.state.is_terminal:
            self._memory.orders.pop(order.client_order_id, None)
        else:
            self._memory.orders[order.client_order_id] = (order, version)

    def _forget_order(self, client_order_id: str) -> None:
        self._memory.orders.pop(client_order_id, None)
        if self._pending is not None:
            self._pending.orders[client_order_id] = None

    def _forget_position(self, key: PositionKey) -> None:
        self._memory.positions.pop(key, None)
        if self._pending is not None:
            self._pending.positions.pop(key, None)

    async def _stored(self, conn: asyncpg.Connection, client_order_id: str, lock: bool = False) -> Order:
        return (await self._stored_row(conn, client_order_id, lock))[0]

    async def _stored_row(self, conn: asyncpg.Connection, client_order_id: str, lock: bool = False) -> tuple[Order, int]:
        if lock:
            # Its own statement: one that locks and reads together sees the row as the lock's
            # holder left it but its fills as of before the wait (READ COMMITTED takes the
            # snapshot when a statement starts), and a fill committed meanwhile would be missed.
            await conn.execute("SELECT 1 FROM orders WHERE client_order_id = $1 FOR UPDATE", client_order_id)
        row = await conn.fetchrow(f"SELECT {_ORDER_COLUMNS} FROM orders o WHERE o.client_order_id = $1", client_order_id)
        if row is None:
            raise UnknownOrder(client_order_id)
        return _order(row), row["version"]

    @staticmethod
    async def _append(
        conn: asyncpg.Connection, client_order_id: str, event: str, from_state: OrderState | None,
        to_state: OrderState, payload: dict[str, Any], ts_ns: int,
    ) -> int:  # fmt: skip
        return await conn.fetchval(
            """
            INSERT INTO order_events (client_order_id, event, from_state, to_state, payload, ts)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING seq
            """,
            client_order_id, event, None if from_state is None else from_state.value, to_state.value,
            _json(payload), _ts(ts_ns),
        )  # fmt: skip

    async def _check_redelivered(self, conn: asyncpg.Connection, fill: Fill) -> None:
        stored = await conn.fetchrow(
            "SELECT side, qty, price, fee FROM fills WHERE venue = $1 AND venue_fill_id = $2",
            fill.venue, fill.venue_fill_id,
        )  # fmt: skip
        side, qty, price, fee = stored
        if (side, qty, price, fee) != (fill.side.value, fill.qty, fill.price, fill.fee):
            raise JournalConflict(
                f"fill {fill.venue}:{fill.venue_fill_id} was re-delivered as {fill.side.value} {fill.qty} @ {fill.price} "
                f"fee {fill.fee}; it is journaled as {side} {qty} @ {price} fee {fee}"
            )

    async def _journal_fill(self, conn: asyncpg.Connection, order: Order, fill: Fill, seq: int) -> None:
        inserted = await conn.fetchval(
            """
            INSERT INTO fills (venue, venue_fill_id, client_order_id, event_seq, run_id, strategy, instrument, side,
                               qty, price, fee, liquidity, reason, leaves_qty, ts)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            ON CONFLICT (venue, venue_fill_id) DO NOTHING RETURNING true
            """,
            fill.venue, fill.venue_fill_id, order.client_order_id, seq, order.run_id, order.strategy, order.instrument,
            fill.side.value, fill.qty, fill.price, fill.fee, fill.liquidity.value, fill.reason.value, fill.leaves_qty,
            _ts(fill.ts_ns),
        )  # fmt: skip
        if not inserted:
            owner = await conn.fetchval(
                "SELECT client_order_id FROM fills WHERE venue = $1 AND venue_fill_id = $2", fill.venue, fill.venue_fill_id
            )
            raise JournalConflict(
                f"fill {fill.venue}:{fill.venue_fill_id} for order {order.client_order_id} is journaled for order {owner}"
            )
        key = (order.run_id, order.strategy, order.instrument, order.venue)
        await conn.execute(
            "INSERT INTO positions (run_id, strategy, instrument, venue) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            *key,
        )
        row = await conn.fetchrow(
            """
            SELECT size, avg_entry_price, realized_pnl, fees_paid, funding_paid FROM positions
            WHERE run_id = $1 AND strategy = $2 AND instrument = $3 AND venue = $4 FOR UPDATE
            """,
            *key,
        )
        position = Position(order.instrument, **dict(row), strategy=order.strategy)
        position.apply_fill(fill)
        await conn.execute(
            """
            UPDATE positions SET size = $5, avg_entry_price = $6, realized_pnl = $7, fees_paid = $8, updated_at = now()
            WHERE run_id = $1 AND strategy = $2 AND instrument = $3 AND venue = $4
            """,
            *key, position.size, position.avg_entry_price, position.realized_pnl, position.fees_paid,
        )  # fmt: skip
        self._pending.positions[key] = (position.size, position.avg_entry_price, position.realized_pnl, position.fees_paid)
        await conn.execute(
            """
            INSERT INTO trade_logs (pair, trade_type, venue, order_size, price, "timestamp", fill_id)
            VALUES ($1, $2, $3, $4::float8, $5::float8, $6, $7)
            """,
            order.instrument, fill.side.value.upper(), fill.venue, fill.qty, fill.price, _ts(fill.ts_ns),
            f"{fill.venue}:{fill.venue_fill_id}",
        )  # fmt: skip

    # --- funding, risk, equity ----------------------------------------------------------

    async def record_funding(self, run_id: str, strategy: str, instrument: str, ts_ns: int, amount: float) -> bool:
        """One funding settlement paid (> 0) or received (< 0) on a position; False when it
        was journaled already (re-delivered), with the same amount."""
        venue = instrument.partition(":")[0]
        async with self._tx() as conn:
            inserted = await conn.fetchval(
                """
                INSERT INTO funding_payments (run_id, strategy, instrument, venue, ts, amount)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true
                """,
                run_id, strategy, instrument, venue, _ts(ts_ns), amount,
            )  # fmt: skip
            if not inserted:
                stored = await conn.fetchval(
                    """
                    SELECT amount FROM funding_payments
                    WHERE run_id = $1 AND strategy = $2 AND instrument = $3 AND venue = $4 AND ts = $5
                    """,
                    run_id, strategy, instrument, venue, _ts(ts_ns),
                )  # fmt: skip
                if stored != amount:
                    raise JournalConflict(
                        f"funding of {strategy} on {instrument} at {_ts(ts_ns).isoformat()} re-delivered as {amount}; "
                        f"it is journaled as {stored}"
                    )
                return False
            await conn.execute(
                """
                INSERT INTO positions (run_id, strategy, instrument, venue, funding_paid) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (run_id, strategy, instrument, venue)
                DO UPDATE SET funding_paid = positions.funding_paid + EXCLUDED.funding_paid, updated_at = now()
                """,
                run_id, strategy, instrument, venue, amount,
            )  # fmt: skip
            return True

    async def record_risk_event(
        self, kind: str, *, ts_ns: int, run_id: str | None = None, strategy: str | None = None,
        rule: str | None = None, detail: dict[str, Any] | None = None, key: str | None = None,
    ) -> int | None:  # fmt: skip
        """A Risk Monitor decision (accept, reject, auto_close, state_change, cancel_all,
        ...); returns its id. ``key``: the decision's natural key within the run (a monitor's
        event on a bar): the same key again is a no-op and returns None."""
        async with self._conn() as conn:
            return await conn.fetchval(
                """
                INSERT INTO risk_events (ts, run_id, strategy, kind, rule, detail, event_key)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
                ON CONFLICT (run_id, event_key) WHERE event_key IS NOT NULL DO NOTHING RETURNING id
                """,
                _ts(ts_ns), run_id, strategy, kind, rule, _json(detail or {}), key,
            )  # fmt: skip

    async def record_equity(self, run_id: str, strategy: str, ts_ns: int, equity: float, cash: float) -> bool:
        """One equity snapshot; False when one is already journaled for that time."""
        async with self._conn() as conn:
            return bool(
                await conn.fetchval(
                    """
                    INSERT INTO equity_snapshots (run_id, strategy, ts, equity, cash) VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT DO NOTHING RETURNING true
                    """,
                    run_id, strategy, _ts(ts_ns), equity, cash,
                )  # fmt: skip
            )

    # --- queries ------------------------------------------------------------------------

    async def last_equity_ns(self, run_id: str, strategy: str) -> int | None:
        """The time of a strategy's last equity snapshot: a paper step is journaled whole
        (``Journal.batch``), so every step up to it is in the journal."""
        async with self._conn() as conn:
            ts = await conn.fetchval(
                "SELECT max(ts) FROM equity_snapshots WHERE run_id = $1 AND strategy = $2", run_id, strategy
            )
        return _ns(ts)

    async def order(self, client_order_id: str) -> Order | None:
        async with self._conn() as conn:
            try:
                return await self._stored(conn, client_order_id)
            except UnknownOrder:
                return None

    async def orders(self, run_id: str, states: Iterable[OrderState] | None = None) -> list[Order]:
        """A run's orders (in ``states``, if given), oldest first."""
        wanted = None if states is None else [OrderState(s).value for s in states]
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""
                SELECT {_ORDER_COLUMNS} FROM orders o
                WHERE o.run_id = $1 AND ($2::text[] IS NULL OR o.state = ANY($2::text[]))
                ORDER BY o.created_at, o.client_order_id
                """,
                run_id, wanted,
            )  # fmt: skip
        return [_order(r) for r in rows]

    async def in_flight_orders(self, run_id: str | None = None) -> list[Order]:
        """Orders not yet done: INITIALIZED ones (made, not sent or denied: after a crash
        the server submits or denies them), those at the venue, pending a cancel or a
        modify, and those whose outcome is unknown (``unknown_since_ns`` set), of one run
        or of every run."""
        states = [s.value for s in OPEN_STATES]
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"""
                SELECT {_ORDER_COLUMNS} FROM orders o
                WHERE ($1::text IS NULL OR o.run_id = $1) AND o.state = ANY($2::text[])
                ORDER BY o.created_at, o.client_order_id
                """,
                run_id, states,
            )  # fmt: skip
        return [_order(r) for r in rows]

    async def fills(self, run_id: str) -> list[Fill]:
        """A run's fills in the order they were journaled (the order positions saw them)."""
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM fills WHERE run_id = $1 ORDER BY event_seq", run_id)
        return [_fill(r) for r in rows]

    async def positions(self, run_id: str) -> list[Position]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                """
                SELECT strategy, instrument, size, avg_entry_price, realized_pnl, fees_paid, funding_paid
                FROM positions WHERE run_id = $1 ORDER BY strategy, instrument
                """,
                run_id,
            )
        return [Position(**dict(r)) for r in rows]

    async def order_events(self, client_order_id: str) -> list[JournalEntry]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM order_events WHERE client_order_id = $1 ORDER BY seq", client_order_id)
        return [
            JournalEntry(
                seq=r["seq"],
                client_order_id=r["client_order_id"],
                event=r["event"],
                from_state=None if r["from_state"] is None else OrderState(r["from_state"]),
                to_state=OrderState(r["to_state"]),
                payload=json.loads(r["payload"]),
                ts_ns=_ns(r["ts"]),
            )
            for r in rows
        ]
