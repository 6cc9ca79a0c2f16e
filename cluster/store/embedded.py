"""An embedded PostgreSQL 16 server, from the binaries the ``pgserver`` wheel bundles.

Used when ``BOTMAIN_PG_DSN`` is unset. The server listens on 127.0.0.1 only, with
``trust`` authentication for local connections: it is a single-machine development store.
For a multi-node cluster, point every node at a real server with ``BOTMAIN_PG_DSN``.

PostgreSQL refuses to run as root; when we are root, the server runs as a system user
``pgserver`` (the same user the pgserver package creates), which owns the data directory.
The server outlives the process that started it: ``botmain down`` stops it.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _bundled_bin_path() -> Path:
    # Located without importing pgserver, whose import has side effects (a lock file,
    # atexit hooks, a platformdirs warning) we do not want.
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the pgserver package is not installed: run `make test` or `uv sync`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bundled_bin_path()
SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    pass


class EmbeddedPostgres:
    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 54329,
        database: str = "botmain",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.database = database
        # Extra postgresql.conf settings, e.g. {"fsync": "off"} for throwaway test servers.
        self.settings = settings or {}
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{self.database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> str:
        """Initialise the data directory if needed, start the server if it is not
        running, make sure the database exists, and return the DSN."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            if not self.is_running():
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", self._server_options())
            self._create_database()
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        """Stop the server. ``mode`` is pg_ctl's: smart, fast or immediate (a crash)."""
        with self._lock():
            if self.is_running():
                self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "status", "-D", str(self.data_dir)],
            capture_output=True,
            text=True,
            user=self._run_as,
        )
        return result.returncode == 0

    def accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def destroy(self) -> None:
        """Stop the server and delete its data directory (tests only)."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- internals --------------------------------------------------------------------

    def _server_options(self) -> str:
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.data_dir),
            "max_connections": "200",
            **self.settings,
        }
        return " ".join(f"-c {key}={value}" for key, value in options.items())

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} exists, is not empty and holds no PostgreSQL cluster; "
                "move it away or set postgres.embedded.data_dir in configs/store.yaml"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            _ensure_system_user(self._run_as)
            _open_path_for(self.data_dir)
            _open_path_for(POSTGRES_BIN_PATH)
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            text=True,
            user=self._run_as,
        )

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, user=self._run_as)
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedPostgresError(
                f"pg_ctl {args[0]} failed for {self.data_dir} (port {self.port}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )

    def _create_database(self) -> None:
        psql = [
            str(POSTGRES_BIN_PATH / "psql"),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-tAc",
        ]
        deadline = time.monotonic() + 30
        while True:
            found = subprocess.run(
                psql + [f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
                capture_output=True,
                text=True,
            )
            if found.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"server on port {self.port} does not answer: {found.stderr}")
            time.sleep(0.2)
        if found.stdout.strip() != "1":
            subprocess.run(psql + [f'CREATE DATABASE "{self.database}"'], check=True, capture_output=True)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop between processes (a demo and a CLI call, say)."""
        lock_path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)


def _open_path_for(path: Path) -> None:
    """Let another user traverse every parent of ``path`` (o+x, o+r on directories),
    and read/execute the bundled binaries and libraries."""
    traverse = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for parent in [path, *path.parents]:
        if parent.exists() and parent.is_dir():
            mode = parent.stat().st_mode
            if mode & traverse != traverse:
                parent.chmod(mode | traverse)
    if path == POSTGRES_BIN_PATH:
        for tree in (POSTGRES_BIN_PATH, POSTGRES_BIN_PATH.parent / "lib", POSTGRES_BIN_PATH.parent / "share"):
            for dirpath, dirnames, filenames in os.walk(tree):
                for name in dirnames + filenames:
                    p = Path(dirpath) / name
                    mode = p.stat().st_mode
                    if mode & traverse != traverse:
                        p.chmod(mode | traverse)
