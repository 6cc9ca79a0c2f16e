"""File formats the ingest understands, one module each, all with the same two functions:

* ``matches(path) -> bool``: a cheap look at the name and first bytes;
* ``read(path, resolver, venue=None) -> ParsedFile``: the whole file, validated, as
  lake-shaped series, or ``IngestFileError`` naming the file and the reason.

A reader validates everything before it returns, so a bad file is refused before a
single row of it is stored.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from jobs.ingest.formats import binance_stream, drift_funding, freqtrade, hyperliquid_stream
from jobs.ingest.naming import InstrumentResolver
from jobs.ingest.series import IngestFileError, ParsedFile

READERS: tuple[ModuleType, ...] = (freqtrade, drift_funding, binance_stream, hyperliquid_stream)
SUFFIXES = frozenset({".feather", ".csv", ".gz"})


def reader_for(path: Path) -> ModuleType:
    if not path.is_file():
        raise IngestFileError(path, "no such file")
    for reader in READERS:
        if reader.matches(path):
            return reader
    raise IngestFileError(
        path,
        "unrecognised format: expected a freqtrade .feather file, a Drift funding .csv export, "
        "or a Binance/Hyperliquid websocket recording (.gz)",
    )


def read_file(path: Path, resolver: InstrumentResolver, venue: str | None = None) -> ParsedFile:
    return reader_for(path).read(path, resolver, venue)
