"""Which venues have gone silent.

A venue is stale once it has published nothing for longer than its ``stale_after_s``
(venues.yaml). "Now" is wall time for live feeds; for a replay it is event time (the
newest event seen), so a gap in a recording shows as staleness exactly as it would have
live, at any replay speed. The MDS removes stale venues from the best price and tells
subscribers, so that execution can exclude them.
"""

from __future__ import annotations

import time

from cluster.events import VenueStatus


class StalenessTracker:
    def __init__(self, limits_s: dict[str, float], clock: str, default_limit_s: float = 10.0) -> None:
        if clock not in ("wall", "event"):
            raise ValueError(f"clock must be 'wall' or 'event', got {clock!r}")
        self.clock = clock
        self.limits_ns = {venue: int(s * 1e9) for venue, s in limits_s.items()}
        self.default_limit_ns = int(default_limit_s * 1e9)
        self.last_seen: dict[str, int] = {}  # venue -> clock time of its newest event
        self.stale: set[str] = set()
        self.event_now = 0

    def now(self) -> int:
        return self.event_now if self.clock == "event" else time.time_ns()

    def seen(self, venue: str, event_ts_ns: int) -> None:
        """Record an event; the caller batches these (one call per venue per batch)."""
        if event_ts_ns > self.event_now:
            self.event_now = event_ts_ns
        self.last_seen[venue] = event_ts_ns if self.clock == "event" else time.time_ns()

    def check(self) -> list[VenueStatus]:
        """Transitions since the last check: venues that went stale or came back."""
        now = self.now()
        changes = []
        for venue, last in self.last_seen.items():
            silent = now - last
            is_stale = silent > self.limits_ns.get(venue, self.default_limit_ns)
            if is_stale != (venue in self.stale):
                (self.stale.add if is_stale else self.stale.discard)(venue)
                changes.append(VenueStatus(now, venue, is_stale, silent / 1e9))
        return changes

    def silent_s(self) -> dict[str, float]:
        now = self.now()
        return {venue: (now - last) / 1e9 for venue, last in self.last_seen.items()}
