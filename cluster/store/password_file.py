"""The embedded PostgreSQL's password: generated once into a file only its owner can read.

Every process that uses the embedded store (the CLI, Ray jobs, and the actors and Serve
replicas on the head node) reads the password from this file when it resolves the DSN
(``cluster.store.connection.resolve_dsn``), so the password never has to travel as an
argument: Ray keeps actor and deployment arguments in its GCS and shows them in the
dashboard.

A user who wants a password of their own writes it into the file (mode 0600) before the
embedded server is first started. Passwords are printable ASCII without spaces: they go
into a DSN and into SCRAM, where anything else needs escaping or Unicode normalisation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


class PasswordFileError(RuntimeError):
    """The password file is missing, unreadable, too open or holds no usable password."""


def ensure(path: Path) -> str:
    """The password in ``path``; if there is no such file, a new random one written there
    with mode 0600 (created with ``O_EXCL``, so it is never readable by others, not even
    for a moment, and two processes cannot both write one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return read(path)


def read(path: Path) -> str:
    try:
        info = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        raise PasswordFileError(
            f"no password file at {path}: `botmain up` creates it on the machine that runs the embedded store "
            "(or set BOTMAIN_PG_DSN to use another server)"
        ) from None
    except PermissionError:
        raise PasswordFileError(
            f"cannot read the store's password file {path} (permission denied): run as its owner, "
            "or set BOTMAIN_PG_DSN"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise PasswordFileError(f"{path} is not a regular file")
    if info.st_mode & 0o077:
        raise PasswordFileError(
            f"{path} holds the store's password but others may read it (mode {stat.S_IMODE(info.st_mode):04o}): "
            f"chmod 600 {path}"
        )
    password = text.strip()
    if not password:
        raise PasswordFileError(f"{path} is empty: write the password into it, or delete it to have one generated")
    if not all("!" <= c <= "~" for c in password):
        raise PasswordFileError(f"{path}: the password must be printable ASCII without spaces")
    return password


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, 7677), computed here
    so that setting it (``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'``) sends the server
    no plaintext that a statement log could keep. SASLprep is the identity on printable
    ASCII, the only passwords ``read`` accepts."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
