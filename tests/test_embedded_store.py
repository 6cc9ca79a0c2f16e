"""The embedded PostgreSQL's security against real servers: password (SCRAM) authentication
only, the password generated once into a 0600 file and reused, the DSN every process
resolves for itself, the upgrade of a data directory an earlier Botmain initialised with
trust authentication, and starting the store without changing the mode of anything
outside the project's ``var/``."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from cluster.config import load_config, mask_dsn
from cluster.store import password_file, system_user
from cluster.store.connection import embedded_server, prepare_store, resolve_dsn
from cluster.store.embedded import BUNDLED_INSTALL, HBA, EmbeddedPostgres, EmbeddedPostgresError

from tests.conftest import free_port, write_config_dir


def run(coro):
    return asyncio.run(coro)


async def _select_one(dsn: str, **kwargs) -> int:
    conn = await asyncpg.connect(dsn, **kwargs)
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def own_server(server_dir: Path) -> EmbeddedPostgres:
    server = EmbeddedPostgres(server_dir / "pg", port=free_port(), database="own", settings={"fsync": "off"})
    yield server
    server.destroy()


# --- password authentication ----------------------------------------------------------


def test_connecting_without_a_password_or_with_a_wrong_one_is_refused(pg_server: EmbeddedPostgres):
    where = f"{pg_server.host}:{pg_server.port}/{pg_server.database}"
    for dsn in (f"postgresql://postgres@{where}", f"postgresql://postgres:not-the-password@{where}"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            run(_select_one(dsn))
    # The unix socket (in the data directory) asks for the password too.
    with pytest.raises(asyncpg.InvalidPasswordError):
        run(_select_one(None, host=str(pg_server.data_dir), port=pg_server.port, user="postgres", database="postgres"))
    assert run(_select_one(pg_server.dsn)) == 1


def test_pg_hba_allows_only_scram_over_loopback_and_the_socket(pg_server: EmbeddedPostgres):
    text = (pg_server.data_dir / "pg_hba.conf").read_text()
    assert text == HBA
    rules = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert rules == [
        ["local", "all", "all", "scram-sha-256"],
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
        ["host", "all", "all", "::1/128", "scram-sha-256"],
    ]


def test_the_password_file_is_0600_and_reused_across_restarts(own_server: EmbeddedPostgres):
    first_dsn = own_server.start()
    path = own_server.password_file
    assert path == own_server.data_dir.parent / "pg.password"
    assert _mode(path) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 32 and password in first_dsn
    assert password not in mask_dsn(first_dsn)
    own_server.stop()
    assert own_server.start() == first_dsn
    assert path.read_text().strip() == password and _mode(path) == 0o600
    assert run(_select_one(own_server.dsn)) == 1


def test_a_password_written_before_the_first_start_is_the_one_used(own_server: EmbeddedPostgres):
    own_server.data_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(own_server.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"chosen-by-me_42\n")
    os.close(fd)
    dsn = own_server.start()
    assert ":chosen-by-me_42@" in dsn
    assert run(_select_one(dsn)) == 1


def test_a_password_file_others_can_read_is_refused(own_server: EmbeddedPostgres):
    own_server.start()
    own_server.password_file.chmod(0o644)
    with pytest.raises(password_file.PasswordFileError, match=r"mode 0644\): chmod 600 .*pg.password"):
        own_server.dsn


def test_a_password_data_directory_without_its_password_file_is_refused(own_server: EmbeddedPostgres):
    own_server.start()
    own_server.stop()
    own_server.password_file.unlink()
    with pytest.raises(EmbeddedPostgresError, match="password file .*pg.password is missing: put it back"):
        own_server.start()
    assert not own_server.password_file.exists()  # no new password was made up for it


# --- resolving the DSN in any process ----------------------------------------------------


def test_resolve_dsn_carries_the_password_in_any_process(session_config_dir: Path, pg_server: EmbeddedPostgres, monkeypatch):
    monkeypatch.delenv("BOTMAIN_PG_DSN", raising=False)
    config = load_config(session_config_dir)
    dsn = resolve_dsn(config)
    assert dsn == pg_server.dsn and run(_select_one(dsn)) == 1
    assert resolve_dsn(config, start_embedded=False) == dsn
    # A new process (what a Ray job, actor or replica is) finds it from its own
    # configuration and the password file: nothing is handed to it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTMAIN_PG_DSN")}
    env["BOTMAIN_CONFIG_DIR"] = str(session_config_dir)
    script = (
        "import asyncio, asyncpg\n"
        "from cluster.config import load_config\n"
        "from cluster.store.connection import resolve_dsn\n"
        "dsn = resolve_dsn(load_config(), start_embedded=False)\n"
        "async def one():\n"
        "    conn = await asyncpg.connect(dsn)\n"
        "    print(await conn.fetchval('SELECT current_user'))\n"
        "    await conn.close()\n"
        "asyncio.run(one())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "postgres"


def test_resolve_dsn_prefers_botmain_pg_dsn(session_config_dir: Path, monkeypatch):
    monkeypatch.setenv("BOTMAIN_PG_DSN", "postgresql://someone:secret@db.example/botmain")
    assert resolve_dsn(load_config(session_config_dir)) == "postgresql://someone:secret@db.example/botmain"


# --- upgrading a data directory initialised with trust authentication ------------------


def _old_botmain_data_dir(server: EmbeddedPostgres, *, leave_running: bool) -> None:
    """What an earlier Botmain made: ``initdb --auth=trust``, started, one row stored."""
    user = system_user.server_user()
    server.data_dir.mkdir(parents=True)
    if user:
        owner = system_user.ensure_system_user(user)
        os.chown(server.data_dir, owner.pw_uid, owner.pw_gid)
    bin_dir = BUNDLED_INSTALL / "bin"
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres", "--auth=trust", "--locale=C"],
        check=True, capture_output=True, user=user,
    )  # fmt: skip
    options = f"-c listen_addresses={server.host} -c port={server.port} -c unix_socket_directories={server.data_dir}"
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "start", "-w", "-l", str(server.log_file), "-o", options],
        check=True, capture_output=True, user=user,
    )  # fmt: skip

    async def store_a_row() -> None:
        admin = await asyncpg.connect(f"postgresql://postgres@{server.host}:{server.port}/postgres")
        await admin.execute(f'CREATE DATABASE "{server.database}"')
        await admin.close()
        conn = await asyncpg.connect(f"postgresql://postgres@{server.host}:{server.port}/{server.database}")
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await conn.close()

    run(store_a_row())
    if not leave_running:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "stop", "-w"], check=True, capture_output=True, user=user)


@pytest.mark.parametrize("leave_running", [True, False], ids=["running", "stopped"])
def test_a_trust_data_directory_is_upgraded_to_passwords_keeping_its_data(own_server: EmbeddedPostgres, leave_running):
    _old_botmain_data_dir(own_server, leave_running=leave_running)
    assert not own_server.password_file.exists()
    dsn = own_server.start()
    assert _mode(own_server.password_file) == 0o600
    assert (own_server.data_dir / "pg_hba.conf").read_text() == HBA
    where = f"{own_server.host}:{own_server.port}/{own_server.database}"
    with pytest.raises(asyncpg.InvalidPasswordError):
        run(_select_one(f"postgresql://postgres@{where}"))

    async def kept() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT x FROM kept")
        finally:
            await conn.close()

    assert run(kept()) == 42
    own_server.stop()
    own_server.start()  # the upgrade is done once; a restart just starts
    assert run(kept()) == 42


# --- permissions: nothing outside var/ changes ----------------------------------------------


def _modes_outside(var: Path) -> dict[Path, int]:
    """Modes of every parent of ``var`` and of the bundled server installation (its
    directories, files and parents): what an earlier Botmain chmodded."""
    paths = [*var.parents, *BUNDLED_INSTALL.parents, BUNDLED_INSTALL]
    for dirpath, dirnames, filenames in os.walk(BUNDLED_INSTALL):
        paths += [Path(dirpath) / n for n in dirnames + filenames]
    return {p: _mode(p) for p in paths if not p.is_symlink()}


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when we are root")
def test_starting_the_store_changes_no_mode_outside_var(server_dir: Path, tmp_path: Path, monkeypatch):
    """The store's part of ``botmain up`` (resolve_dsn + migrations; test_cli runs the
    command itself) on a fresh data directory in a project whose directory the server's
    user may pass (0711) but not list."""
    project = server_dir / "project"
    project.mkdir(mode=0o711)
    project.chmod(0o711)
    var = project / "var"
    directory = write_config_dir(
        tmp_path / "configs",
        store={"postgres": {"embedded": {"data_dir": str(var / "pg"), "password_file": str(var / "pg.password"), "port": free_port()}}},
    )
    monkeypatch.delenv("BOTMAIN_PG_DSN", raising=False)
    config = load_config(directory)
    before = _modes_outside(var)
    try:
        dsn = resolve_dsn(config)
        run(prepare_store(dsn))
        assert run(_select_one(dsn)) == 1
        assert _modes_outside(var) == before
        assert _mode(project) == 0o711
    finally:
        embedded_server(config).destroy()


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when we are root")
def test_a_parent_the_server_user_cannot_enter_is_refused_by_name_and_left_alone(server_dir: Path):
    private = server_dir / "private"
    private.mkdir()
    private.chmod(0o700)
    server = EmbeddedPostgres(private / "var" / "pg", port=free_port())
    with pytest.raises(EmbeddedPostgresError, match=rf"'pgserver', which cannot enter {private} \(mode 0700, owner root\).*chmod o\+x {private}"):
        server.start()
    assert _mode(private) == 0o700
    assert not server.password_file.exists() and not server.data_dir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when we are root")
def test_binaries_the_server_user_cannot_run_in_place_are_copied_beside_the_data_dir(
    own_server: EmbeddedPostgres, server_dir: Path, monkeypatch
):
    """A virtualenv the server's user cannot enter (under /root, say): the installation
    is copied once beside the data directory and runs from there; the original is left
    as it was."""
    hidden = server_dir / "hidden"
    hidden.mkdir()
    hidden.chmod(0o700)
    site_packages = BUNDLED_INSTALL.parent.parent  # the wheel's layout: pgserver/pginstall, pgserver.libs
    (hidden / "pgserver").mkdir()
    subprocess.run(["cp", "-a", str(BUNDLED_INSTALL), str(hidden / "pgserver" / "pginstall")], check=True)
    subprocess.run(["cp", "-a", str(site_packages / "pgserver.libs"), str(hidden / "pgserver.libs")], check=True)
    unreachable = hidden / "pgserver" / "pginstall"
    assert not system_user.can_run(system_user.SYSTEM_USER, unreachable)
    monkeypatch.setattr("cluster.store.embedded.BUNDLED_INSTALL", unreachable)
    dsn = own_server.start()
    assert run(_select_one(dsn)) == 1
    copies = list(own_server.data_dir.parent.glob(".pginstall-*"))
    assert len(copies) == 1
    assert own_server._install == copies[0] / "pgserver" / "pginstall"
    assert system_user.can_run(system_user.SYSTEM_USER, own_server._install)
    assert own_server.is_running() and _mode(hidden) == 0o700
