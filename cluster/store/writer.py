"""Exactly-once bulk writes into PostgreSQL.

A ``Batch`` is a set of rows for one table with a deterministic ``batch_id`` (derived
from what the rows are, e.g. source file hash + table + chunk). ``StoreWriter.write``
stores it all-or-nothing, in one transaction that

1. returns at once if ``write_batches`` already records ``batch_id`` (the batch was
   committed earlier, perhaps by an attempt whose acknowledgement was lost);
2. COPYs the rows (binary, encoded column-wise by ``binary_copy``) into the table;
3. if some rows already exist under their natural key (another file held them), rolls
   back to a savepoint and merges through a temporary staging table with
   ``ON CONFLICT DO NOTHING`` instead;
4. records ``batch_id`` in ``write_batches``.

If the connection fails anywhere (PostgreSQL restarting, network), the transaction
did not happen or fully happened, and the writer reconnects with backoff and sends the
batch again; step 1 makes the second send a no-op if the first one committed. So every
row lands exactly once.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import asyncpg

from cluster.config.models import ReconnectConfig
from cluster.store import binary_copy
from cluster.store.connection import connect, is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """PostgreSQL stayed unreachable past the reconnect deadline; nothing was half-written."""


class BatchRejected(ValueError):
    """The batch itself is wrong (unknown column, bad value, constraint); retrying won't help."""


@dataclass(frozen=True)
class Batch:
    table: str
    columns: dict[str, Any]  # column name -> sequence of values, all one length
    batch_id: str

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass(frozen=True)
class WriteResult:
    batch_id: str
    table: str
    rows: int  # rows in the batch
    inserted: int  # rows new to the table
    already_stored: bool  # the ledger had this batch: nothing was sent


class StoreWriter:
    def __init__(
        self,
        dsn: str,
        reconnect: ReconnectConfig = ReconnectConfig(),
        *,
        command_timeout: float = 300.0,
        after_commit: Callable[[WriteResult], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._reconnect = reconnect
        self._command_timeout = command_timeout
        self._after_commit = after_commit
        self._conn: asyncpg.Connection | None = None
        self._column_types: dict[str, dict[str, str]] = {}
        self.reconnects = 0

    async def __aenter__(self) -> StoreWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None

    async def write(self, batch: Batch) -> WriteResult:
        if len(batch) == 0:
            return WriteResult(batch.batch_id, batch.table, 0, 0, False)
        encoded: list[bytes] = []

        async def attempt(conn: asyncpg.Connection) -> WriteResult:
            if not encoded:
                encoded.append(await self._encode(conn, batch))
            return await self._write_once(conn, batch, encoded[0])

        result = await self._with_reconnect(attempt, f"writing batch {batch.batch_id} to {batch.table}")
        if self._after_commit is not None:
            self._after_commit(result)
        return result

    async def run(self, operation: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        """Run an idempotent operation (an upsert, say) in a transaction, reconnecting and
        retrying it like a batch if the connection is lost."""

        async def attempt(conn: asyncpg.Connection) -> T:
            async with conn.transaction():
                return await operation(conn)

        return await self._with_reconnect(attempt, what)

    async def _with_reconnect(self, attempt: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        deadline = time.monotonic() + self._reconnect.deadline_s
        backoff = self._reconnect.initial_backoff_s
        while True:
            try:
                return await attempt(await self._connection())
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await self._discard_connection()
                if time.monotonic() + backoff > deadline:
                    raise StoreUnavailable(
                        f"PostgreSQL unreachable for {self._reconnect.deadline_s:.0f}s while {what} "
                        f"({type(exc).__name__}: {exc}); it was not stored and can be re-sent"
                    ) from exc
                log.warning("store connection lost (%s); retrying %s in %.1fs", exc, what, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._reconnect.max_backoff_s)
                self.reconnects += 1

    async def _write_once(self, conn: asyncpg.Connection, batch: Batch, payload: bytes) -> WriteResult:
        columns = list(batch.columns)
        async with conn.transaction():
            if await conn.fetchval("SELECT 1 FROM write_batches WHERE batch_id = $1", batch.batch_id):
                return WriteResult(batch.batch_id, batch.table, len(batch), 0, True)
            try:
                async with conn.transaction():  # savepoint: a duplicate key undoes only the COPY
                    await conn.copy_to_table(batch.table, source=io.BytesIO(payload), columns=columns, format="binary")
                inserted = len(batch)
            except asyncpg.UniqueViolationError:
                try:
                    inserted = await self._merge(conn, batch.table, columns, payload)
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                    raise BatchRejected(f"{batch.table}: batch {batch.batch_id} refused by PostgreSQL: {exc}") from None
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                raise BatchRejected(f"{batch.table}: batch {batch.batch_id} refused by PostgreSQL: {exc}") from None
            await conn.execute(
                "INSERT INTO write_batches (batch_id, table_name, rows) VALUES ($1, $2, $3)",
                batch.batch_id,
                batch.table,
                len(batch),
            )
        return WriteResult(batch.batch_id, batch.table, len(batch), inserted, False)

    async def _merge(self, conn: asyncpg.Connection, table: str, columns: list[str], payload: bytes) -> int:
        stage = f"_stage_{table}"
        cols = ", ".join(f'"{c}"' for c in columns)
        await conn.execute(f'CREATE TEMP TABLE "{stage}" (LIKE "{table}" INCLUDING DEFAULTS) ON COMMIT DROP')
        await conn.copy_to_table(stage, source=io.BytesIO(payload), columns=columns, format="binary")
        status = await conn.execute(
            f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "{stage}" ON CONFLICT DO NOTHING'
        )
        return int(status.rsplit(" ", 1)[-1])

    async def _encode(self, conn: asyncpg.Connection, batch: Batch) -> bytes:
        types = await self._types(conn, batch.table)
        unknown = [c for c in batch.columns if c not in types]
        if unknown:
            raise BatchRejected(f"{batch.table}: no such column(s): {', '.join(unknown)}")
        try:
            return binary_copy.encode(
                [(name, types[name], values) for name, values in batch.columns.items()], table=batch.table
            )
        except binary_copy.CopyEncodeError as exc:
            raise BatchRejected(f"{exc} (batch {batch.batch_id}: nothing was sent)") from None

    async def _types(self, conn: asyncpg.Connection, table: str) -> dict[str, str]:
        if table not in self._column_types:
            rows = await conn.fetch(
                """
                SELECT a.attname, t.typname
                FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                """,
                table,
            )
            if not rows:
                raise BatchRejected(f"no table named {table!r} (are migrations applied?)")
            self._column_types[table] = {r["attname"]: r["typname"] for r in rows}
        return self._column_types[table]

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self._dsn, command_timeout=self._command_timeout)
        return self._conn

    async def _discard_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
