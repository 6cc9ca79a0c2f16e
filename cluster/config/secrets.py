"""Secrets: from ``BOTMAIN_*`` environment variables or files outside the repository.

A secret ``NAME`` is read from ``BOTMAIN_NAME``, or from the file named by
``BOTMAIN_NAME_FILE`` (a keypair, a DSN with a password). Values are held as
``pydantic.SecretStr`` so that ``repr``, ``str`` and logs show ``**********``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

ENV_PREFIX = "BOTMAIN_"

# Keys that look like secrets; a YAML file that carries one is refused at load.
SECRET_KEY_PATTERN = re.compile(
    r"(password|passwd|secret|api_?key|private_?key|keypair|token|dsn|credential)", re.IGNORECASE
)

KNOWN_SECRETS = {
    "PG_DSN": "PostgreSQL DSN; unset = start the embedded server",
    "JWT_SECRET": "HMAC key that signs the venue selector's access tokens",
    "API_CLIENTS": "client_id:client_secret pairs allowed to request tokens (comma separated)",
    "DRIFT_KEYPAIR": "Solana keypair for Drift (JSON array or base58)",
    "SOLANA_RPC_URL": "Solana RPC endpoint (may embed a provider key)",
    "JUPITER_API_KEY": "Jupiter API key (x-api-key)",
}


class SecretError(ValueError):
    pass


def read_secret(name: str, environ: dict[str, str] | None = None) -> SecretStr | None:
    """Return secret ``name`` or None if neither its variable nor its file is set."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_PREFIX + name)
    if value:
        return SecretStr(value)
    file_var = f"{ENV_PREFIX}{name}_FILE"
    path = env.get(file_var)
    if path:
        try:
            text = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise SecretError(f"{file_var} points to {path!r}, which cannot be read: {exc.strerror}") from None
        if not text:
            raise SecretError(f"{file_var} points to {path!r}, which is empty")
        return SecretStr(text)
    return None


def mask_dsn(dsn: str) -> str:
    """A DSN fit for logs: the password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
