"""The Execution Server's order flow, without Ray: an approved intent to a routed,
journaled order at a venue client, the venue's answers and fills into the journal, and
reconciliation of the journal with the venue's reports.

Journal first, always. An order is journaled (``Journal.new_order``) and marked SUBMITTED
before the venue client is called; every answer is journaled before the engine returns it.
When the journal cannot be written (PostgreSQL is down), the engine raises
``TradingPaused`` and sends nothing: an order that could not be journaled is never sent.
An answer the venue gave that could not be journaled stays the venue's to tell again:
``reconcile`` asks the venue about every order in flight and re-reads its fills
(journaling a fill twice is a no-op), and trading resumes only once that has succeeded.

A timeout, a disconnect or a 5xx from the venue leaves the order in flight
(``OutcomeUnknown``), never rejected; only ``VenueRejected`` rejects. A mismatch that
reconciliation cannot resolve (the venue holds a position the journal's fills do not
explain) halts the engine with the reason (``ReconcileMismatch``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace

import asyncpg

from actors.execution.router import NoRoute, Router, RuleInputs
from actors.execution.sim_venue import StepReport
from actors.execution.venue import VenueClient, VenueRejected, VenueUnavailable
from cluster.domain import Fill, OrderIntent
from cluster.orders import (
    Accepted,
    CancelRejected,
    Canceled,
    Expired,
    OrderEvent,
    OrderState,
    Order,
    OutcomeUnknown,
    Rejected,
    Submitted,
    VenueRequest,
    PendingCancel,
    Route,
    order_from_intent,
)
from cluster.store.journal import Journal

# What a lost or refused store connection raises through asyncpg
STORE_DOWN = (OSError, asyncpg.exceptions.InterfaceError, asyncpg.exceptions.PostgresConnectionError,
              asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError)  # fmt: skip

Check = Callable[[OrderIntent], Awaitable[tuple[bool, str | None]]]


class TradingPaused(RuntimeError):
    """The journal cannot be written: nothing is sent until ``reconcile`` succeeds."""


class ReconcileMismatch(RuntimeError):
    """The venue and the journal disagree in a way no report resolves."""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    order: Order  # as journaled after the venue's answer
    sent: bool  # False: denied, refused before sending, or a replayed decision already handled


class ExecutionEngine:
    def __init__(
        self,
        journal: Journal,
        run_id: str,
        clients: Collection[VenueClient],
        router: Router,
        *,
        check: Check | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.journal = journal
        self.run_id = run_id
        self.clients: dict[str, VenueClient] = {v: c for c in clients for v in c.venues}
        self.router = router
        self._check = check  # the risk check for intents the router placed (the fixed ones came checked)
        self._clock = clock
        self.paused: str | None = "not reconciled yet"
        self.halted: str | None = None
        self.stale: set[str] = set()
        self.rule_inputs: RuleInputs | None = None
        self._fill_cursor: dict[int, int] = {}  # per client: the fills_since cursor
        self._open: dict[str, set[str]] = {}  # per strategy: orders journaled and not terminal
        self.counts = {"submitted": 0, "denied": 0, "rejected": 0, "unknown": 0, "fills": 0}

    def open_orders(self, strategy: str) -> int:
        """Orders of ``strategy`` the journal holds in a non-terminal state, as this engine
        has journaled or read them (the Risk Rules Monitor's open-order count)."""
        return len(self._open.get(strategy, ()))

    # --- intents ----------------------------------------------------------------------

    async def submit(self, intent: OrderIntent) -> SubmitResult:
        """Route, journal and send one approved intent."""
        self._ready()
        now = self._clock()
        try:
            routed = await self.router.route(intent, self.stale, self.rule_inputs)
        except NoRoute as exc:
            return await self.deny(intent, str(exc), venue=intent.instrument.partition(":")[0] or "none")
        intent = replace(intent, instrument=routed.instrument)
        order = order_from_intent(intent, run_id=self.run_id, venue=routed.instrument.partition(":")[0], route=routed.route)
        if routed.note:
            order = replace(order, reason=routed.note)
        if order.venue not in self.clients:
            return await self.deny(intent, f"no venue client for {order.venue}", venue=order.venue, order=order)
        if routed.route.value != "fixed" and self._check is not None:
            accepted, why = await self._check(intent)
            if not accepted:
                return await self.deny(intent, why or "refused by the risk check", venue=order.venue, order=order)
        stored, fresh = await self._store(self._new_and_submitted(order, now))
        if not fresh:
            return SubmitResult(stored, sent=False)  # a replayed decision: handled already
        return await self._call_venue(stored, now)

    async def deny(self, intent: OrderIntent, reason: str, *, venue: str, order: Order | None = None) -> SubmitResult:
        """Journal an intent the risk check refused, as a DENIED order."""
        if order is None:
            symbol = intent.instrument.partition(":")[2] or intent.instrument
            order = order_from_intent(replace(intent, instrument=f"{venue}:{symbol}"), run_id=self.run_id, venue=venue,
                                      route=Route.FIXED)  # fmt: skip
        order = replace(order, state=OrderState.DENIED, reason=reason)
        stored = self._track(await self._store(self.journal.new_order(order, self._clock())))
        self.counts["denied"] += 1
        return SubmitResult(stored, sent=False)

    async def cancel(self, client_order_id: str) -> Order:
        self._ready()
        order = await self._store(self.journal.order(client_order_id))
        if order is None:
            raise KeyError(f"order {client_order_id} is not in the journal")
        if order.state.is_terminal:
            return order
        now = self._clock()
        order = (await self._record(PendingCancel(client_order_id, now))).order
        client = self._client(order.venue)
        try:
            events = await client.cancel(order)
        except VenueRejected as exc:
            events = [CancelRejected(client_order_id, now, exc.reason)]
        except VenueUnavailable as exc:
            events = [OutcomeUnknown(client_order_id, now, VenueRequest.CANCEL, str(exc) or type(exc).__name__)]
        for event in events:
            order = (await self._record(event)).order
        return order

    async def cancel_all(self, strategy: str | None = None) -> list[Order]:
        """Cancel every open order of ``strategy`` (None: of every strategy): the Risk Rules
        Monitor's HALTED and REDUCING transitions. Cancels are always allowed."""
        wanted = [cid for name, cids in self._open.items() if strategy in (None, name) for cid in sorted(cids)]
        return [await self.cancel(cid) for cid in wanted]

    # --- the venue's reports ----------------------------------------------------------

    async def on_step(self, report: StepReport) -> None:
        """A paper venue's bar: its answers, its own exits, the funding and the equity, in
        one transaction (all of the bar is journaled, or none of it)."""
        await self._store(self._journal_step(report))

    async def _journal_step(self, report: StepReport) -> None:
        async with self.journal.batch() as j:
            for event in report.events:
                self._note(await j.record(event), event)
            for order, fills in report.venue_orders:
                await self._venue_order(order, fills, j)
            for instrument, amount in report.funding:
                await j.record_funding(self.run_id, report.strategy, instrument, report.close_ts_ns, amount)
            await j.record_equity(self.run_id, report.strategy, report.close_ts_ns, report.equity, report.cash)

    async def on_fill(self, fill: Fill) -> None:
        await self._record(fill)

    async def record_risk_event(self, kind: str, *, ts_ns: int, strategy: str, rule: str | None = None,
                                detail: dict | None = None, key: str | None = None) -> None:  # fmt: skip
        """Journal a Risk Rules Monitor decision under this run (a down store pauses, as for
        orders); ``key``: its natural key, so that journaling it again is a no-op."""
        await self._store(self.journal.record_risk_event(kind, ts_ns=ts_ns, run_id=self.run_id, strategy=strategy,
                                                         rule=rule, detail=detail, key=key))  # fmt: skip

    async def reconcile(self) -> dict:
        """Bring the journal to what the venues report: every order in flight asked about,
        every fill since the start re-read (a fill journaled already is a no-op). Lifts a
        pause when it succeeds; raises ``ReconcileMismatch`` (and halts) when it cannot."""
        summary = {"orders_checked": 0, "resent": 0, "resolved": 0, "fills_read": 0}
        # fills first: a fill is the strongest word a venue has on an order
        for n, client in enumerate(self._unique_clients()):
            fills, cursor = await client.fills_since(0)
            for fill in fills:
                if await self._journal_fill_of_unknown_order(fill):
                    summary["fills_read"] += 1
            self._fill_cursor[n] = cursor
        for order in await self._store(self.journal.in_flight_orders(self.run_id)):
            self._track(order)
            summary["orders_checked"] += 1
            client = self._client(order.venue)
            if order.state is OrderState.INITIALIZED:
                # journaled, never marked sent: send it now (a venue dedups on the client order id)
                await self._send(order, self._clock())
                summary["resent"] += 1
                continue
            report = await client.order_status(order.client_order_id)
            now = self._clock()
            if report is None:
                if order.state is OrderState.SUBMITTED and order.accepted_ns is None:
                    # the venue never saw it: the submit did not arrive; send it again
                    await self._send(order, now)
                    summary["resent"] += 1
                continue
            event: OrderEvent | None = None
            if report.status in ("open", "filled") and order.accepted_ns is None:
                event = Accepted(order.client_order_id, now, report.venue_order_id)
            elif report.status == "canceled":
                event = Canceled(order.client_order_id, now, report.reason)
            elif report.status == "expired":
                event = Expired(order.client_order_id, now, report.reason)
            elif report.status == "rejected":
                event = Rejected(order.client_order_id, now, report.reason or "rejected by the venue")
            if event is not None:
                await self._record(event)
                summary["resolved"] += 1
        await self._check_positions()
        self.paused = None
        return summary

    # --- inside -------------------------------------------------------------------------

    async def _new_and_submitted(self, order: Order, now: int) -> tuple[Order, bool]:
        """The order journaled and marked SUBMITTED in one transaction, before it is sent.
        Returns it and True, or, for a replayed decision, the stored order and False."""
        async with self.journal.batch() as j:
            stored = self._track(await j.new_order(order, now))
            if stored.state is not OrderState.INITIALIZED:
                return stored, False
            submitted = Submitted(order.client_order_id, now)
            return self._note(await j.record(submitted), submitted).order, True

    async def _send(self, order: Order, now: int) -> SubmitResult:
        order = (await self._record(Submitted(order.client_order_id, now))).order
        return await self._call_venue(order, now)

    async def _call_venue(self, order: Order, now: int) -> SubmitResult:
        cid = order.client_order_id
        client = self._client(order.venue)
        try:
            events = await client.submit(order)
        except VenueRejected as exc:
            events = [Rejected(cid, now, exc.reason)]
            self.counts["rejected"] += 1
        except VenueUnavailable as exc:
            events = [OutcomeUnknown(cid, now, VenueRequest.SUBMIT, str(exc) or type(exc).__name__)]
            self.counts["unknown"] += 1
        self.counts["submitted"] += 1
        for event in events:
            recorded = await self._record(event)
            if event.client_order_id == cid:
                order = recorded.order
        return SubmitResult(order, sent=True)

    async def _venue_order(self, order: Order, fills: tuple[Fill, ...], journal: Journal) -> None:
        """An order the venue made itself (a stop, a liquidation): journaled with its fills."""
        stored = self._track(await journal.new_order(order, order.decision_ts_ns))
        if stored.state is OrderState.INITIALIZED:
            submitted = Submitted(order.client_order_id, order.decision_ts_ns)
            self._note(await journal.record(submitted), submitted)
        for fill in fills:
            self._note(await journal.record(fill), fill)

    async def _journal_fill_of_unknown_order(self, fill: Fill) -> bool:
        stored = await self._store(self.journal.order(fill.client_order_id))
        if stored is None:
            raise self._mismatch(
                f"the venue reports fill {fill.venue}:{fill.venue_fill_id} for order {fill.client_order_id}, "
                "which the journal does not hold"
            )
        if stored.state is OrderState.INITIALIZED:
            await self._record(Submitted(fill.client_order_id, fill.ts_ns))
        return (await self._record(fill)).applied

    async def _check_positions(self) -> None:
        journaled = {}
        for p in await self._store(self.journal.positions(self.run_id)):
            journaled[(p.strategy, p.instrument)] = journaled.get((p.strategy, p.instrument), 0.0) + p.size
        for client in self._unique_clients():
            for pos in await client.positions():
                mine = journaled.get((pos.account, pos.instrument), 0.0)
                if not math.isclose(mine, pos.size, rel_tol=1e-9, abs_tol=1e-9):
                    raise self._mismatch(
                        f"{pos.account} holds {pos.size:+.9g} {pos.instrument} at the venue, "
                        f"the journal's fills make {mine:+.9g}"
                    )

    def _track(self, order: Order) -> Order:
        open_ = self._open.setdefault(order.strategy, set())
        if order.state.is_terminal:
            open_.discard(order.client_order_id)
        else:
            open_.add(order.client_order_id)
        return order

    def _mismatch(self, why: str) -> ReconcileMismatch:
        self.halted = why
        return ReconcileMismatch(why)

    async def _record(self, event: OrderEvent):
        return self._note(await self._store(self.journal.record(event)), event)

    def _note(self, recorded, event: OrderEvent):
        """What a journaled event made of its order: the open-order view and the counts."""
        self._track(recorded.order)
        if isinstance(event, Fill) and recorded.applied:
            self.counts["fills"] += 1
        return recorded

    async def _store(self, call: Awaitable):
        try:
            return await call
        except STORE_DOWN as exc:
            self.paused = f"the journal cannot be written: {type(exc).__name__}: {exc}"
            raise TradingPaused(self.paused) from exc

    def _ready(self) -> None:
        if self.halted:
            raise ReconcileMismatch(self.halted)
        if self.paused:
            raise TradingPaused(self.paused)

    def _client(self, venue: str) -> VenueClient:
        client = self.clients.get(venue)
        if client is None:
            raise VenueRejected(f"no venue client for {venue}")
        return client

    def _unique_clients(self) -> list[VenueClient]:
        return list({id(c): c for c in self.clients.values()}.values())
