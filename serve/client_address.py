"""Which client a request comes from, for the rate limit: the TCP peer, or, when the peer is
one of ``serve.trusted_proxies``, the address that proxy forwarded in ``X-Forwarded-For``.

The peer is the ASGI scope's ``client`` only because Serve's own proxy (uvicorn) is told to
believe nobody's ``X-Forwarded-For`` (serve.proxy): by default it believes 127.0.0.1 and
::1 and rewrites ``client`` from the header, so any client on the same host could name
itself anew in each request and get a fresh bucket every time.

``X-Forwarded-For`` is read from the right: each proxy appends the address it received the
request from, so the first entry, from the right, that is not a trusted proxy is the
client; whatever stands left of it the client wrote itself. An entry that is not an address
ends the walk at the last address a trusted proxy vouched for.
"""

from __future__ import annotations

import functools
import ipaddress

FORWARDED_FOR = b"x-forwarded-for"


def _address(entry: str) -> str | None:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``::1`` or ``[::1]:80`` -> the address, normalised."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


class ClientAddress:
    """``ClientAddress(trusted_proxies)(scope)`` -> the client's address (a rate-limit key)."""

    def __init__(self, trusted_proxies: list[str]) -> None:
        self._networks = [ipaddress.ip_network(n) for n in trusted_proxies]
        self.trusts = functools.lru_cache(maxsize=4096)(self._trusts)

    def _trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def __call__(self, scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self._networks or not self.trusts(peer):
            return peer
        forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == FORWARDED_FOR]
        if not forwarded:
            return peer
        hop = peer
        for entry in reversed(",".join(forwarded).split(",")):
            address = _address(entry)
            if address is None:
                return hop
            if not self.trusts(address):
                return address
            hop = address
        return hop  # every hop a trusted proxy: the first of them is the client
