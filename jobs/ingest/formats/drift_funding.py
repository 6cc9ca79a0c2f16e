"""Drift funding-rate records exported from the Drift Data API as CSV (``SOL-PERP.csv``).

Columns: ``ts`` (epoch s), ``fundingRate``, ``fundingRateLong``, ``fundingRateShort``
(USDC per 1 base unit per funding period, already de-scaled from 1e9),
``oraclePriceTwap``, ``markPriceTwap`` (USD), ``periodRevenue``.

Drift's rate is a price difference, not a fraction: the fraction of notional for the
period is ``fundingRate / oraclePriceTwap`` (see docs/venue-apis: dividing by 1e9 alone
is only right when the price is ~1). Settlements are hourly (``funding_period`` 3600 s).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cluster.domain import MarketKind
from jobs.ingest.naming import InstrumentResolver
from jobs.ingest.series import IngestFileError, ParsedFile, Series

COLUMNS = ("ts", "fundingRate", "fundingRateLong", "fundingRateShort", "oraclePriceTwap", "markPriceTwap")
NAME = re.compile(r"^(?P<base>[A-Z0-9]+)-PERP\.csv$")
FUNDING_PERIOD_S = 3600


def matches(path: Path) -> bool:
    if path.suffix != ".csv":
        return False
    with open(path, "rb") as handle:
        header = handle.readline().decode("utf-8", "replace").strip().split(",")
    return all(c in header for c in COLUMNS)


def read(path: Path, resolver: InstrumentResolver, venue: str | None = None) -> ParsedFile:
    match = NAME.match(path.name)
    if not match:
        raise IngestFileError(path, "Drift funding exports are named <BASE>-PERP.csv (e.g. SOL-PERP.csv)")
    base = match.group("base")
    try:
        instrument = resolver.resolve(venue or "drift", f"{base}-PERP", MarketKind.PERP, base, "USD")
    except KeyError as exc:
        raise IngestFileError(path, exc.args[0]) from None
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={"ts": pa.int64(), **{c: pa.float64() for c in COLUMNS[1:]}},
                include_columns=list(COLUMNS),
            ),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise IngestFileError(path, f"not a Drift funding CSV: {exc}") from None
    for name in COLUMNS:
        col = table[name]
        bad = col.null_count + (pc.sum(pc.is_nan(col)).as_py() if pa.types.is_floating(col.type) else 0)
        if bad:
            raise IngestFileError(path, f"column {name} has {bad} empty or NaN value(s)")
    oracle = table["oraclePriceTwap"].to_numpy()
    if (oracle <= 0).any():
        row = int(np.argmax(oracle <= 0))
        raise IngestFileError(path, f"row {row}: oraclePriceTwap must be positive, found {oracle[row]}")
    seconds = table["ts"].to_numpy()
    if (np.diff(seconds) <= 0).any():
        row = int(np.argmax(np.diff(seconds) <= 0)) + 1
        raise IngestFileError(path, f"row {row}: ts is not strictly increasing")
    rate = table["fundingRate"].to_numpy() / oracle
    funding = pa.table(
        {
            "ts": pa.array(seconds * 1_000_000_000, pa.timestamp("ns", tz="UTC")),
            "rate": rate,
            "interval_s": pa.array(np.full(len(rate), FUNDING_PERIOD_S, dtype=np.int32)),
            "oracle_price": table["oraclePriceTwap"],
            "mark_price": table["markPriceTwap"],
        }
    )
    return ParsedFile([Series("funding", instrument, funding, interval_s=FUNDING_PERIOD_S)])
