"""The replay feed: recorded real market data from the lake, in event-time order, at a
chosen speed. It is the default source that runs everywhere (no network).

What it plays, per series in the lake (filtered by ``instruments``, ``kinds``, ``start``
and ``end``):

* ``quotes`` -> ``Quote`` (the venue's recorded top of book, e.g. Binance bookTicker);
* ``trades`` -> ``Trade``;
* ``book_updates`` -> ``L2Book`` snapshots of the rebuilt book, one per ``book_interval_ms``
  of event time (the state after the interval's last message, ``book_depth`` levels), the
  same sampling the ingest stores in PostgreSQL;
* ``funding`` -> ``FundingRate`` (with the recorded oracle and mark TWAPs);
* ``bars_<timeframe>`` -> ``Bar``, stamped with the bar's *close* time, since that is when a
  live feed could first have published it.

All series are merged into one stream ordered by event time (ties keep the order above),
and published in batches. ``speed: max`` publishes as fast as the Market Data Server
acknowledges (back-pressure through the feed's bounded in-flight batches); a number
paces the stream so that one second of event time takes ``1/speed`` seconds, bursts and
lulls included. ``rate`` (load testing) ignores the recorded times and publishes that many
events per second, evenly.

Resuming: each batch carries the replay's position after its last event (``cursor``); when
Ray restarts the feed actor, it asks the MDS where the last batch whose rows are stored
ended and starts there (``resume_at``), so a restart neither replays from the start nor
leaves a gap.

Simplifications: a book snapshot that the recording leaves crossed (a missed depth
message) is skipped and counted as a ``crossed_book`` error rather than published; the
replay does not model the feed latency the recording's ``ts_recv`` shows.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from actors.feeds.base import Feed
from actors.feeds.errors import CrossedBook, FeedConfigError, FeedError
from cluster.book_snapshots import sample_snapshots
from cluster.config import BotmainConfig
from cluster.config.models import ReplayFeedConfig
from cluster.domain import Bar, FundingRate, L2Book, Quote, Side, Trade
from cluster.lake import Lake, timeframe_seconds

CHUNK = 4096  # events materialised at a time


@dataclass
class _Series:
    """One lake series as parallel Python lists, and how to build its i-th event."""

    ts: np.ndarray  # int64 event times
    build: object  # callable(i) -> event


class ReplayFeed(Feed):
    name = "replay"

    def __init__(self, config: BotmainConfig, settings: ReplayFeedConfig) -> None:
        super().__init__(config, settings)
        self.settings: ReplayFeedConfig = settings
        self.lake = Lake(config.lake_root)
        self.position = 0  # events published so far
        self.total = 0
        self.first_ts_ns = 0
        self.last_ts_ns = 0

    # --- reading the lake ---------------------------------------------------------------

    def plan(self) -> list[tuple[str, str, str]]:
        """(lake kind, venue, symbol) of every series to play."""
        s = self.settings
        wanted = set(s.kinds)
        kinds = {
            "quotes": "quotes",
            "trades": "trades",
            "book_updates": "books",
            "funding": "funding",
            f"bars_{s.timeframe}": "bars",
        }
        keys = set(s.instruments) if s.instruments is not None else None
        out = []
        for part in self.lake.summary() if self.lake.root.exists() else []:
            kind = kinds.get(part.kind)
            if kind is None or kind not in wanted:
                continue
            if keys is not None and f"{part.venue}:{part.instrument}" not in keys:
                continue
            out.append((part.kind, part.venue, part.instrument))
        order = list(kinds)  # quotes before trades before books... at equal timestamps
        out.sort(key=lambda t: (order.index(t[0]), t[1], t[2]))
        return out

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[_Series]]:
        """Every event's (time, series, row), merged in event-time order, and the series."""
        series: list[_Series] = []
        for kind, venue, symbol in self.plan():
            table = self.lake.read(kind, venue, symbol, self.settings.start, self.settings.end)
            if table.num_rows == 0:
                continue
            built = self._series(kind, f"{venue}:{symbol}", table)
            if built is not None and len(built.ts):
                series.append(built)
        if not series:
            raise FeedConfigError(
                f"nothing to replay in the lake at {self.lake.root} for kinds {self.settings.kinds}"
                + (f", instruments {self.settings.instruments}" if self.settings.instruments else "")
                + (f", from {self.settings.start}" if self.settings.start else "")
                + (f" to {self.settings.end}" if self.settings.end else "")
                + " (run `botmain ingest data/sample` first)"
            )
        ts = np.concatenate([s.ts for s in series])
        which = np.concatenate([np.full(len(s.ts), i, dtype=np.int32) for i, s in enumerate(series)])
        row = np.concatenate([np.arange(len(s.ts), dtype=np.int64) for s in series])
        order = np.argsort(ts, kind="stable")  # stable: equal times keep the plan's kind order
        return ts[order], which[order], row[order], series

    def _series(self, kind: str, key: str, table: pa.Table) -> _Series | None:
        ts = _ns(table["ts"])
        if kind == "quotes":
            bid, bsz, ask, asz = (table[c].to_pylist() for c in ("bid", "bid_size", "ask", "ask_size"))
            seq = table["seq"].to_pylist()
            t = ts.tolist()
            return _Series(ts, lambda i: Quote(t[i], key, bid[i], bsz[i], ask[i], asz[i], seq[i]))
        if kind == "trades":
            price, size, tid = (table[c].to_pylist() for c in ("price", "size", "trade_id"))
            side = [Side.BUY if s == "buy" else Side.SELL for s in table["side"].to_pylist()]
            t = ts.tolist()
            return _Series(ts, lambda i: Trade(t[i], key, price[i], size[i], side[i], tid[i]))
        if kind == "funding":
            rate, interval, oracle, mark = (
                table[c].to_pylist() for c in ("rate", "interval_s", "oracle_price", "mark_price")
            )
            t = ts.tolist()
            return _Series(ts, lambda i: FundingRate(t[i], key, rate[i], interval[i], oracle[i], mark[i]))
        if kind.startswith("bars_"):
            step = timeframe_seconds(kind.removeprefix("bars_"))
            close_ts = ts + step * 1_000_000_000
            o, h, lo, c, v = (table[x].to_pylist() for x in ("open", "high", "low", "close", "volume"))
            t = ts.tolist()
            return _Series(close_ts, lambda i: Bar(t[i], key, step, o[i], h[i], lo[i], c[i], v[i]))
        if kind == "book_updates":
            interval_ns = int(self.settings.book_interval_ms * 1e6)
            snaps = sample_snapshots(table, interval_ns, self.settings.book_depth)
            snap_ts = _ns(snaps["ts"])
            seq = snaps["seq"].to_pylist()
            bp, bs, ap, az = (snaps[c].to_pylist() for c in ("bid_px", "bid_sz", "ask_px", "ask_sz"))
            t = snap_ts.tolist()

            def book(i: int):
                try:
                    return L2Book(t[i], key, tuple(zip(bp[i], bs[i])), tuple(zip(ap[i], az[i])), seq[i])
                except ValueError as exc:
                    return CrossedBook(str(exc))

            return _Series(snap_ts, book)
        return None

    # --- playing ----------------------------------------------------------------------

    async def session(self) -> None:
        ts, which, row, series = await asyncio.to_thread(self.load)
        # The loaded columns are millions of long-lived Python objects; left to the cyclic
        # garbage collector, each full collection walks them all and stalls the stream for
        # ~100 ms. Freezing moves them out of its sight (they are freed with the feed).
        gc.freeze()
        self.total = len(ts)
        self.first_ts_ns, self.last_ts_ns = int(ts[0]), int(ts[-1])
        builders = [s.build for s in series]
        speed = self.settings.speed
        rate = self.settings.rate
        # A paced replay wakes once per batching interval and sends what came due at once:
        # events are released in slices of that length (their arrival, as a live feed's
        # are at each receipt), and the loop costs one wake-up per batch, not per event.
        tick_s = self.settings.flush_interval_ms / 1000.0
        start_wall = time.monotonic()
        start_i = self.position
        start_ts = int(ts[self.position]) if self.position < len(ts) else 0
        i = self.position
        n = len(ts)
        while i < n:
            if speed == "max" and rate is None:
                j = min(i + CHUNK, n)
            elif rate is not None:  # evenly spaced, for load tests
                wait = max(start_wall + (i - start_i) / rate - time.monotonic(), tick_s)
                await asyncio.sleep(wait)
                j = min(max(start_i + int((time.monotonic() - start_wall) * rate) + 1, i + 1), i + CHUNK, n)
            else:
                due = start_wall + (int(ts[i]) - start_ts) / 1e9 / speed
                wait = max(due - time.monotonic(), tick_s)
                await asyncio.sleep(wait)
                # everything due by now (never an event early), at most a chunk
                now_ts = start_ts + (time.monotonic() - start_wall) * speed * 1e9
                j = int(np.searchsorted(ts, now_ts, side="right"))
                j = min(max(j, i + 1), i + CHUNK, n)
            events = []
            for k in range(i, j):
                event = builders[which[k]](row[k])
                if isinstance(event, FeedError):
                    self.out.error(event)
                else:
                    events.append(event)
            await self.out.emit_many(events, cursor=j)
            i = j
            self.position = i
            if speed == "max" and rate is None:
                await asyncio.sleep(0)  # let the flusher and status calls in
            else:
                await self.out.flush()  # this slice's events leave now, as one batch
        await self.out.flush()

    def resume_at(self, cursor: int) -> None:
        """Start after the first ``cursor`` events of the merged stream (after a restart: where
        the MDS's last stored batch of this run ended). The merge is deterministic for the
        same lake and settings, so the position names the same event."""
        self.position = cursor

    def status(self) -> dict:
        return {
            "position": self.position,
            "total": self.total,
            "first_ts_ns": self.first_ts_ns,
            "last_ts_ns": self.last_ts_ns,
            "speed": self.settings.speed,
            "rate": self.settings.rate,
        }


def _ns(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy()
