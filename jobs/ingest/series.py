"""What a format reader hands to the ingest job: typed series for one instrument."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from cluster.domain import Instrument


class IngestFileError(ValueError):
    """A file the ingest refuses; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Series:
    """Rows of one lake kind for one instrument, in the lake's column layout."""

    kind: str  # a lake kind: bars_1m, funding, quotes, trades, book_updates, ...
    instrument: Instrument
    table: pa.Table
    interval_s: int | None = None  # bars: candle length; funding: settlement interval

    @property
    def rows(self) -> int:
        return self.table.num_rows


@dataclass
class ParsedFile:
    """Everything a reader got from one file, plus notes worth a line in the report."""

    series: list[Series]
    notes: list[str] = field(default_factory=list)
