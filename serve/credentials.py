"""The venue selector's credentials: the keys that sign and verify its access tokens, and
the API clients with their secrets and scopes.

Read from the environment of the process that uses them: a Serve replica reads its own
(the Ray node's, as ``botmain up`` started it), never constructor arguments, which Serve
keeps in its controller's state in the GCS and shows in the dashboard. ``botmain serve``
reads the same variables once, only to refuse to deploy with a clear message when they are
missing or malformed.

``BOTMAIN_JWT_SECRET`` (or the file named by ``BOTMAIN_JWT_SECRET_FILE``): one or more HMAC
keys, separated by commas or newlines. The first signs new tokens; every one listed
verifies them, so a key can be rotated without refusing the tokens already out:

1. list the new key second on every node: it is accepted, nothing is signed with it yet;
2. list it first: new tokens are signed with it, the old key still verifies;
3. after the token lifetime (``jwt.ttl_s``) plus the leeway, drop the old key.

Each token names its key in the ``kid`` header, derived from the key itself (``key_id``),
so every node names the same key alike with nothing more to configure.

``BOTMAIN_API_CLIENTS`` (or ``_FILE``): comma-separated ``client_id:client_secret`` entries,
optionally followed by ``:scope+scope`` (``decide``, ``admin``; ``decide`` when none are
written, so entries written before scopes existed keep their meaning). A secret that itself
contains ``:`` must be followed by its scopes (``ops:pa:ss:decide``), since the part after an
entry's last ``:`` is read as its scopes; an entry whose last part is no scope list is
refused at start rather than guessed at.

Error messages name an entry or a key by its position, never by its value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from pydantic import SecretStr

from cluster.config.secrets import ENV_PREFIX, SecretError, read_secret
from serve.scopes import DEFAULT_SCOPES, SCOPES

JWT_SECRET = "JWT_SECRET"
API_CLIENTS = "API_CLIENTS"
# RFC 7518 3.2: an HMAC key at least as long as the hash output.
MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_KEY_SEPARATORS = re.compile(r"[,\n]")


class AuthConfigError(ValueError):
    """The service cannot start: a secret is missing or malformed."""


def key_id(key: str) -> str:
    """A key's id (the JWT ``kid``): an HMAC of a fixed label under the key.

    It tells whoever holds it nothing a token does not already: a token's signature, an
    HMAC of known claims under the same key, lets its holder test a guessed key just as well."""
    return hmac.new(key.encode(), b"botmain-jwt-kid", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRing:
    """The keys that verify, as ``(kid, key)`` in their order: the first signs. (A tuple, so
    that two rings with the same keys in another order differ: step 2 of a rotation.)"""

    entries: tuple[tuple[str, SecretStr], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_kid", dict(self.entries))

    @property
    def signing_kid(self) -> str:
        return self.entries[0][0]

    def signing_key(self) -> str:
        return self.entries[0][1].get_secret_value()

    def key(self, kid: str) -> str | None:
        found = self._by_kid.get(kid)
        return found.get_secret_value() if found is not None else None

    @property
    def kids(self) -> list[str]:
        return [kid for kid, _ in self.entries]


@dataclass(frozen=True)
class Client:
    secret: SecretStr
    scopes: frozenset[str]


@dataclass(frozen=True)
class Credentials:
    keys: KeyRing
    clients: dict[str, Client]

    @classmethod
    def from_environment(cls, algorithm: str, environ: dict[str, str] | None = None) -> Credentials:
        """From ``environ`` (default: this process's environment); ``AuthConfigError`` names
        the variable that is missing or wrong."""
        try:
            keys = read_secret(JWT_SECRET, environ)
            clients = read_secret(API_CLIENTS, environ)
        except SecretError as exc:
            raise AuthConfigError(str(exc)) from None
        if keys is None:
            raise AuthConfigError(
                f"{ENV_PREFIX}{JWT_SECRET} is not set in this process's environment: the venue selector signs its "
                f"access tokens with it (set it, or {ENV_PREFIX}{JWT_SECRET}_FILE, to a random string of at least "
                f"{MIN_KEY_BYTES[algorithm]} bytes, in the environment Ray was started with: botmain up)"
            )
        if clients is None:
            raise AuthConfigError(
                f"{ENV_PREFIX}{API_CLIENTS} is not set in this process's environment: no client could obtain a token "
                "(set it, or its _FILE variant, to client_id:client_secret[:scopes] entries, comma separated, "
                "in the environment Ray was started with: botmain up)"
            )
        return cls(parse_keys(keys.get_secret_value(), algorithm), parse_clients(clients.get_secret_value()))


def parse_keys(text: str, algorithm: str) -> KeyRing:
    """``key1,key2`` (or one per line) -> a ``KeyRing`` whose first key signs."""
    keys: dict[str, SecretStr] = {}
    entries = [k for k in (part.strip() for part in _KEY_SEPARATORS.split(text)) if k]
    for i, key in enumerate(entries, start=1):
        if len(key.encode()) < MIN_KEY_BYTES[algorithm]:
            which = f"key {i}" if len(entries) > 1 else "it"
            raise AuthConfigError(
                f"{ENV_PREFIX}{JWT_SECRET} is too short for {algorithm}: {which} needs at least "
                f"{MIN_KEY_BYTES[algorithm]} bytes (RFC 7518 3.2)"
            )
        kid = key_id(key)
        if kid in keys:
            raise AuthConfigError(f"{ENV_PREFIX}{JWT_SECRET}: key {i} is listed twice")
        keys[kid] = SecretStr(key)
    if not keys:
        raise AuthConfigError(f"{ENV_PREFIX}{JWT_SECRET} lists no key")
    return KeyRing(tuple(keys.items()))


def parse_clients(text: str) -> dict[str, Client]:
    """``id:secret[:scope+scope],...`` -> {id: Client}."""
    clients: dict[str, Client] = {}
    for i, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        client_id, sep, rest = entry.partition(":")
        client_id = client_id.strip()
        if not sep or not client_id or not rest:
            raise AuthConfigError(f"{ENV_PREFIX}{API_CLIENTS}: entry {i} is not client_id:client_secret[:scopes]")
        secret, scopes = rest, DEFAULT_SCOPES
        if ":" in rest:
            secret, _, written = rest.rpartition(":")
            names = frozenset(written.split("+"))
            if not written or not names <= SCOPES or not secret:
                raise AuthConfigError(
                    f"{ENV_PREFIX}{API_CLIENTS}: entry {i}: the part after its last ':' is not a list of scopes "
                    f"({' or '.join(sorted(SCOPES))}, joined by '+'); a secret that contains ':' must be followed "
                    "by its scopes, e.g. client_id:client_secret:decide"
                )
            scopes = names
        if client_id in clients:
            raise AuthConfigError(f"{ENV_PREFIX}{API_CLIENTS}: client {client_id!r} is listed twice")
        clients[client_id] = Client(SecretStr(secret), scopes)
    if not clients:
        raise AuthConfigError(f"{ENV_PREFIX}{API_CLIENTS} lists no client")
    return clients
