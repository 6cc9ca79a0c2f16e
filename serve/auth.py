"""OAuth 2.0 client credentials for the venue selector's HTTP API.

A client trades its id and secret (``BOTMAIN_API_CLIENTS``) for a short-lived JWT at
``POST /v1/token`` (RFC 6749 4.4), then sends it as a bearer token (RFC 6750). Tokens are
HMAC-signed with ``BOTMAIN_JWT_SECRET``; verification pins the configured algorithm, so a
token signed with another algorithm, or with ``alg: none``, is refused however it was made.

The secrets are read once, where the application is built (the ``botmain serve`` process,
or a test), and handed to the replicas as ``SecretStr``: a replica's own environment is the
Ray node's, which need not carry them. Nothing here logs a secret or a token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

import jwt
from pydantic import SecretStr
from starlette.datastructures import Headers

from cluster.config.models import JwtConfig
from cluster.config.secrets import ENV_PREFIX, read_secret
from serve.asgi import relative_path, send_json

JWT_SECRET = "JWT_SECRET"
API_CLIENTS = "API_CLIENTS"
# RFC 7518 3.2: an HMAC key at least as long as the hash output.
MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MAX_TOKEN_BODY = 4096  # bytes; a token request is a few form fields
VERIFIED_CACHE = 10_000  # tokens remembered as verified (until they expire)


class AuthConfigError(ValueError):
    """The service cannot start: a secret is missing or malformed."""


class AuthError(Exception):
    """A request the API refuses; carries the HTTP status, the OAuth error code and headers."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class AuthSecrets:
    """The signing key and the allowed clients (id -> secret)."""

    jwt_secret: SecretStr
    clients: dict[str, SecretStr]

    @classmethod
    def from_environment(cls, algorithm: str, environ: dict[str, str] | None = None) -> AuthSecrets:
        key = read_secret(JWT_SECRET, environ)
        if key is None:
            raise AuthConfigError(
                f"{ENV_PREFIX}{JWT_SECRET} is not set: the venue selector signs its access tokens with it "
                f"(set it, or {ENV_PREFIX}{JWT_SECRET}_FILE, to a random string of at least {MIN_KEY_BYTES[algorithm]} bytes)"
            )
        if len(key.get_secret_value().encode()) < MIN_KEY_BYTES[algorithm]:
            raise AuthConfigError(
                f"{ENV_PREFIX}{JWT_SECRET} is too short for {algorithm}: "
                f"it needs at least {MIN_KEY_BYTES[algorithm]} bytes (RFC 7518 3.2)"
            )
        raw = read_secret(API_CLIENTS, environ)
        if raw is None:
            raise AuthConfigError(
                f"{ENV_PREFIX}{API_CLIENTS} is not set: no client could obtain a token "
                "(set it to client_id:client_secret pairs, comma separated)"
            )
        return cls(key, parse_clients(raw.get_secret_value()))


def parse_clients(text: str) -> dict[str, SecretStr]:
    """``id:secret,id2:secret2`` -> {id: secret}. Errors name the entry by position, never its secret."""
    clients: dict[str, SecretStr] = {}
    for i, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        client_id, sep, secret = entry.partition(":")
        client_id = client_id.strip()
        if not sep or not client_id or not secret:
            raise AuthConfigError(f"{ENV_PREFIX}{API_CLIENTS}: entry {i} is not client_id:client_secret")
        if client_id in clients:
            raise AuthConfigError(f"{ENV_PREFIX}{API_CLIENTS}: client {client_id!r} is listed twice")
        clients[client_id] = SecretStr(secret)
    if not clients:
        raise AuthConfigError(f"{ENV_PREFIX}{API_CLIENTS} lists no client")
    return clients


