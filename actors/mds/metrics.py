"""Prometheus metrics of the MDS and the feeds, through Ray's metrics agent.

Ray exports ``ray.util.metrics`` from every node at its metrics export port (scrape config
for Prometheus: ``/tmp/ray/session_latest/metrics/prometheus/prom_metrics_service_discovery.json``)
and the Ray dashboard's Metrics view shows them. Names get Ray's ``ray_`` prefix on export.
Outside a Ray worker (unit tests of the server logic) the same calls go to ``NullMetrics``.
"""

from __future__ import annotations


class NullMetrics:
    def events(self, feed: str, kind: str, n: int) -> None: ...
    def pipeline_lag(self, feed: str, seconds: float) -> None: ...
    def event_age(self, feed: str, seconds: float) -> None: ...
    def rate(self, feed: str, per_s: float) -> None: ...
    def venue(self, venue: str, stale: bool, silent_s: float) -> None: ...
    def dropped(self, where: str, name: str, reason: str, n: int) -> None: ...
    def stored(self, table: str, n: int) -> None: ...
    def store_pending(self, rows: int) -> None: ...
    def subscriber_pending(self, name: str, events: int) -> None: ...
    def feed_error(self, feed: str, kind: str, n: int) -> None: ...
    def feed_state(self, feed: str, connected: bool) -> None: ...
    def stream_rejected(self, receiver: str, reason: str) -> None: ...


class RayMetrics(NullMetrics):
    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge

        self._events = Counter("botmain_mds_events_total", "events received by the MDS", tag_keys=("feed", "kind"))
        self._lag = Gauge(
            "botmain_mds_pipeline_lag_seconds",
            "MDS receive time minus the time the feed produced the batch's oldest event",
            tag_keys=("feed",),
        )
        self._age = Gauge(
            "botmain_mds_event_age_seconds", "MDS receive time minus the newest event's own timestamp", tag_keys=("feed",)
        )
        self._rate = Gauge("botmain_mds_events_per_second", "events/s per feed over the last second", tag_keys=("feed",))
        self._stale = Gauge("botmain_mds_venue_stale", "1 while a venue is stale", tag_keys=("venue",))
        self._silent = Gauge("botmain_mds_venue_silent_seconds", "time since a venue's last event", tag_keys=("venue",))
        self._dropped = Counter(
            "botmain_mds_dropped_events_total",
            "events or rows dropped, by where (subscriber, store) and why",
            tag_keys=("where", "name", "reason"),
        )
        self._stored = Counter("botmain_mds_stored_rows_total", "rows COPYed into PostgreSQL", tag_keys=("table",))
        self._store_pending = Gauge("botmain_mds_store_pending_rows", "rows waiting to be stored")
        self._sub_pending = Gauge("botmain_mds_subscriber_pending_events", "events queued for a subscriber", tag_keys=("subscriber",))
        self._feed_errors = Counter("botmain_feed_errors_total", "feed errors by kind", tag_keys=("feed", "kind"))
        self._feed_up = Gauge("botmain_feed_connected", "1 while a feed's session is connected", tag_keys=("feed",))
        self._stream_rejected = Counter(
            "botmain_stream_frames_rejected_total",
            "connections and frames a market-data link refused, by receiver and reason",
            tag_keys=("receiver", "reason"),
        )

    def events(self, feed: str, kind: str, n: int) -> None:
        self._events.inc(n, tags={"feed": feed, "kind": kind})

    def pipeline_lag(self, feed: str, seconds: float) -> None:
        self._lag.set(seconds, tags={"feed": feed})

    def event_age(self, feed: str, seconds: float) -> None:
        self._age.set(seconds, tags={"feed": feed})

    def rate(self, feed: str, per_s: float) -> None:
        self._rate.set(per_s, tags={"feed": feed})

    def venue(self, venue: str, stale: bool, silent_s: float) -> None:
        self._stale.set(1.0 if stale else 0.0, tags={"venue": venue})
        self._silent.set(silent_s, tags={"venue": venue})

    def dropped(self, where: str, name: str, reason: str, n: int) -> None:
        self._dropped.inc(n, tags={"where": where, "name": name, "reason": reason})

    def stored(self, table: str, n: int) -> None:
        self._stored.inc(n, tags={"table": table})

    def store_pending(self, rows: int) -> None:
        self._store_pending.set(rows)

    def subscriber_pending(self, name: str, events: int) -> None:
        self._sub_pending.set(events, tags={"subscriber": name})

    def feed_error(self, feed: str, kind: str, n: int) -> None:
        self._feed_errors.inc(n, tags={"feed": feed, "kind": kind})

    def feed_state(self, feed: str, connected: bool) -> None:
        self._feed_up.set(1.0 if connected else 0.0, tags={"feed": feed})

    def stream_rejected(self, receiver: str, reason: str) -> None:
        self._stream_rejected.inc(1, tags={"receiver": receiver, "reason": reason})


def metrics() -> NullMetrics:
    import ray

    return RayMetrics() if ray.is_initialized() else NullMetrics()
