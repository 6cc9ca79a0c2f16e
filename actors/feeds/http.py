"""HTTP requests to venue APIs, with every failure turned into a ``FeedError``.

One place decides what a 429, a 5xx, a timeout or a body that is not JSON means, so
every HTTP feed handles them the same way.
"""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from actors.feeds.errors import FeedTimeout, MalformedResponse, RateLimited, VenueRejected, VenueUnavailable


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        import time

        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    what: str = "",
) -> Any:
    return await request_json(session, "GET", url, params=params, headers=headers, timeout_s=timeout_s, what=what)


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: dict[str, Any] | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    what: str = "",
) -> Any:
    """The parsed JSON body of a 2xx answer: ``request_body``'s errors, plus
    MalformedResponse for a 2xx whose body is not JSON."""
    body = await request_body(
        session, method, url, params=params, json_body=json_body, headers=headers, timeout_s=timeout_s, what=what
    )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"{what or url}: body is not JSON ({exc}): {snippet(body)}") from None


async def request_body(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: dict[str, Any] | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    what: str = "",
    max_bytes: int | None = None,
) -> bytes:
    """The raw body of a 2xx answer. Raises RateLimited (429), VenueUnavailable (5xx,
    connection failures), FeedTimeout, VenueRejected (other 4xx, with the body's error
    text) or MalformedResponse (a body larger than ``max_bytes``)."""
    label = what or url
    try:
        async with session.request(
            method,
            url,
            params=params,
            json=json_body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            status = response.status
            if status == 429:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                hint = f", Retry-After {retry_after:g}s" if retry_after is not None else ", no Retry-After"
                raise RateLimited(f"{label}: HTTP 429 rate limited{hint}", retry_after)
            if max_bytes is None:
                body = await response.read()
            else:
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise MalformedResponse(f"{label}: body larger than {max_bytes} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
    except asyncio.TimeoutError:
        raise FeedTimeout(f"{label}: no answer within {timeout_s:g}s") from None
    except aiohttp.ClientError as exc:
        raise VenueUnavailable(f"{label}: {type(exc).__name__}: {exc}") from None
    if status >= 500:
        raise VenueUnavailable(f"{label}: HTTP {status}: {snippet(body)}")
    if status >= 400:
        raise VenueRejected(f"{label}: HTTP {status}: {snippet(body)}", kind=_rejection_kind(body), status=status)
    return body


def _rejection_kind(body: bytes) -> str:
    """Jupiter-style ``{"error", "errorCode"}`` bodies name the reason; use it as the label."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "rejected"
    if isinstance(data, dict) and isinstance(data.get("errorCode"), str):
        return data["errorCode"].lower()
    return "rejected"


def snippet(body: bytes, limit: int = 200) -> str:
    """The start of a body, for error messages."""
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
