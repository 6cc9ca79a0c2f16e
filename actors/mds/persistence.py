"""Writing the MDS's rows to PostgreSQL with batched binary COPY, in its own process.

The MDS turns events into rows (``actors.mds.rows``) and hands them over ten times a
second; ``StorePersister`` maps each row's instrument key to its PostgreSQL id, queues the
rows per table and a background task (``run``) COPYs each table's queue as exactly-once
batches of up to ``batch_rows``. It runs in the ``mds-store`` actor
(``actors.mds.store_actor``), so encoding rows and waiting on PostgreSQL never take the
MDS's CPU or event loop: a slow or failed store never blocks market data.

A write that fails because the store is unreachable past ``retry_deadline_s`` goes back to
the front of its queue and is sent again later with the same batch id, so it lands exactly
once when the store returns. Only past ``max_pending_rows`` queued rows are new rows
dropped, counted per table under ``dropped`` and logged: nothing accepted is lost silently.
A batch PostgreSQL refuses (a constraint) is counted as ``rejected`` and logged; rows of an
instrument that is not in venues.yaml (PostgreSQL has no id for it) as
``unknown_instrument``. Replaying data that is already stored adds nothing: the tables'
natural keys de-duplicate.

For the MDS to know what is safe, the persister counts per table the rows it was given
(``enqueued``) and the rows it is done with (``resolved``: written, or dropped and
counted); a hand-over is stored once ``resolved`` has caught up with what ``enqueued`` was
just after it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from actors.mds.rows import COLUMNS, KEYED_BY_INSTRUMENT
from cluster.config.models import PersistConfig, ReconnectConfig
from cluster.store.writer import Batch, BatchRejected, StoreUnavailable, StoreWriter

log = logging.getLogger(__name__)


@dataclass
class TableQueue:
    rows: deque = field(default_factory=deque)  # tuples in COLUMNS order
    retry: Batch | None = None  # a batch whose write failed: re-sent first, same id
    written: int = 0
    dropped: int = 0


class StorePersister:
    def __init__(
        self,
        writer_factory: Callable[[], StoreWriter],
        settings: PersistConfig,
        instrument_ids: dict[str, int],
        on_drop: Callable[[str, str, int], None] | None = None,
        on_written: Callable[[str, int], None] | None = None,
    ) -> None:
        self._writer_factory = writer_factory
        self.settings = settings
        self.instrument_ids = instrument_ids
        self.unknown_instruments: set[str] = set()
        self.tables = {t: TableQueue() for t in settings.tables}
        self.enqueued: dict[str, int] = {t: 0 for t in settings.tables}
        self.resolved: dict[str, int] = {t: 0 for t in settings.tables}
        self._on_drop = on_drop or (lambda table, reason, n: None)
        self._on_written = on_written or (lambda table, n: None)
        self._wake = asyncio.Event()
        self.last_error: str | None = None
        self.store_ok = True
        self.writes = 0
        self.failed_writes = 0
        self._queued = 0  # rows in the tables' queues and retry batches

    @property
    def pending(self) -> int:
        return self._queued

    def add(self, rows_by_table: dict[str, list[tuple]]) -> dict:
        """Queue rows (from ``RowBuffer.take``); returns the status, for the sender."""
        for table, rows in rows_by_table.items():
            queue = self.tables.get(table)
            if queue is None:
                continue
            self.enqueued[table] += len(rows)
            if table in KEYED_BY_INSTRUMENT:
                rows = self._with_ids(table, rows)
            room = max(self.settings.max_pending_rows - self._queued, 0)
            if len(rows) > room:
                lost = len(rows) - room
                self._drop(table, queue, "store_backlog", lost)
                log.error(
                    "store backlog at %d rows: dropped %d new %s rows (%d so far); last error: %s",
                    self.settings.max_pending_rows, lost, table, queue.dropped, self.last_error,
                )
                rows = rows[:room]
            queue.rows.extend(rows)
            self._queued += len(rows)
            if len(queue.rows) >= self.settings.batch_rows:
                self._wake.set()
        return self.status()

    def _with_ids(self, table: str, rows: list[tuple]) -> list[tuple]:
        """Rows with the instrument key replaced by its id; rows of unknown instruments go
        (counted). A strategy signal may be about no instrument (key None: id NULL)."""
        ids = self.instrument_ids
        out = []
        unknown = 0
        for row in rows:
            key = row[0]
            if key is None and table == "strategy_signals":
                out.append(row)
                continue
            iid = ids.get(key)
            if iid is None:
                unknown += 1
                if key not in self.unknown_instruments:
                    self.unknown_instruments.add(key)
                    log.warning("%s: instrument %s is not in venues.yaml; its rows are not stored", table, key)
                continue
            out.append((iid, *row[1:]))
        if unknown:
            self._drop(table, self.tables[table], "unknown_instrument", unknown)
        return out

    def _drop(self, table: str, queue: TableQueue, reason: str, n: int) -> None:
        queue.dropped += n
        self.resolved[table] += n
        self._on_drop(table, reason, n)

    async def run(self) -> None:
        """Flush forever; cancel to stop (``drain`` first to store the tail)."""
        writer = self._writer_factory()
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.flush_interval_s)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                await self.flush(writer)
        finally:
            await writer.close()

    async def flush(self, writer: StoreWriter) -> int:
        """Write every table's queued rows (in batches of ``batch_rows``); returns rows stored."""
        stored = 0
        for table, queue in self.tables.items():
            while queue.retry is not None or queue.rows:
                batch = queue.retry or self._take(table, queue)
                queue.retry = None
                try:
                    await writer.write(batch)
                except StoreUnavailable as exc:
                    queue.retry = batch  # same batch id: if it did commit, the ledger makes this a no-op
                    self._failed(f"{table}: {exc}")
                    return stored
                except BatchRejected as exc:
                    self._queued -= len(batch)
                    self._drop(table, queue, "rejected", len(batch))
                    self._failed(f"{table}: {exc}")
                    log.error("store refused a %s batch of %d rows: %s", table, len(batch), exc)
                    continue
                except Exception as exc:  # anything else: keep the batch, try again next round
                    queue.retry = batch
                    self._failed(f"{table}: {type(exc).__name__}: {exc}")
                    return stored
                self._queued -= len(batch)
                self.resolved[table] += len(batch)
                self.store_ok = True
                self.writes += 1
                queue.written += len(batch)
                stored += len(batch)
                self._on_written(table, len(batch))
        return stored

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Ask the background task to write now and wait until nothing is queued; False if
        rows are still queued after ``timeout_s`` (the store is away)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._queued > 0:
            self._wake.set()
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _failed(self, message: str) -> None:
        self.store_ok = False
        self.failed_writes += 1
        self.last_error = message
        log.warning("store write failed, will retry: %s", message)

    def _take(self, table: str, queue: TableQueue) -> Batch:
        n = min(len(queue.rows), self.settings.batch_rows)
        rows = [queue.rows.popleft() for _ in range(n)]
        names = COLUMNS[table]
        columns = {name: [r[i] for r in rows] for i, name in enumerate(names)}
        return Batch(table, columns, f"mds:{table}:{uuid.uuid4().hex}")

    def status(self) -> dict:
        return {
            "store_ok": self.store_ok,
            "pending_rows": self.pending,
            "writes": self.writes,
            "failed_writes": self.failed_writes,
            "last_error": self.last_error,
            "tables": {t: {"written": q.written, "queued": len(q.rows), "dropped": q.dropped} for t, q in self.tables.items()},
        }


def make_writer_factory(dsn: str, settings: PersistConfig) -> Callable[[], StoreWriter]:
    """StoreWriters that give up on one write after ``retry_deadline_s`` (the batch is then
    re-queued), so a long outage never parks the flusher inside one write."""
    reconnect = ReconnectConfig(
        deadline_s=settings.retry_deadline_s,
        initial_backoff_s=min(0.1, settings.retry_deadline_s),
        max_backoff_s=min(2.0, settings.retry_deadline_s),
    )
    return lambda: StoreWriter(dsn, reconnect, command_timeout=60.0)