def _token_error(status: int, error: str, description: str) -> AuthError:
    """RFC 6749 5.2; a 401 (``invalid_client``) carries the Basic challenge it requires."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="botmain"'
    return AuthError(status, error, description, headers)


def _invalid_token(description: str) -> AuthError:
    return AuthError(401, "invalid_token", description, {"WWW-Authenticate": 'Bearer realm="botmain", error="invalid_token"'})


class Authenticator:
    """Issues and verifies access tokens for one deployment."""

    def __init__(self, config: JwtConfig, secrets: AuthSecrets) -> None:
        self.config = config
        self._key = secrets.jwt_secret.get_secret_value()
        self._clients = {cid: s.get_secret_value().encode() for cid, s in secrets.clients.items()}
        # compared against when the client id is unknown, so both paths cost the same
        self._decoy = b"\0" * 32
        self._verified: dict[str, dict] = {}  # token -> claims, for tokens that verified

    # --- the token endpoint --------------------------------------------------------------

    def token_response(self, content_type: str, body: bytes, authorization: str | None) -> dict:
        """``POST /v1/token``: a form-encoded client-credentials grant -> the token response
        (RFC 6749 5.1), or an ``AuthError`` shaped as RFC 6749 5.2."""
        if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
            raise _token_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        if len(body) > MAX_TOKEN_BODY:
            raise _token_error(400, "invalid_request", f"the body is over {MAX_TOKEN_BODY} bytes")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            raise _token_error(400, "invalid_request", "the body is not a valid form encoding") from None
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:
                raise _token_error(400, "invalid_request", f"parameter {name!r} is repeated")
            form[name] = value
        grant = form.get("grant_type")
        if not grant:
            raise _token_error(400, "invalid_request", "grant_type is missing (expected client_credentials)")
        client_id, secret = self._client_credentials(form, authorization)
        if grant != "client_credentials":
            raise _token_error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported (expected client_credentials)")
        self.authenticate_client(client_id, secret)
        return self.issue(client_id)

    @staticmethod
    def _client_credentials(form: dict[str, str], authorization: str | None) -> tuple[str, str]:
        in_form = "client_id" in form or "client_secret" in form
        if authorization:
            scheme, _, encoded = authorization.partition(" ")
            if scheme.lower() != "basic":
                raise _token_error(401, "invalid_client", "client authentication must use HTTP Basic or form fields")
            if in_form:
                raise _token_error(400, "invalid_request", "client credentials were sent both by HTTP Basic and in the form")
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise _token_error(401, "invalid_client", "the Basic credentials are not valid base64") from None
            client_id, sep, secret = decoded.partition(":")
            if not sep:
                raise _token_error(401, "invalid_client", "the Basic credentials are not client_id:client_secret")
            # RFC 6749 2.3.1: both are form-encoded before Basic encoding
            return unquote_plus(client_id), unquote_plus(secret)
        if not form.get("client_id") or "client_secret" not in form:
            raise _token_error(401, "invalid_client", "client authentication is missing (HTTP Basic, or client_id and client_secret)")
        return form["client_id"], form["client_secret"]

    def authenticate_client(self, client_id: str, secret: str) -> None:
        expected = self._clients.get(client_id)
        matches = hmac.compare_digest(secret.encode(), expected if expected is not None else self._decoy)
        if expected is None or not matches:
            raise _token_error(401, "invalid_client", "unknown client or wrong secret")

    def issue(self, client_id: str, now: float | None = None) -> dict:
        issued = int(time.time() if now is None else now)
        cfg = self.config
        claims = {
            "iss": cfg.issuer,
            "aud": cfg.audience,
            "sub": client_id,
            "iat": issued,
            "exp": issued + cfg.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=cfg.algorithm)
        return {"access_token": token, "token_type": "Bearer", "expires_in": cfg.ttl_s}

    # --- protected endpoints -------------------------------------------------------------

    def verify_header(self, authorization: str | None) -> dict:
        """The claims of a valid ``Authorization: Bearer`` token, or a 401 ``AuthError``.

        A missing header gets no error code in its challenge (RFC 6750 3.1: the client did
        not try), anything else ``error="invalid_token"``."""
        if not authorization:
            raise AuthError(
                401, "invalid_request", "a bearer token is required (POST /v1/token with client credentials)",
                {"WWW-Authenticate": 'Bearer realm="botmain"'},
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _invalid_token("the Authorization header is not 'Bearer <token>'")
        return self.verify(token.strip())

    def verify(self, token: str) -> dict:
        """A token's claims; a token verified before is only checked for expiry again (the
        signature and claims of the same string cannot change), which saves the HMAC and the
        decoding on every request of a client that reuses its token."""
        known = self._verified.get(token)
        if known is not None and time.time() < known["exp"]:
            return known
        claims = self._decode(token)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> dict:
        cfg = self.config
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=[cfg.algorithm],
                audience=cfg.audience,
                issuer=cfg.issuer,
                options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid_token("the token has expired") from None
        except jwt.InvalidAlgorithmError:
            raise _invalid_token(f"the token is not signed with {cfg.algorithm}") from None
        except jwt.InvalidSignatureError:
            raise _invalid_token("the token's signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise _invalid_token(f"the token is not for audience {cfg.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _invalid_token(f"the token was not issued by {cfg.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid_token(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise _invalid_token(f"the token is not valid: {type(exc).__name__}") from None


OPEN_PATHS = frozenset({"/v1/healthz", "/v1/token", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


class BearerAuthMiddleware:
    """ASGI middleware: every HTTP request but those to ``OPEN_PATHS`` needs a valid bearer
    token, or gets the ``AuthError``'s 401 here, before routing. Closed by default: a route
    added later is protected without anyone remembering to say so (an unknown path without
    a token gets 401, with one 404). ``on_reject`` counts refusals in the metrics."""

    def __init__(self, app, authenticator: Authenticator, on_reject) -> None:
        self.app = app
        self.authenticator = authenticator
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or relative_path(scope) in OPEN_PATHS:
            return await self.app(scope, receive, send)
        try:
            self.authenticator.verify_header(Headers(scope=scope).get("authorization"))
        except AuthError as exc:
            self.on_reject("unauthorized")
            return await send_json(send, exc.status, exc.body(), exc.headers)
        return await self.app(scope, receive, send)
