"""Scopes: what an API client may do with its token.

``decide`` asks for decisions and lists the registry; ``admin`` changes which model is
served. A client's scopes are set in ``BOTMAIN_API_CLIENTS`` (``id:secret:decide+admin``;
``decide`` alone when none are written), its token carries them (the ``scope`` claim,
space separated as in RFC 8693 4.2), and ``BearerAuthMiddleware`` compares them with what
the request's route needs before the route runs.

Closed by default, like the token check: a protected route that is not listed below needs
``admin``, so a route added later is not open to every ``decide`` client because nobody
remembered to list it.
"""

from __future__ import annotations

import re

DECIDE = "decide"
ADMIN = "admin"
SCOPES = frozenset({DECIDE, ADMIN})
DEFAULT_SCOPES = frozenset({DECIDE})

_EXACT = {
    ("POST", "/v1/decide"): DECIDE,
    ("POST", "/v1/decide/batch"): DECIDE,
    ("GET", "/v1/models"): DECIDE,
}
_PATTERNS = [
    ("POST", re.compile(r"/v1/models/[^/]+/activate"), ADMIN),
]
ROUTES = {**{f"{m} {p}": s for (m, p), s in _EXACT.items()}, **{f"{m} {r.pattern}": s for m, r, s in _PATTERNS}}


def required_scope(method: str, path: str) -> str:
    """The scope a request needs (``path`` inside the application)."""
    scope = _EXACT.get((method, path))
    if scope is not None:
        return scope
    for route_method, pattern, scope in _PATTERNS:
        if method == route_method and pattern.fullmatch(path):
            return scope
    return ADMIN


def format_scopes(scopes: frozenset[str] | set[str]) -> str:
    """The ``scope`` claim's form: names in a fixed order, space separated."""
    return " ".join(sorted(scopes))


def parse_claim(claim: object) -> frozenset[str]:
    """A token's ``scope`` claim -> its scopes (unknown names are kept, and match nothing)."""
    return frozenset(claim.split()) if isinstance(claim, str) else frozenset()
