"""What the MDS has handed to its store and keeps until the store has it: nothing the MDS
acknowledged is lost when the MDS, its writer or a feed restarts.

Two ledgers, both in the MDS's memory:

* ``Durability``: per sending feed (its stream key), the last batch handled and the last
  one whose rows are safely stored (PostgreSQL and the lake). The MDS's answer to each
  batch carries the latter, and a feed keeps every batch until it is covered, so that a
  restarted MDS is sent again exactly what it might not have stored. For a feed that can
  resume (a replay) it also keeps the stored ``cursor`` by the run's name.
* ``Outbox``: the hand-overs of rows sent to the ``mds-store`` actor and not yet reported
  stored. Each hand-over records the feeds' marks at its cut; when the store reports it
  stored, those marks become durable. If the store actor restarted (a new incarnation),
  every hand-over still kept is sent again, in order.

Bounds: the outbox keeps at most ``max_pending_rows`` rows; past that the oldest hand-over
is given up (its rows counted as dropped, ``store_backlog``) and its marks confirmed, so a
store that stays away costs counted rows, never the MDS's memory.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mark:
    seq: int
    peer: str  # the name the stream was allowed under (a feed run: feed:replay@<run id>)
    cursor: int | None


class Durability:
    def __init__(self) -> None:
        self._since_cut: dict[bytes, Mark] = {}
        self.handled: dict[bytes, Mark] = {}
        self.durable: dict[bytes, int] = {}  # stream key -> last seq whose rows are stored
        self.cursors: dict[str, int] = {}  # peer -> cursor after its last stored batch

    def handled_batch(self, key: bytes, seq: int, peer: str, cursor: int | None) -> None:
        mark = Mark(seq, peer, cursor)
        self.handled[key] = mark
        self._since_cut[key] = mark

    def cut(self) -> dict[bytes, Mark]:
        """The marks of everything handled since the last cut (what a hand-over covers)."""
        marks, self._since_cut = self._since_cut, {}
        return marks

    def confirm(self, marks: dict[bytes, Mark]) -> None:
        """A hand-over (and every one before it) is stored: its feeds' batches are safe."""
        for key, mark in marks.items():
            if mark.seq > self.durable.get(key, 0):
                self.durable[key] = mark.seq
            if mark.cursor is not None:
                self.cursors[mark.peer] = mark.cursor

    def durable_seq(self, key: bytes) -> int:
        return self.durable.get(key, 0)

    def forget(self, key: bytes) -> None:
        """A stream that is gone for good (its feed restarted under a new key)."""
        self.handled.pop(key, None)
        self.durable.pop(key, None)
        self._since_cut.pop(key, None)


class StoreLink(Protocol):
    """The ``mds-store`` actor, or a local stand-in (tests)."""

    async def add(self, handover_id: int, payload: bytes) -> dict: ...

    async def status(self) -> dict: ...

    async def drain(self, timeout_s: float) -> bool: ...


@dataclass
class Handover:
    id: int
    payload: bytes
    rows: dict[str, dict[str, int]]  # sink -> table -> rows
    marks: dict[bytes, Mark]
    ticket: dict[str, dict[str, int]] | None = None  # sink -> table -> enqueued, once sent

    @property
    def size(self) -> int:
        return sum(n for tables in self.rows.values() for n in tables.values())


