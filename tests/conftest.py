"""Shared fixtures: a real embedded PostgreSQL and a real local Ray cluster, one each per
test session, started by the same code as ``botmain up``. Nothing here touches
``../shared``; data comes from ``data/sample/``."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile
from pathlib import Path

import asyncpg
import pytest
import yaml

from cluster.config import BotmainConfig, load_config
from cluster.store.embedded import EmbeddedPostgres, scratch_directory
from cluster.store.migrations import migrate

# Ray reads its auth mode once per process: tests that drive the session cluster from
# this process (tests/test_sweep.py) need token auth on before Ray is first imported.
os.environ["RAY_AUTH_MODE"] = "token"

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
_db_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server() -> EmbeddedPostgres:
    """One embedded PostgreSQL 16 for the session, in a throwaway directory, with
    password authentication like every embedded server (its password file beside the
    data directory)."""
    base = scratch_directory("botmain-pg-")
    server = EmbeddedPostgres(base / "pg", port=free_port(), database="botmain_test", settings={"fsync": "off"})
    server.start()
    yield server
    server.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server_dir() -> Path:
    """A directory for a test's own embedded server. Not pytest's ``tmp_path``: that sits
    under the 0700 /tmp/pytest-of-root, which the server's user cannot enter when tests
    run as root (and starting a server no longer opens directories up)."""
    path = scratch_directory("botmain-pg-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _dsn_for(server: EmbeddedPostgres, database: str) -> str:
    return server.dsn_for(database)


async def _create_database(server: EmbeddedPostgres, name: str, migrated: bool) -> str:
    admin = await asyncpg.connect(_dsn_for(server, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _dsn_for(server, name)
    if migrated:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    return dsn


@pytest.fixture
def empty_dsn(pg_server: EmbeddedPostgres) -> str:
    """A new, empty database (no migrations) on the session server."""
    return asyncio.run(_create_database(pg_server, f"t{os.getpid()}_{next(_db_counter)}", migrated=False))


@pytest.fixture
def dsn(pg_server: EmbeddedPostgres) -> str:
    """A new database with every migration applied."""
    return asyncio.run(_create_database(pg_server, f"t{os.getpid()}_{next(_db_counter)}", migrated=True))


def write_config_dir(target: Path, **overrides: dict) -> Path:
    """Copy ``configs/`` to ``target`` and merge ``overrides`` (file name -> dict)."""
    shutil.copytree(ROOT / "configs", target)
    for name, patch in overrides.items():
        path = target / f"{name}.yaml"
        data = yaml.safe_load(path.read_text()) or {}
        _deep_merge(data, patch)
        path.write_text(yaml.safe_dump(data))
    return target


def _deep_merge(base: dict, patch: dict) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


@pytest.fixture
def config(tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch) -> BotmainConfig:
    """The shipped configuration, with the store at a fresh test database (through
    ``BOTMAIN_PG_DSN``, the external-server path) and the lake in a temp dir."""
    directory = write_config_dir(tmp_path / "configs", store={"lake": {"root": str(tmp_path / "lake")}})
    monkeypatch.setenv("BOTMAIN_PG_DSN", dsn)
    monkeypatch.setenv("BOTMAIN_CONFIG_DIR", str(directory))
    return load_config(directory)


@pytest.fixture(scope="session")
def session_config_dir(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configuration for the session cluster: the store is the session's embedded
    server (no BOTMAIN_PG_DSN), the lake a temp dir, the Ray head on free ports."""
    base = tmp_path_factory.mktemp("session")
    return write_config_dir(
        base / "configs",
        store={
            "postgres": {
                "embedded": {
                    "data_dir": str(pg_server.data_dir),
                    "password_file": str(pg_server.password_file),
                    "port": pg_server.port,
                    "database": pg_server.database,
                }
            },
            "lake": {"root": str(base / "lake")},
        },
        cluster={
            "head": {
                "port": free_port(),
                "dashboard_port": free_port(),
                "client_server_port": free_port(),
                "dashboard_agent_port": free_port(),
                "num_cpus": 2,
                "temp_dir": tempfile.mkdtemp(prefix="btr-"),
            }
        },
    )


# The venue selector's credentials on the session cluster, given as a user gives them: in
# files (0600, in a 0700 directory outside the repository) named by BOTMAIN_*_FILE in the
# environment Ray is started with. "ops" has a ':' in its secret, so its scopes follow it.
SERVE_JWT_SECRET = "test-only-signing-key-" + "k" * 42  # 64 bytes
SERVE_CLIENTS = {"desk": ("desk-secret-1", "decide"), "ops": ("ops:secret=2", "decide+admin")}
SERVE_CLIENTS_TEXT = "desk:desk-secret-1,ops:ops:secret=2:decide+admin"


