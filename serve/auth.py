"""OAuth 2.0 client credentials for the venue selector's HTTP API.

A client trades its id and secret (``BOTMAIN_API_CLIENTS``) for a short-lived JWT at
``POST /v1/token`` (RFC 6749 4.4), then sends it as a bearer token (RFC 6750). Tokens are
HMAC-signed with the first key of ``BOTMAIN_JWT_SECRET`` and name it in their ``kid``
header; any listed key verifies (rotation, see serve.credentials). Verification pins the
configured algorithm, so a token signed with another algorithm, or with ``alg: none``, is
refused however it was made, and allows ``jwt.leeway_s`` of clock skew between the node
that issued a token and the one that checks it.

A token carries its client's scopes (serve.scopes); a request whose route needs a scope
the token lacks gets 403 naming it. Nothing here logs a secret or a token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote_plus

import jwt
from starlette.datastructures import Headers

from cluster.config.models import JwtConfig
from serve.asgi import relative_path, send_json
from serve.credentials import Credentials
from serve.scopes import format_scopes, parse_claim, required_scope

VERIFIED_CACHE = 10_000  # tokens remembered as verified (until they expire)
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "jti", "scope"]


class AuthError(Exception):
    """A request the API refuses; carries the HTTP status, the OAuth error code and headers."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description, **self.extra}


def _token_error(status: int, error: str, description: str) -> AuthError:
    """RFC 6749 5.2; a 401 (``invalid_client``) carries the Basic challenge it requires."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="botmain"'
    return AuthError(status, error, description, headers)


def _invalid_token(description: str) -> AuthError:
    return AuthError(401, "invalid_token", description, {"WWW-Authenticate": 'Bearer realm="botmain", error="invalid_token"'})


class Authenticator:
    """Issues and verifies access tokens for one deployment, with one set of credentials
    (a replica builds a new one when its credentials change)."""

    def __init__(self, config: JwtConfig, credentials: Credentials) -> None:
        self.config = config
        self.credentials = credentials
        self._keys = credentials.keys
        self._clients = {cid: c.secret.get_secret_value().encode() for cid, c in credentials.clients.items()}
        self._scopes = {cid: c.scopes for cid, c in credentials.clients.items()}
        # compared against when the client id is unknown, so both paths cost the same
        self._decoy = b"\0" * 32
        # token -> (claims, scopes), for tokens that verified
        self._verified: dict[str, tuple[dict, frozenset[str]]] = {}

    # --- the token endpoint --------------------------------------------------------------

    def token_response(self, content_type: str, body: bytes, authorization: str | None) -> dict:
        """``POST /v1/token``: a form-encoded client-credentials grant -> the token response
        (RFC 6749 5.1), or an ``AuthError`` shaped as RFC 6749 5.2."""
        if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
            raise _token_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
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
        return self.issue(client_id, self._granted(client_id, form.get("scope")))

    def _granted(self, client_id: str, requested: str | None) -> frozenset[str]:
        """RFC 6749 3.3: the scopes asked for, if the client has them all; all of its scopes
        if it asked for none."""
        allowed = self._scopes[client_id]
        if requested is None or not requested.strip():
            return allowed
        asked = frozenset(requested.split())
        if not asked <= allowed:
            raise _token_error(400, "invalid_scope", f"scope {format_scopes(asked - allowed)!r} is not granted to this client "
                                                     f"(it has: {format_scopes(allowed)})")
        return asked

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

    def issue(self, client_id: str, scopes: frozenset[str], now: float | None = None) -> dict:
        issued = int(time.time() if now is None else now)
        cfg = self.config
        claims = {
            "iss": cfg.issuer,
            "aud": cfg.audience,
            "sub": client_id,
            "iat": issued,
            "exp": issued + cfg.ttl_s,
            "jti": uuid.uuid4().hex,
            "scope": format_scopes(scopes),
        }
        token = jwt.encode(claims, self._keys.signing_key(), algorithm=cfg.algorithm, headers={"kid": self._keys.signing_kid})
        return {"access_token": token, "token_type": "Bearer", "expires_in": cfg.ttl_s, "scope": claims["scope"]}

    # --- protected endpoints -------------------------------------------------------------

    def verify_header(self, authorization: str | None) -> frozenset[str]:
        """The scopes of a valid ``Authorization: Bearer`` token, or a 401 ``AuthError``.

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
        return self.verify(token.strip())[1]

    def verify(self, token: str) -> tuple[dict, frozenset[str]]:
        """A token's claims and scopes; a token verified before is only checked for expiry
        again (the signature and claims of the same string cannot change), which saves the
        HMAC and the decoding on every request of a client that reuses its token."""
        known = self._verified.get(token)
        if known is not None and time.time() < known[0]["exp"] + self.config.leeway_s:
            return known
        claims = self._decode(token)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()
        verified = self._verified[token] = (claims, parse_claim(claims["scope"]))
        return verified

    def _key_for(self, token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _invalid_token(f"the token is not valid: {type(exc).__name__}") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise _invalid_token("the token names no key (kid): get a new one from /v1/token")
        key = self._keys.key(kid)
        if key is None:
            raise _invalid_token(f"the token's key {kid!r} is not one this service accepts (rotated out?): get a new token")
        return key

    def _decode(self, token: str) -> dict:
        cfg = self.config
        key = self._key_for(token)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[cfg.algorithm],
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid_token("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid_token(f"the token is not valid yet (issued more than {cfg.leeway_s} s ahead of this node's clock)") from None
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


def _insufficient_scope(method: str, path: str, needed: str, held: frozenset[str]) -> AuthError:
    """RFC 6750 3.1: 403 with ``error="insufficient_scope"`` and the scope needed."""
    return AuthError(
        403, "insufficient_scope",
        f"{method} {path} needs the {needed!r} scope; this token has: {format_scopes(held) or 'none'}",
        {"WWW-Authenticate": f'Bearer realm="botmain", error="insufficient_scope", scope="{needed}"'},
        extra={"scope": needed},
    )


OPEN_PATHS = frozenset({"/v1/healthz", "/v1/token", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


class BearerAuthMiddleware:
    """ASGI middleware: every HTTP request but those to ``OPEN_PATHS`` needs a valid bearer
    token (else 401) holding the scope its route needs (serve.scopes; else 403), checked
    here before routing. Closed by default: a route added later is protected without anyone
    remembering to say so (an unknown path without a token gets 401, with one 403 or 404).

    ``get_authenticator()`` is asked per request: the replica replaces its authenticator
    when its credentials change. ``on_reject`` counts refusals in the metrics."""

    def __init__(self, app, get_authenticator: Callable[[], Authenticator], on_reject) -> None:
        self.app = app
        self.get_authenticator = get_authenticator
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        path = relative_path(scope) if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        try:
            held = self.get_authenticator().verify_header(Headers(scope=scope).get("authorization"))
            needed = required_scope(scope["method"], path)
            if needed not in held:
                raise _insufficient_scope(scope["method"], path, needed, held)
        except AuthError as exc:
            self.on_reject("unauthorized" if exc.status == 401 else "forbidden")
            return await send_json(send, exc.status, exc.body(), exc.headers)
        return await self.app(scope, receive, send)
