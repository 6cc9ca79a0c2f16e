"""Secrets: from ``BOTMAIN_*`` environment variables or files outside the repository.

A secret ``NAME`` is read from ``BOTMAIN_NAME``, or from the file named by
``BOTMAIN_NAME_FILE`` (a keypair, a DSN with a password). Values are held as
``pydantic.SecretStr`` so that ``repr``, ``str`` and logs show ``**********``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

ENV_PREFIX = "BOTMAIN_"

# Keys that look like secrets; a YAML file that carries one is refused at load.
SECRET_KEY_PATTERN = re.compile(
    r"(password|passwd|secret|api_?key|private_?key|keypair|token|dsn|credential)", re.IGNORECASE
)

KNOWN_SECRETS = {
    "PG_DSN": "PostgreSQL DSN; unset = start the embedded server",
    "JWT_SECRET": "HMAC keys of the venue selector's access tokens (comma or newline separated; the first signs, all verify)",
    "API_CLIENTS": "client_id:client_secret[:scope+scope] entries allowed to request tokens (comma separated; scopes decide, admin)",
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
    """A DSN fit for logs: a password, in the user part or the query, becomes ``***``."""
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError:
        return "<unparseable DSN>"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(k.lower() == "password" for k, _ in pairs):
        return dsn
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # IPv6 keeps its brackets
        netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port else "")
    query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
