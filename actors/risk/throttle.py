"""The order rate throttle: at most ``limit`` accepted orders per strategy in any sliding
``window`` (1 s). A sliding window rather than a token bucket, so that a refusal can say
how many orders went in the last second."""

from __future__ import annotations

from collections import deque

SECOND_NS = 1_000_000_000


class OrderRate:
    __slots__ = ("limit", "window_ns", "times")

    def __init__(self, limit: int, window_ns: int = SECOND_NS) -> None:
        self.limit = limit
        self.window_ns = window_ns
        self.times: deque[int] = deque(maxlen=limit)  # accept times, oldest first

    def full(self, now_ns: int) -> bool:
        """Whether one more now would make ``limit + 1`` within the window."""
        t = self.times
        return len(t) == self.limit and now_ns - t[0] < self.window_ns

    def recent(self, now_ns: int) -> int:
        return sum(1 for t in self.times if now_ns - t < self.window_ns)

    def record(self, now_ns: int) -> None:
        self.times.append(now_ns)
