"""An embedded PostgreSQL 16 server, from the binaries the ``pgserver`` wheel bundles.

Used when ``BOTMAIN_PG_DSN`` is unset: a single-machine store. It listens on 127.0.0.1
only, and every connection, over TCP or the unix socket (in the data directory, mode
0700), authenticates with a password (``scram-sha-256``); ``pg_hba.conf`` has no other
line. The password is generated once into a 0600 file (``password_file``, by default
beside the data directory: ``var/pg.password``) and every process reads it from there
(``dsn``). For a multi-node cluster, point every node at a real server with
``BOTMAIN_PG_DSN``.

A data directory initialised by an earlier Botmain, with ``trust`` authentication, is
upgraded in place on start: the server is restarted reachable over its unix socket only,
the ``postgres`` role gets the password from the file, and ``pg_hba.conf`` is replaced.
Nothing stored changes.

As root, the server runs as the system user ``pgserver`` (PostgreSQL refuses root); see
``cluster.store.system_user`` for what that user must reach and why nothing is chmodded.
The server outlives the process that started it: ``botmain down`` stops it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from cluster.store import password_file, system_user

log = logging.getLogger(__name__)


def _bundled_install() -> Path:
    # Located without importing pgserver, whose import has side effects (a lock file,
    # atexit hooks, a platformdirs warning) we do not want.
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the pgserver package is not installed: run `make test` or `uv sync`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall"


BUNDLED_INSTALL = _bundled_install()
SUPERUSER = "postgres"
AUTH_METHOD = "scram-sha-256"
HBA = f"""\
# Written by Botmain (cluster/store/embedded.py). Password (SCRAM) authentication only:
# over the unix socket (in the data directory, mode 0700) and the loopback addresses.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  {AUTH_METHOD}
host    all       all   127.0.0.1/32   {AUTH_METHOD}
host    all       all   ::1/128        {AUTH_METHOD}
"""
# While upgrading a trust-authenticated data directory: the server listens on no TCP
# address, and only the superuser may connect, over the socket that only the server's
# user (and root) can reach.
_UPGRADE_HBA = f"local   all   {SUPERUSER}   trust\n"


class EmbeddedPostgresError(RuntimeError):
    pass


def scratch_directory(prefix: str) -> Path:
    """A new temporary directory for a throwaway server (tests, benchmarks) that the
    server's system user can enter: ``tempfile.mkdtemp`` makes it 0700, and starting the
    server opens nothing up by itself. Its parent (the system's temp dir) must already
    let others pass, as /tmp does."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


class EmbeddedPostgres:
    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 54329,
        database: str = "botmain",
        password_file: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.password_file = (
            Path(password_file).resolve() if password_file else self.data_dir.parent / f"{self.data_dir.name}.password"
        )
        self.host = host
        self.port = port
        self.database = database
        # Extra postgresql.conf settings, e.g. {"fsync": "off"} for throwaway test servers.
        self.settings = settings or {}
        self._run_as = system_user.server_user()
        self._install: Path | None = None

    @property
    def dsn(self) -> str:
        """The DSN, password included (read from ``password_file``): never log it
        unmasked (``cluster.config.mask_dsn``)."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        password = quote(password_file.read(self.password_file), safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{SUPERUSER}:{password}@{host}:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> str:
        """Initialise the data directory if needed (or upgrade one that trusts every local
        connection), start the server if it is not running, make sure the database
        exists, and return the DSN."""
        system_user.make_dirs(self.data_dir.parent, for_user=self._run_as)
        with self._lock():
            if self._run_as:
                system_user.ensure_system_user(self._run_as)
                try:
                    system_user.check_can_enter(self._run_as, self.data_dir.parent, what=f"its data directory {self.data_dir}")
                except system_user.UnreachableError as exc:
                    raise EmbeddedPostgresError(str(exc)) from None
                self._install = system_user.server_install(self._run_as, BUNDLED_INSTALL, self.data_dir.parent, create=True)
            initialised = (self.data_dir / "PG_VERSION").exists()
            if initialised and not self.password_file.exists() and not self._trusts_anyone():
                raise EmbeddedPostgresError(
                    f"{self.data_dir} authenticates with a password, but its password file {self.password_file} "
                    "is missing: put it back (it holds the postgres role's password), point "
                    "postgres.embedded.password_file in configs/store.yaml at it, or move the data directory "
                    "away to start afresh"
                )
            password = password_file.ensure(self.password_file)
            if not initialised:
                self._initdb(password)
            elif self._trusts_anyone():
                self._upgrade_to_passwords(password)
            if not self.is_running():
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", self._server_options())
            self._create_database(password)
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
            [str(self._bin("pg_ctl")), "status", "-D", str(self.data_dir)],
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
        """Stop the server and delete its data directory and password file (tests only)."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.password_file.unlink(missing_ok=True)

    # --- internals --------------------------------------------------------------------

    def _bin(self, name: str) -> Path:
        if self._install is None:  # start() decides, copying if need be; elsewhere, look
            self._install = system_user.server_install(self._run_as, BUNDLED_INSTALL, self.data_dir.parent, create=False)
        return self._install / "bin" / name

    def _server_options(self, **overrides: str) -> str:
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.data_dir),
            "max_connections": "200",
            "password_encryption": AUTH_METHOD,
            **self.settings,
            **overrides,
        }
        return " ".join(f"-c {key}={value!r}" if value == "" else f"-c {key}={value}" for key, value in options.items())

    def _initdb(self, password: str) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} exists, is not empty and holds no PostgreSQL cluster; "
                "move it away or set postgres.embedded.data_dir in configs/store.yaml"
            )
        self.data_dir.mkdir(exist_ok=True)
        owner = system_user.ensure_system_user(self._run_as) if self._run_as else None
        if owner:
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        # initdb reads the superuser's password from a file; it runs as the server's user,
        # so the file is a private copy owned by that user, removed straight after.
        fd, pwfile = tempfile.mkstemp(prefix=".initdb-", dir=self.data_dir.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            if owner:
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            result = subprocess.run(
                [
                    str(self._bin("initdb")),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--auth={AUTH_METHOD}",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                user=self._run_as,
            )
        finally:
            os.unlink(pwfile)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed for {self.data_dir}: {result.stderr.strip()}")
        self._write_hba(HBA)

    def _trusts_anyone(self) -> bool:
        """True if ``pg_hba.conf`` lets a connection in without a password: ``trust``
        (what an earlier Botmain wrote, ``initdb --auth=trust``), or ``peer``/``ident``."""
        try:
            text = (self.data_dir / "pg_hba.conf").read_text()
        except FileNotFoundError:
            return False
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if fields and fields[0] in ("local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc"):
                if {"trust", "peer", "ident"} & set(fields[3:]):
                    return True
        return False

    def _upgrade_to_passwords(self, password: str) -> None:
        """Give the superuser the password and replace ``pg_hba.conf``: stop the server,
        start it on the unix socket only with just the superuser trusted there, set the
        password (as a SCRAM verifier: no plaintext reaches the server), stop it, and
        write the password-only ``pg_hba.conf``. Safe to repeat if interrupted."""
        log.warning(
            "%s was initialised with trust authentication (an earlier Botmain): switching it to "
            "password authentication, password in %s",
            self.data_dir,
            self.password_file,
        )
        if self.is_running():
            self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
        self._write_hba(_UPGRADE_HBA)
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", self._server_options(listen_addresses=""))
        try:
            verifier = password_file.scram_verifier(password)
            self._psql_socket(f"ALTER ROLE {SUPERUSER} PASSWORD '{verifier}';")
        finally:
            self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
        self._write_hba(HBA)

    def _write_hba(self, text: str) -> None:
        """Replace ``pg_hba.conf`` atomically, owned by the server's user, mode 0600."""
        target = self.data_dir / "pg_hba.conf"
        staging = self.data_dir / "pg_hba.conf.botmain"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if self._run_as:
            owner = system_user.ensure_system_user(self._run_as)
            os.chown(staging, owner.pw_uid, owner.pw_gid)
        os.replace(staging, target)

    def _psql_socket(self, sql: str) -> None:
        """Run ``sql`` as the superuser over the unix socket (the statement on stdin, not
        on a command line that ``ps`` would show)."""
        cmd = [str(self._bin("psql")), "-h", str(self.data_dir), "-p", str(self.port), "-U", SUPERUSER]
        cmd += ["-d", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        result = subprocess.run(cmd, input=sql, capture_output=True, text=True)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"could not set the password of {self.data_dir}: {result.stderr.strip()}")

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(self._bin("pg_ctl")), "-D", str(self.data_dir), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, user=self._run_as)
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedPostgresError(
                f"pg_ctl {args[0]} failed for {self.data_dir} (port {self.port}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )

    def _create_database(self, password: str) -> None:
        psql = [str(self._bin("psql")), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"]
        psql += ["-X", "-w", "-tAc"]
        # psql's own variable: seen only by this child, never on its command line.
        env = {**os.environ, "PGPASSWORD": password}
        deadline = time.monotonic() + 30
        while True:
            found = subprocess.run(
                psql + [f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
                capture_output=True,
                text=True,
                env=env,
            )
            if found.returncode == 0:
                break
            if "password authentication failed" in found.stderr:
                raise EmbeddedPostgresError(
                    f"the server on port {self.port} refuses the password in {self.password_file}: is that file "
                    f"the one for {self.data_dir}, and is the server on that port this data directory's?"
                )
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"server on port {self.port} does not answer: {found.stderr}")
            time.sleep(0.2)
        if found.stdout.strip() != "1":
            subprocess.run(psql + [f'CREATE DATABASE "{self.database}"'], check=True, capture_output=True, env=env)

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
