"""Reference data: venues, instruments and the whitepaper's ``trading_pairs``.

Written with idempotent upserts (``INSERT ... ON CONFLICT DO UPDATE``): sending the same
rows twice leaves one row each, carrying the latest values.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from cluster.domain import Instrument, Venue


async def upsert_venues(conn: asyncpg.Connection, venues: list[Venue]) -> None:
    await conn.executemany(
        """
        INSERT INTO venues (name, kind, maker_fee, taker_fee) VALUES ($1, $2, $3, $4)
        ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, maker_fee = EXCLUDED.maker_fee,
            taker_fee = EXCLUDED.taker_fee, updated_at = now()
        """,
        [(v.name, v.kind.value, v.maker_fee, v.taker_fee) for v in venues],
    )


async def upsert_instruments(conn: asyncpg.Connection, instruments: list[Instrument]) -> dict[str, int]:
    """Upsert and return ``{instrument.key: id}``. Sizes already known are kept when the
    new row does not know them (a data file names an instrument but not its tick)."""
    ids: dict[str, int] = {}
    for inst in instruments:
        ids[inst.key] = await conn.fetchval(
            """
            INSERT INTO instruments (venue, symbol, kind, base, quote, venue_symbol,
                                     tick_size, lot_size, min_size, contract_size)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (venue, symbol) DO UPDATE SET
                kind = EXCLUDED.kind, base = EXCLUDED.base, quote = EXCLUDED.quote,
                venue_symbol = EXCLUDED.venue_symbol,
                tick_size = COALESCE(EXCLUDED.tick_size, instruments.tick_size),
                lot_size = COALESCE(EXCLUDED.lot_size, instruments.lot_size),
                min_size = COALESCE(EXCLUDED.min_size, instruments.min_size),
                contract_size = EXCLUDED.contract_size,
                updated_at = now()
            RETURNING id
            """,
            inst.venue,
            inst.symbol,
            inst.kind.value,
            inst.base,
            inst.quote,
            inst.venue_symbol,
            inst.tick_size,
            inst.lot_size,
            inst.min_size,
            inst.contract_size,
        )
    return ids


@dataclass(frozen=True)
class PairSummary:
    """A row of the whitepaper's ``trading_pairs``: latest price, 24h volume, funding."""

    instrument_key: str
    instrument_id: int
    last_price: float
    volume: float | None
    funding_rate: float | None


async def upsert_trading_pairs(conn: asyncpg.Connection, rows: list[PairSummary]) -> None:
    await conn.executemany(
        """
        INSERT INTO trading_pairs (pair, instrument_id, last_price, volume, funding_rate, updated_at)
        VALUES ($1, $2, $3, $4, $5, now())
        ON CONFLICT (pair) DO UPDATE SET
            instrument_id = EXCLUDED.instrument_id,
            last_price = EXCLUDED.last_price,
            volume = COALESCE(EXCLUDED.volume, trading_pairs.volume),
            funding_rate = COALESCE(EXCLUDED.funding_rate, trading_pairs.funding_rate),
            updated_at = now()
        """,
        [(r.instrument_key, r.instrument_id, r.last_price, r.volume, r.funding_rate) for r in rows],
    )
