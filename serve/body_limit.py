"""Request bodies bounded while they arrive: 413 before an oversize body is read whole.

Every endpoint reads its whole body (JSON or a form) before it can answer, so this
middleware reads it for them, counting as the chunks come: a body whose declared
``Content-Length`` is over the route's limit is refused before any of it is read, and a
body sent without one (chunked) is refused as soon as the bytes received pass the limit.
The route then gets the body from memory, already known to fit.

What it cannot bound: Ray Serve 2.60's HTTP proxy moves every body chunk it receives into a
queue for the replica as fast as the client sends, whether or not the replica reads it, so
what a client pushes before the 413 reaches it is held there for that moment; once the
response is out, uvicorn reads and discards the rest of the body, keeping the connection
(closing it with unread data would reset it, and the client could lose the 413). A hard bound at the edge is a
reverse proxy's (``client_max_body_size`` in nginx: README, "The service").
"""

from __future__ import annotations

from serve.asgi import relative_path, send_json

TOKEN_BYTES = 4096  # a token request is a few form fields
# 1,000 requests with their own market state for six candidates are ~2 MB
BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_BYTES = 64 * 1024  # one decision request, with market state for up to 32 candidates
LIMITS = {"/v1/token": TOKEN_BYTES, "/v1/decide/batch": BATCH_BYTES}
NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})  # no route of these reads a body


def limit_for(path: str) -> int:
    return LIMITS.get(path, DEFAULT_BYTES)


def _too_large(limit: int) -> dict[str, str]:
    return {"error": "request_too_large", "error_description": f"the request body is over {limit:,} bytes, this endpoint's limit"}


class BodyLimitMiddleware:
    """ASGI middleware: 413 for a body over ``limit_for(path)``; ``on_reject`` counts refusals."""

    def __init__(self, app, on_reject) -> None:
        self.app = app
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = limit_for(relative_path(scope))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            return await self._refuse(send, limit)
        if declared is None and scope["method"] in NO_BODY:
            return await self.app(scope, receive, send)  # nothing announced, and nothing here reads one
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the route sees it too
                return await self.app(scope, _replay([], message, receive), send)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await self._refuse(send, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return await self.app(scope, _replay([body], None, receive), send)

    async def _refuse(self, send, limit: int) -> None:
        self.on_reject("too_large")
        await send_json(send, 413, _too_large(limit), {})


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # uvicorn refuses a malformed one before we see it
    return None


def _replay(bodies: list[bytes], last: dict | None, receive):
    """A ``receive`` that hands out the body read so far, then what ``receive`` says next
    (a disconnect, when the client goes away while the route runs)."""
    pending = [{"type": "http.request", "body": b, "more_body": False} for b in bodies]
    if last is not None:
        pending.append(last)

    async def replayed():
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
