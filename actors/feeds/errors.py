"""What can go wrong with a feed's source, classified so the runner knows what to do.

Every failure a feed sees becomes one of these (``kind`` is the label it is counted under
in the feed's health and metrics). The runner retries all of them with backoff except
``FeedConfigError``, which stops the feed with a clear error: retrying a wrong market name
or a refused key only hammers the venue.
"""

from __future__ import annotations


class FeedError(Exception):
    kind = "error"


class RateLimited(FeedError):
    """HTTP 429. ``retry_after`` is the venue's Retry-After in seconds, if it sent one."""

    kind = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VenueUnavailable(FeedError):
    """5xx, refused or reset connections: the venue is down or overloaded."""

    kind = "unavailable"


class FeedTimeout(FeedError):
    kind = "timeout"


class MalformedResponse(FeedError):
    """The venue answered something that is not the documented shape (bad JSON, missing fields)."""

    kind = "malformed"


class VenueRejected(FeedError):
    """The venue refused one request (a 4xx, ``success: false``, no route for this pair or
    size). Feeds usually record it and carry on with their other requests."""

    def __init__(self, message: str, kind: str = "rejected", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status  # the HTTP status, when the refusal came over HTTP


class CrossedBook(FeedError):
    """A book whose best bid is at or above its best ask (a missed update); it is skipped."""

    kind = "crossed_book"


class StreamDropped(FeedError):
    """A websocket or stream closed mid-subscription."""

    kind = "disconnected"


class FeedConfigError(FeedError):
    """The feed cannot run as configured (unknown market, refused credentials). Not retried."""

    kind = "config"
