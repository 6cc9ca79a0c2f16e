"""The model registry: versions with their metrics and feature lists (``model_registry``),
their artifacts (``model_artifacts``, in PostgreSQL so every node can load them), and which
version is active per model name (at most one, enforced by a partial unique index)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg


class RegistryError(LookupError):
    """Unknown model version, or an artifact that does not match its checksum."""


@dataclass(frozen=True)
class ModelEntry:
    version: str
    name: str
    created_at: datetime
    metrics: dict
    features: list[str]
    artifact_uri: str
    is_active: bool

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "metrics": self.metrics,
            "features": self.features,
            "artifact_uri": self.artifact_uri,
            "is_active": self.is_active,
        }


def _entry(row) -> ModelEntry:
    return ModelEntry(row["version"], row["name"], row["created_at"], json.loads(row["metrics"]), json.loads(row["features"]),
                      row["artifact_uri"], row["is_active"])


_COLUMNS = "version, name, created_at, metrics::text AS metrics, features::text AS features, artifact_uri, is_active"


async def register(conn: asyncpg.Connection, name: str, version: str, metrics: dict, features: list[str], artifact: bytes,
                   fmt: str, activate: bool = False) -> ModelEntry:
    """Store a new version and its artifact in one transaction (optionally making it active)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO model_registry (version, name, metrics, features, artifact_uri) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)",
            version, name, json.dumps(metrics), json.dumps(features), f"postgresql:model_artifacts/{version}",
        )
        await conn.execute(
            "INSERT INTO model_artifacts (version, format, sha256, content) VALUES ($1, $2, $3, $4)",
            version, fmt, hashlib.sha256(artifact).hexdigest(), artifact,
        )
        if activate:
            await _activate(conn, name, version)
    return await get(conn, version)


async def get(conn: asyncpg.Connection, version: str) -> ModelEntry:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM model_registry WHERE version = $1", version)
    if row is None:
        raise RegistryError(f"no model version {version!r} in the registry")
    return _entry(row)


async def list_models(conn: asyncpg.Connection, name: str) -> list[ModelEntry]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM model_registry WHERE name = $1 ORDER BY created_at DESC, version DESC", name)
    return [_entry(r) for r in rows]


async def active(conn: asyncpg.Connection, name: str) -> ModelEntry | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM model_registry WHERE name = $1 AND is_active", name)
    return _entry(row) if row is not None else None


async def activate(conn: asyncpg.Connection, name: str, version: str) -> ModelEntry:
    async with conn.transaction():
        await _activate(conn, name, version)
    return await get(conn, version)


async def _activate(conn: asyncpg.Connection, name: str, version: str) -> None:
    found = await conn.fetchval("SELECT name FROM model_registry WHERE version = $1 FOR UPDATE", version)
    if found is None:
        raise RegistryError(f"no model version {version!r} in the registry")
    if found != name:
        raise RegistryError(f"model version {version!r} belongs to {found!r}, not {name!r}")
    await conn.execute("UPDATE model_registry SET is_active = false WHERE name = $1 AND is_active AND version <> $2", name, version)
    await conn.execute("UPDATE model_registry SET is_active = true WHERE version = $1", version)


async def artifact(conn: asyncpg.Connection, version: str) -> tuple[str, bytes]:
    """(format, bytes) of a version's artifact, checked against its stored checksum."""
    row = await conn.fetchrow("SELECT format, sha256, content FROM model_artifacts WHERE version = $1", version)
    if row is None:
        raise RegistryError(f"no artifact stored for model version {version!r}")
    content = bytes(row["content"])
    if hashlib.sha256(content).hexdigest() != row["sha256"]:
        raise RegistryError(f"the artifact of model version {version!r} does not match its checksum")
    return row["format"], content
