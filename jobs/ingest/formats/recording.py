"""Websocket recordings: gzip text, one message per line, ``<receive time ns> <JSON>``.

The shape shared by the Binance and Hyperliquid recordings (and the one Botmain's own
feeds would record); each format module interprets the messages.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Iterator

import orjson
import pyarrow as pa

from jobs.ingest.series import IngestFileError


def first_message(path: Path) -> bytes:
    """The JSON text of the first line, or b"" if this is not such a recording."""
    try:
        with gzip.open(path, "rb") as handle:
            line = handle.readline()
    except (OSError, EOFError, zlib.error):
        return b""
    return line.split(b" ", 1)[1] if b" " in line else b""


def messages(path: Path) -> Iterator[tuple[int, int, object]]:
    """Yield ``(line number, receive time ns, decoded JSON)``; a malformed line or a
    damaged gzip stream raises ``IngestFileError`` naming the line."""
    line_no = 0
    try:
        with gzip.open(path, "rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                stamp, _, payload = line.partition(b" ")
                try:
                    yield line_no, int(stamp), orjson.loads(payload)
                except ValueError:
                    raise IngestFileError(
                        path, f"line {line_no}: expected '<receive time ns> <JSON>', got {line[:60]!r}"
                    ) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestFileError(path, f"not a readable gzip file after line {line_no} ({exc})") from None


def columns_to_table(columns: dict[str, list]) -> pa.Table:
    """Lists of values per column -> a table; ``ts*`` columns hold UTC nanoseconds."""
    ts = pa.timestamp("ns", tz="UTC")
    return pa.table({k: pa.array(v, ts) if k.startswith("ts") else v for k, v in columns.items()})