@pytest.fixture(scope="session")
def serve_secret_files() -> dict[str, str]:
    """``BOTMAIN_JWT_SECRET_FILE`` and ``BOTMAIN_API_CLIENTS_FILE`` -> their paths."""
    directory = Path(tempfile.mkdtemp(prefix="botmain-secrets-"))
    directory.chmod(0o700)
    files = {}
    for name, text in (("JWT_SECRET", SERVE_JWT_SECRET), ("API_CLIENTS", SERVE_CLIENTS_TEXT)):
        path = directory / name.lower()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        files[f"BOTMAIN_{name}_FILE"] = str(path)
    yield files
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head(session_config_dir: Path, serve_secret_files: dict[str, str]) -> BotmainConfig:
    """A real local Ray head (GCS, raylet, dashboard, job API) with token auth on, started
    by ``cluster.runtime.start_head`` (what ``botmain up`` runs) on free ports, its
    processes seeing the session configuration and the venue selector's secret files;
    stopped at the end of the session."""
    from cluster import runtime

    config = load_config(session_config_dir)
    runtime.start_head(config.cluster, env={"BOTMAIN_CONFIG_DIR": str(session_config_dir), "BOTMAIN_PG_DSN": "",
                                            **serve_secret_files})
    yield config
    runtime.stop_head(config.cluster)
    shutil.rmtree(config.cluster.head.temp_dir, ignore_errors=True)


SAMPLE_BARS = SAMPLE / "binance/futures/SOL_USDT_USDT-1m-futures.feather"
SAMPLE_FUNDING = SAMPLE / "drift/SOL-PERP.csv"


@pytest.fixture(scope="session")
def lake_config(session_config_dir: Path) -> BotmainConfig:
    """The session configuration with the sample bars (binanceusdm:SOL-PERP, 1m) and the
    Drift SOL-PERP funding series written to its lake (the store is not touched)."""
    from cluster.lake import Lake
    from jobs.ingest.formats import read_file
    from jobs.ingest.naming import InstrumentResolver

    config = load_config(session_config_dir)
    lake = Lake(config.lake_root)
    resolver = InstrumentResolver(config)
    for path in (SAMPLE_BARS, SAMPLE_FUNDING):
        for series in read_file(path, resolver, None).series:
            lake.write(series.kind, series.instrument.venue, series.instrument.symbol, series.table)
    return config


SAMPLE_RECORDINGS = [
    SAMPLE / "hftbacktest/usdm/btcusdt_20240808.gz",
    SAMPLE / "hftbacktest/spot/btcusdt_20240808.gz",
    SAMPLE / "hftbacktest/hyperliquid/btcusd_20250126.gz",
]


@pytest.fixture(scope="session")
def replay_config(session_config_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BotmainConfig:
    """The session configuration with its own lake holding the sample's three L2 recordings
    (Binance USD-M and spot BTCUSDT 2024-08-08, Hyperliquid BTC 2025-01-26: quotes, trades,
    book updates) and the Drift SOL-PERP funding series."""
    import dataclasses

    from cluster.config.models import LakeConfig
    from cluster.lake import Lake
    from jobs.ingest.formats import read_file
    from jobs.ingest.naming import InstrumentResolver

    config = load_config(session_config_dir)
    root = tmp_path_factory.mktemp("replay-lake")
    config = dataclasses.replace(config, store=config.store.model_copy(update={"lake": LakeConfig(root=str(root))}))
    lake = Lake(config.lake_root)
    resolver = InstrumentResolver(config)
    for path in (*SAMPLE_RECORDINGS, SAMPLE_FUNDING):
        for series in read_file(path, resolver, None).series:
            lake.write(series.kind, series.instrument.venue, series.instrument.symbol, series.table)
    return config


def with_replay(config: BotmainConfig, **settings) -> BotmainConfig:
    """``config`` with the replay feed's settings changed (validated)."""
    import dataclasses

    from cluster.config.models import ReplayFeedConfig

    replay = ReplayFeedConfig.model_validate({**config.market_data.feeds.replay.model_dump(), **settings})
    feeds = config.market_data.feeds.model_copy(update={"replay": replay})
    return dataclasses.replace(config, market_data=config.market_data.model_copy(update={"feeds": feeds}))


def with_database(config: BotmainConfig, dsn: str) -> BotmainConfig:
    """``config`` with the store at ``dsn``'s database on the same (embedded) server: what an
    actor that resolves the store from its own environment writes into."""
    import dataclasses
    from urllib.parse import urlsplit

    postgres = config.store.postgres
    embedded = postgres.embedded.model_copy(update={"database": urlsplit(dsn).path.lstrip("/")})
    store = config.store.model_copy(update={"postgres": postgres.model_copy(update={"embedded": embedded})})
    return dataclasses.replace(config, store=store)


def without_store(config: BotmainConfig) -> BotmainConfig:
    """``config`` with the MDS neither persisting nor recording."""
    import dataclasses

    mds = config.market_data.mds
    mds = mds.model_copy(update={"persist": mds.persist.model_copy(update={"enabled": False}),
                                 "record": mds.record.model_copy(update={"enabled": False})})
    return dataclasses.replace(config, market_data=config.market_data.model_copy(update={"mds": mds}))

