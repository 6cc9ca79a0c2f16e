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
        # The earliest clock time at which a live venue can go stale: events before it
        # need no check, so the per-event cost is one comparison.
        self.horizon = 0

    def now(self) -> int:
        return self.event_now if self.clock == "event" else time.time_ns()

    def seen(self, venue: str, clock_ns: int) -> VenueStatus | None:
        """Record an event from ``venue`` at ``clock_ns`` (its event time on the event clock,
        its receipt time on the wall clock). Returns the venue's comeback if it was stale."""
        if clock_ns > self.event_now:
            self.event_now = clock_ns
        last = self.last_seen.get(venue)
        if last is None or clock_ns > last:
            self.last_seen[venue] = clock_ns
            limit = self.limits_ns.get(venue, self.default_limit_ns)
            if last is None or clock_ns + limit < self.horizon:
                self.horizon = clock_ns + limit
        if venue in self.stale:
            silent = (clock_ns - last) / 1e9 if last is not None else 0.0
            self.stale.discard(venue)
            return VenueStatus(clock_ns, venue, False, silent)
        return None

    def check(self, now: int | None = None) -> list[VenueStatus]:
        """Venues that went stale by ``now`` (default: the clock's now)."""
        now = self.now() if now is None else now
        changes = []
        horizon = None
        for venue, last in self.last_seen.items():
            if venue in self.stale:
                continue
            limit = self.limits_ns.get(venue, self.default_limit_ns)
            if now - last > limit:
                self.stale.add(venue)
                changes.append(VenueStatus(now, venue, True, (now - last) / 1e9))
            elif horizon is None or last + limit < horizon:
                horizon = last + limit
        self.horizon = horizon if horizon is not None else (1 << 62)
        return changes

    def silent_s(self) -> dict[str, float]:
        now = self.now()
        return {venue: (now - last) / 1e9 for venue, last in self.last_seen.items()}