@dataclass
class Outbox:
    store: StoreLink
    durability: Durability
    max_pending_rows: int
    on_drop: Callable[[str, str, int], None] = lambda table, reason, n: None
    kept: deque = field(default_factory=deque)
    incarnation: str | None = None
    status: dict | None = None
    last_error: str | None = None
    resent: int = 0  # hand-overs sent again to a restarted store actor
    dropped: dict[str, int] = field(default_factory=dict)
    _next_id: int = 1
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one hand-over or sync at a time, in order

    @property
    def pending_rows(self) -> int:
        return sum(h.size for h in self.kept)

    async def hand_over(self, rows: dict[str, dict[str, list[tuple]]], marks: dict[bytes, Mark]) -> None:
        """Send one cut of rows (and the marks it covers) to the store, keeping it until the
        store reports it stored; a cut without rows is stored as soon as those before it."""
        async with self._lock:
            await self._hand_over(rows, marks)

    async def _hand_over(self, rows: dict[str, dict[str, list[tuple]]], marks: dict[bytes, Mark]) -> None:
        counts = {sink: {t: len(r) for t, r in tables.items() if r} for sink, tables in rows.items()}
        counts = {sink: tables for sink, tables in counts.items() if tables}
        if not counts:
            if not self.kept:
                self.durability.confirm(marks)  # nothing to store: safe at once
                return
            # Batches that made no rows are safe once the rows before them are: their marks
            # ride on the last kept hand-over (marks only grow, so the later ones win).
            self.kept[-1].marks.update(marks)
        else:
            self.kept.append(Handover(self._next_id, pickle.dumps(rows, protocol=5), counts, dict(marks)))
            self._next_id += 1
            self._bound()
        await self._sync()

    async def sync(self, refresh: bool = False) -> None:
        """Send what has not been sent (all of it to a restarted store), then confirm what
        the store reports stored; ``refresh`` asks for the store's status even with nothing
        kept (for a report)."""
        async with self._lock:
            await self._sync(refresh)

    async def _sync(self, refresh: bool = False) -> None:
        if not self.kept and not refresh:
            return
        try:
            sent = False
            for handover in list(self.kept):
                if handover.ticket is None and handover.rows:
                    self._take(await self.store.add(handover.id, handover.payload), handover)
                    sent = True
            if not sent:  # the answers to adds carry the progress; otherwise ask for it
                self._take(await self.store.status(), None)
            self.last_error = None
        except Exception as exc:  # the store actor is gone or restarting: everything stays kept
            self.last_error = f"store actor: {type(exc).__name__}: {exc}"
            log.warning("could not hand rows to the store (%s); %d rows wait", self.last_error, self.pending_rows)
            return
        self._confirm()

    def _take(self, reply: dict, handover: Handover | None) -> None:
        incarnation = reply.get("incarnation")
        if self.incarnation is not None and incarnation != self.incarnation:
            # A restarted store actor lost what it queued: every kept hand-over goes again.
            log.warning("the store actor restarted: sending its %d kept hand-overs again", len(self.kept))
            for kept in self.kept:
                if kept is not handover:
                    kept.ticket = None
                    self.resent += 1
        self.incarnation = incarnation
        self.status = reply
        if handover is not None:
            handover.ticket = reply.get("ticket", {})

    def _confirm(self) -> None:
        resolved = (self.status or {}).get("resolved", {})
        while self.kept:
            head = self.kept[0]
            if head.rows and (head.ticket is None or not _covered(head.ticket, resolved, head.rows)):
                return
            self.kept.popleft()
            self.durability.confirm(head.marks)

    def _bound(self) -> None:
        while len(self.kept) > 1 and self.pending_rows > self.max_pending_rows:
            oldest = self.kept.popleft()
            for sink, tables in oldest.rows.items():
                for table, n in tables.items():
                    self.dropped[table] = self.dropped.get(table, 0) + n
                    self.on_drop(table, "store_backlog", n)
            log.error("the store has not taken %d rows for too long: gave up the oldest hand-over (%d rows)",
                      self.max_pending_rows, oldest.size)
            self.durability.confirm(oldest.marks)


def _covered(ticket: dict[str, dict[str, int]], resolved: dict[str, dict[str, int]], rows: dict[str, dict[str, int]]) -> bool:
    for sink, tables in rows.items():
        for table in tables:
            if resolved.get(sink, {}).get(table, 0) < ticket.get(sink, {}).get(table, 0):
                return False
    return True
