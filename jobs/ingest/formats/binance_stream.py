"""Raw Binance WebSocket recordings (spot and USD-M futures), gzip text.

One message per line: ``<local receive time, epoch ns> <JSON as the exchange sent it>``.
Messages are combined-stream envelopes ``{"stream": ..., "data": ...}`` for
``<sym>@depth@...`` (L2 diffs), ``<sym>@bookTicker`` and ``<sym>@trade``, plus REST
depth snapshots ``{"lastUpdateId": ..., "bids": [...], "asks": [...]}`` to start the book.

The book is rebuilt by Binance's documented procedure. Spot: drop diffs with
``u <= lastUpdateId``; the first applied diff has ``U <= lastUpdateId + 1 <= u``; each
next diff starts at the previous ``u + 1``. USD-M futures: drop diffs with
``u < lastUpdateId``; the first applied has ``U <= lastUpdateId <= u``; each next diff's
``pu`` equals the previous ``u``. A break in the chain is a gap: diffs after it are
left out until the next snapshot, and the report counts them. The lake receives only
book updates that rebuild a consistent book.

Timestamps: ``ts`` is the exchange's event/transaction time where the message has one
(futures everything, spot depth and trades); spot bookTicker and the spot REST snapshot
carry none, so their ``ts`` is the local receive time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cluster.domain import MarketKind
from jobs.ingest.formats.recording import columns_to_table, first_message, messages
from jobs.ingest.naming import InstrumentResolver, split_pair
from jobs.ingest.series import IngestFileError, ParsedFile, Series

MS = 1_000_000


def matches(path: Path) -> bool:
    return path.suffix == ".gz" and first_message(path).startswith((b'{"stream"', b'{"lastUpdateId"'))


@dataclass
class _Book:
    """Per-symbol rebuild state and output rows."""

    futures: bool
    last_u: int | None = None  # last applied update id; None = waiting for a snapshot
    pending: list = field(default_factory=list)  # diffs seen while waiting for a snapshot
    rows: dict = field(default_factory=lambda: defaultdict(list))
    gaps: int = 0
    snapshots_applied: int = 0

    def add_snapshot(self, recv: int, snap: dict) -> None:
        ts = snap["T"] * MS if "T" in snap else recv  # the spot REST snapshot has no time
        last_id = snap["lastUpdateId"]
        for is_bid, levels in ((True, snap["bids"]), (False, snap["asks"])):
            for price, size in levels:
                self._row(ts, recv, last_id, True, is_bid, float(price), float(size))
        self.last_u = last_id
        self.snapshots_applied += 1
        pending, self.pending = self.pending, []
        first = True
        for recv_d, diff in pending:
            if self._stale(diff, last_id):
                continue
            if first and not self._bridges(diff, last_id):
                self.gaps += 1
                self.last_u = None
                return
            first = False
            self._apply(recv_d, diff)

    def add_diff(self, recv: int, diff: dict) -> None:
        if self.last_u is None:
            self.pending.append((recv, diff))
            return
        chained = diff.get("pu") == self.last_u if self.futures else diff["U"] == self.last_u + 1
        if not chained:
            if diff["u"] <= self.last_u:
                return  # a duplicate of something applied
            self.gaps += 1
            self.last_u = None
            self.pending.append((recv, diff))  # a later snapshot may pick the chain up again
            return
        self._apply(recv, diff)

    def _stale(self, diff: dict, last_id: int) -> bool:
        return diff["u"] < last_id if self.futures else diff["u"] <= last_id

    def _bridges(self, diff: dict, last_id: int) -> bool:
        if self.futures:
            return diff["U"] <= last_id <= diff["u"]
        return diff["U"] <= last_id + 1 <= diff["u"]

    def _apply(self, recv: int, diff: dict) -> None:
        ts = diff.get("T", diff["E"]) * MS
        for is_bid, levels in ((True, diff["b"]), (False, diff["a"])):
            for price, size in levels:
                self._row(ts, recv, diff["u"], False, is_bid, float(price), float(size))
        self.last_u = diff["u"]

    def _row(self, ts: int, recv: int, seq: int, snap: bool, is_bid: bool, price: float, size: float) -> None:
        r = self.rows
        r["ts"].append(ts)
        r["ts_recv"].append(recv)
        r["seq"].append(seq)
        r["is_snapshot"].append(snap)
        r["is_bid"].append(is_bid)
        r["price"].append(price)
        r["size"].append(size)


def read(path: Path, resolver: InstrumentResolver, venue: str | None = None) -> ParsedFile:
    recorded = list(messages(path))
    futures = any(
        isinstance(m, dict) and isinstance(m.get("data"), dict) and m["data"].get("e") == "depthUpdate"
        and "pu" in m["data"]
        for _, _, m in recorded
    )
    venue = venue or ("binanceusdm" if futures else "binance")
    books: dict[str, _Book] = {}
    quotes: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    trades: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    unplaced_snapshots: list[tuple[int, dict]] = []
    unknown_streams = 0

    for line_no, recv, msg in recorded:
        if not isinstance(msg, dict):
            raise IngestFileError(path, f"line {line_no}: expected a JSON object")
        if "lastUpdateId" in msg:
            # A REST snapshot names no symbol; it belongs to the recording's depth stream.
            unplaced_snapshots.append((recv, msg))
            continue
        stream, data = msg.get("stream", ""), msg.get("data")
        if not isinstance(data, dict):
            raise IngestFileError(path, f"line {line_no}: expected a combined-stream message with 'data'")
        try:
            if "@depth" in stream:
                book = books.setdefault(data["s"], _Book(futures=futures))
                for snap_recv, snap in unplaced_snapshots:
                    book.add_snapshot(snap_recv, snap)
                unplaced_snapshots.clear()
                book.add_diff(recv, data)
            elif stream.endswith("@bookTicker"):
                q = quotes[data["s"]]
                q["ts"].append(data["T"] * MS if "T" in data else recv)
                q["ts_recv"].append(recv)
                q["seq"].append(data["u"])
                q["bid"].append(float(data["b"]))
                q["bid_size"].append(float(data["B"]))
                q["ask"].append(float(data["a"]))
                q["ask_size"].append(float(data["A"]))
            elif stream.endswith("@trade"):
                t = trades[data["s"]]
                t["ts"].append(data["T"] * MS)
                t["ts_recv"].append(recv)
                t["trade_id"].append(str(data["t"]))
                t["price"].append(float(data["p"]))
                t["size"].append(float(data["q"]))
                t["side"].append("sell" if data["m"] else "buy")  # m: the buyer was the maker
            else:
                unknown_streams += 1
        except (KeyError, TypeError, ValueError) as exc:
            raise IngestFileError(path, f"line {line_no}: malformed {stream or 'message'} ({exc!r})") from None
    if unplaced_snapshots and books:
        # Snapshots after the last diff still belong to the (single) depth stream.
        book = next(iter(books.values()))
        try:
            for snap_recv, snap in unplaced_snapshots:
                book.add_snapshot(snap_recv, snap)
        except (KeyError, TypeError, ValueError) as exc:
            raise IngestFileError(path, f"malformed depth snapshot ({exc!r})") from None

    symbols = set(books) | set(quotes) | set(trades)
    if not symbols:
        raise IngestFileError(path, "no depth, bookTicker or trade messages found")
    out: list[Series] = []
    notes: list[str] = []
    if unknown_streams:
        notes.append(f"{unknown_streams} message(s) from streams other than depth/bookTicker/trade ignored")
    kind = MarketKind.PERP if futures else MarketKind.SPOT
    for symbol in sorted(symbols):
        try:
            base, quote = split_pair(symbol)
            instrument = resolver.resolve(venue, symbol, kind, base, quote)
        except (KeyError, ValueError) as exc:
            raise IngestFileError(path, exc.args[0]) from None
        if symbol in books:
            book = books[symbol]
            if book.gaps:
                notes.append(f"{symbol}: {book.gaps} gap(s) in the depth update chain")
            if book.snapshots_applied == 0:
                notes.append(f"{symbol}: no depth snapshot in the recording; the book cannot be rebuilt")
            elif book.last_u is None:
                notes.append(f"{symbol}: {len(book.pending)} diff(s) after the last gap left out (no later snapshot)")
            if book.rows:
                out.append(Series("book_updates", instrument, columns_to_table(book.rows)))
        if symbol in quotes:
            out.append(Series("quotes", instrument, columns_to_table(quotes[symbol])))
        if symbol in trades:
            out.append(Series("trades", instrument, columns_to_table(trades[symbol])))
    return ParsedFile(out, notes)
