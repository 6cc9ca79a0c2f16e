"""The shared store: PostgreSQL through asyncpg (embedded or at ``BOTMAIN_PG_DSN``)."""
