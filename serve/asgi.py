"""The ASGI plumbing the service's middlewares share: the path a request has inside the
application, a JSON answer sent without FastAPI, and the ``X-Replica`` header.

The service's checks (rate limit, bearer token) are pure ASGI middlewares rather than
FastAPI dependencies: a dependency costs about 0.2 ms per request to resolve, as much as
deciding the request, on a machine whose CPU Serve's own per-request work already fills.
"""

from __future__ import annotations

import json


def relative_path(scope: dict) -> str:
    """The request's path inside the application (without a Serve route prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def send_json(send, status: int, body: dict, headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class ReplicaHeader:
    """Every response names the replica that gave it (``X-Replica``), so a client, a log or
    a test can tell which replica answered (a 429 or a 401 too)."""

    def __init__(self, app, replica: str) -> None:
        self.app = app
        self.header = (b"x-replica", replica.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_named(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)
