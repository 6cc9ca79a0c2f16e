"""Raw Hyperliquid WebSocket recordings, gzip text.

One message per line: ``<local receive time, epoch ns> <JSON>``; channels ``l2Book``
(a full snapshot of up to 20 levels per side: ``data.levels = [bids, asks]``, each level
``{px, sz, n}``, ``data.time`` in ms) and ``trades`` (a list of
``{coin, side: B|A, px, sz, time, tid, hash, users}``; side B means the buyer took).

Each l2Book message is a snapshot, so it becomes a snapshot group in ``book_updates``
and a top-of-book row in ``quotes``. The websocket can redeliver a message (the sample
repeats one l2Book message): trades are de-duplicated by ``tid``, books by their time.
Coins are perpetuals (Hyperliquid's main book), quoted in USD(C).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cluster.domain import MarketKind
from jobs.ingest.formats.recording import columns_to_table, first_message, messages
from jobs.ingest.naming import InstrumentResolver
from jobs.ingest.series import IngestFileError, ParsedFile, Series

MS = 1_000_000


def matches(path: Path) -> bool:
    return path.suffix == ".gz" and first_message(path).startswith(b'{"channel":')


def read(path: Path, resolver: InstrumentResolver, venue: str | None = None) -> ParsedFile:
    venue = venue or "hyperliquid"
    books: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    quotes: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    trades: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    seen_books: set[tuple[str, int]] = set()
    seen_trades: set[tuple[str, int]] = set()
    duplicates = 0
    for line_no, recv, msg in messages(path):
        try:
            channel, data = msg["channel"], msg["data"]
            if channel == "l2Book":
                coin, time_ms = data["coin"], int(data["time"])
                if (coin, time_ms) in seen_books:
                    duplicates += 1
                    continue
                seen_books.add((coin, time_ms))
                bids, asks = data["levels"]
                rows = books[coin]
                for is_bid, levels in ((True, bids), (False, asks)):
                    for level in levels:
                        rows["ts"].append(time_ms * MS)
                        rows["ts_recv"].append(recv)
                        rows["seq"].append(time_ms)
                        rows["is_snapshot"].append(True)
                        rows["is_bid"].append(is_bid)
                        rows["price"].append(float(level["px"]))
                        rows["size"].append(float(level["sz"]))
                if bids and asks:
                    q = quotes[coin]
                    q["ts"].append(time_ms * MS)
                    q["ts_recv"].append(recv)
                    q["seq"].append(time_ms)
                    q["bid"].append(float(bids[0]["px"]))
                    q["bid_size"].append(float(bids[0]["sz"]))
                    q["ask"].append(float(asks[0]["px"]))
                    q["ask_size"].append(float(asks[0]["sz"]))
            elif channel == "trades":
                for trade in data:
                    coin, tid = trade["coin"], int(trade["tid"])
                    if (coin, tid) in seen_trades:
                        duplicates += 1
                        continue
                    seen_trades.add((coin, tid))
                    t = trades[coin]
                    t["ts"].append(int(trade["time"]) * MS)
                    t["ts_recv"].append(recv)
                    t["trade_id"].append(str(tid))
                    t["price"].append(float(trade["px"]))
                    t["size"].append(float(trade["sz"]))
                    t["side"].append({"B": "buy", "A": "sell"}[trade["side"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise IngestFileError(path, f"line {line_no}: malformed Hyperliquid message ({exc!r})") from None

    coins = sorted(set(books) | set(trades))
    if not coins:
        raise IngestFileError(path, "no l2Book or trades messages found")
    out = []
    for coin in coins:
        try:
            instrument = resolver.resolve(venue, coin, MarketKind.PERP, coin, "USD")
        except KeyError as exc:
            raise IngestFileError(path, exc.args[0]) from None
        for kind, rows in (("book_updates", books), ("quotes", quotes), ("trades", trades)):
            if coin in rows:
                table = columns_to_table(rows[coin])
                out.append(Series(kind, instrument, table.sort_by([("ts", "ascending")])))
    notes = [f"{duplicates} redelivered message(s) or trade(s) dropped"] if duplicates else []
    return ParsedFile(out, notes)
