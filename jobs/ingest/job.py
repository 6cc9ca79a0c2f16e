"""The ingest job: files -> Parquet lake + PostgreSQL, with a report of rows per file.

Per file: read and validate all of it (a refused file stores nothing), register its
instruments, merge each series into the lake, then COPY its store rows in exactly-once
batches. At the end, refresh the whitepaper's ``trading_pairs`` from what was read.
Runs in-process (``botmain ingest``) or as a Ray job (``botmain ingest --submit``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cluster.config import BotmainConfig
from cluster.lake import Lake
from cluster.store.connection import prepare_store, resolve_dsn
from cluster.store.reference import PairSummary, upsert_instruments, upsert_trading_pairs, upsert_venues
from cluster.store.writer import StoreWriter
from jobs.ingest import to_store
from jobs.ingest.formats import SUFFIXES, read_file
from jobs.ingest.naming import InstrumentResolver
from jobs.ingest.series import IngestFileError, Series

log = logging.getLogger(__name__)
DAY_NS = 86_400 * 1_000_000_000


@dataclass
class FileReport:
    path: str
    series: list[tuple[str, str, int]] = field(default_factory=list)  # (kind, instrument, rows read)
    lake_new: int = 0
    store_new: int = 0  # rows new to PostgreSQL
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def rows_read(self) -> int:
        return sum(rows for _, _, rows in self.series)


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    unlisted_instruments: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[FileReport]:
        return [f for f in self.files if f.error]

    def render(self) -> str:
        lines = [f"{'file':<58} {'rows read':>10} {'lake new':>10} {'store new':>10}"]
        for f in self.files:
            name = f.path if len(f.path) <= 58 else "..." + f.path[-55:]
            if f.error:
                lines.append(f"{name:<58} REFUSED: {f.error}")
                continue
            lines.append(f"{name:<58} {f.rows_read:>10,} {f.lake_new:>10,} {f.store_new:>10,}")
            for kind, inst, rows in f.series:
                lines.append(f"    {kind:<14} {inst:<40} {rows:>10,}")
            lines.extend(f"    note: {note}" for note in f.notes)
        if self.unlisted_instruments:
            lines.append(
                "instruments not listed in venues.yaml (stored without tick/lot sizes): "
                + ", ".join(sorted(self.unlisted_instruments))
            )
        ok = len(self.files) - len(self.refused)
        lines.append(f"{ok} file(s) ingested, {len(self.refused)} refused")
        return "\n".join(lines)


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; directories searched recursively for the suffixes we read."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES))
        else:
            out.append(p)
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def ingest(
    paths: list[Path],
    config: BotmainConfig,
    *,
    venue: str | None = None,
    snapshot_interval_s: float = to_store.BOOK_SNAPSHOT_INTERVAL_S,
    snapshot_depth: int = to_store.BOOK_SNAPSHOT_DEPTH,
    progress: bool | None = None,
) -> IngestReport:
    """Ingest ``paths``; ``progress`` None shows a bar only on a terminal."""
    resolver = InstrumentResolver(config)
    if venue is not None:
        resolver.check_venue(venue)
    dsn = resolve_dsn(config)
    await prepare_store(dsn)
    report = IngestReport()
    run = _IngestRun(config, resolver, venue, int(snapshot_interval_s * 1e9), snapshot_depth, progress)
    async with StoreWriter(
        dsn, config.store.postgres.reconnect, command_timeout=config.store.postgres.command_timeout_s
    ) as writer:
        venues = [config.venue(name) for name in config.venues.venues]
        await writer.run(lambda conn: upsert_venues(conn, venues), "registering venues")
        for path in expand_paths(paths):
            report.files.append(await run.ingest_file(path, writer))
        summaries = run.pairs.summaries()
        await writer.run(lambda conn: upsert_trading_pairs(conn, summaries), "updating trading_pairs")
    report.unlisted_instruments = sorted(run.unlisted)
    return report


class _IngestRun:
    def __init__(
        self,
        config: BotmainConfig,
        resolver: InstrumentResolver,
        venue: str | None,
        snapshot_interval_ns: int,
        snapshot_depth: int,
        progress: bool | None,
    ) -> None:
        self.config = config
        self.lake = Lake(config.lake_root)
        self.resolver = resolver
        self.venue = venue
        self.snapshot_interval_ns = snapshot_interval_ns
        self.snapshot_depth = snapshot_depth
        self.progress = progress
        self.pairs = _PairTracker()
        self.unlisted: set[str] = set()  # of the files stored: a refused file stored none

    async def ingest_file(self, path: Path, writer: StoreWriter) -> FileReport:
        report = FileReport(str(path))
        try:
            parsed = read_file(path, self.resolver, self.venue)
        except IngestFileError as exc:
            report.error = exc.reason
            log.error("refused %s", exc)
            return report
        report.notes.extend(parsed.notes)
        sha = file_sha256(path)
        instruments = [s.instrument for s in parsed.series]
        self.unlisted.update(i.key for i in instruments if not self.resolver.is_listed(i))
        ids = await writer.run(lambda conn: upsert_instruments(conn, instruments), "registering instruments")
        disable = None if self.progress is None else not self.progress
        with tqdm(total=sum(s.rows for s in parsed.series), desc=path.name[:40], unit="rows", disable=disable, leave=False) as bar:
            for series in parsed.series:
                iid = ids[series.instrument.key]
                report.series.append((series.kind, series.instrument.key, series.rows))
                report.lake_new += self.lake.write(
                    series.kind, series.instrument.venue, series.instrument.symbol, series.table
                )
                mapped = to_store.store_rows(series, self.snapshot_interval_ns, self.snapshot_depth)
                if mapped is not None:
                    table, rows, tag = mapped
                    batch_rows = self.config.store.postgres.copy_batch_rows
                    for batch in to_store.batches(series, rows, table, tag, iid, sha, batch_rows):
                        result = await writer.write(batch)
                        report.store_new += result.inserted
                        bar.update(series.rows * result.rows / max(rows.num_rows, 1))
                else:
                    bar.update(series.rows)
                self.pairs.observe(series, iid)
        return report


class _PairTracker:
    """Latest price, 24h volume and latest funding per instrument, for ``trading_pairs``."""

    def __init__(self) -> None:
        self._price: dict[str, tuple[int, float, int]] = {}  # key -> (ts, price, id)
        self._volume: dict[str, tuple[int, float]] = {}  # key -> (bar ts, 24h volume)
        self._funding: dict[str, tuple[int, float]] = {}

    def observe(self, series: Series, instrument_id: int) -> None:
        key, table = series.instrument.key, series.table
        if table.num_rows == 0:
            return
        ts = table["ts"].to_numpy().astype(np.int64)
        last = int(ts[-1])
        if series.kind.startswith("bars_"):
            self._set_price(key, last, float(table["close"][-1].as_py()), instrument_id)
            recent = ts > last - DAY_NS + (series.interval_s or 0) * 1_000_000_000
            volume = float(table["volume"].to_numpy()[recent].sum())
            if last >= self._volume.get(key, (-1, 0.0))[0]:
                self._volume[key] = (last, volume)
        elif series.kind == "funding":
            if last >= self._funding.get(key, (-1, 0.0))[0]:
                self._funding[key] = (last, float(table["rate"][-1].as_py()))
            oracle = table["oracle_price"][-1].as_py()
            if oracle is not None:
                self._set_price(key, last, float(oracle), instrument_id)
        elif series.kind == "quotes":
            mid = 0.5 * (table["bid"][-1].as_py() + table["ask"][-1].as_py())
            self._set_price(key, last, mid, instrument_id)
        elif series.kind == "trades":
            self._set_price(key, last, float(table["price"][-1].as_py()), instrument_id)

    def _set_price(self, key: str, ts: int, price: float, instrument_id: int) -> None:
        if ts >= self._price.get(key, (-1, 0.0, 0))[0]:
            self._price[key] = (ts, price, instrument_id)

    def summaries(self) -> list[PairSummary]:
        return [
            PairSummary(
                instrument_key=key,
                instrument_id=iid,
                last_price=price,
                volume=self._volume.get(key, (0, None))[1],
                funding_rate=self._funding.get(key, (0, None))[1],
            )
            for key, (_, price, iid) in sorted(self._price.items())
        ]
