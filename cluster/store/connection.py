"""Which PostgreSQL to use, and connecting to it.

``BOTMAIN_PG_DSN`` set: that server. Unset: the embedded server from ``configs/store.yaml``
(started on demand). Everything after this point is the same code path either way.
"""

from __future__ import annotations

import asyncio

import asyncpg

from cluster.config import BotmainConfig
from cluster.store.embedded import EmbeddedPostgres
from cluster.store.migrations import migrate


def embedded_server(config: BotmainConfig) -> EmbeddedPostgres:
    emb = config.store.postgres.embedded
    return EmbeddedPostgres(
        config.path(emb.data_dir),
        host=emb.host,
        port=emb.port,
        database=emb.database,
        password_file=config.path(emb.password_file),
    )


def resolve_dsn(config: BotmainConfig, *, start_embedded: bool = True) -> str | None:
    """The DSN to use, password included: call it in the process that connects (CLI,
    job, actor, replica) rather than passing a DSN along, since Ray keeps an actor's or
    a deployment's arguments in its GCS and shows them in the dashboard. Mask it before
    printing (``mask_dsn``).

    ``BOTMAIN_PG_DSN`` (or ``BOTMAIN_PG_DSN_FILE``) set: that DSN. Unset: the embedded
    server's, its password read from ``postgres.embedded.password_file``; the server is
    started if ``start_embedded``, and None is returned when it is not running and
    ``start_embedded`` is False."""
    dsn = config.pg_dsn
    if dsn is not None:
        return dsn.get_secret_value()
    server = embedded_server(config)
    if start_embedded:
        return server.start()
    return server.dsn if server.is_running() else None


def is_transient(exc: BaseException) -> bool:
    """True for errors that mean "the server went away", after which a retry on a new
    connection can succeed; False for errors in what we sent."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return False
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and not isinstance(
        exc, asyncpg.exceptions.ConnectionDoesNotExistError
    ):
        # Also raised for client misuse; only a closed connection is worth a retry.
        return "closed" in str(exc) or "connection" in str(exc)
    return isinstance(
        exc,
        (
            OSError,  # refused, reset, broken pipe
            asyncio.TimeoutError,
            asyncpg.PostgresConnectionError,  # SQLSTATE class 08
            asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, starting up
            asyncpg.exceptions.ConnectionDoesNotExistError,
        ),
    )


async def connect(dsn: str, *, timeout: float = 10.0, command_timeout: float | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=timeout, command_timeout=command_timeout)


async def prepare_store(dsn: str) -> list[str]:
    """Apply pending migrations; returns the names of those applied now."""
    conn = await connect(dsn)
    try:
        return [f"{m.version:04d}_{m.name}" for m in await migrate(conn)]
    finally:
        await conn.close()
