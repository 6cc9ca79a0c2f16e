"""freqtrade's Feather files (Arrow IPC v2).

Names and layout, as freqtrade writes them under ``<datadir>/<exchange>/``:

* ``BASE_QUOTE-<tf>.feather``: spot candles;
* ``futures/BASE_QUOTE_SETTLE-<tf>-futures.feather``: perpetual candles;
* ``...-<tf>-mark.feather``: mark-price candles (volume 0);
* ``...-<tf>-funding_rate.feather``: one row per funding settlement, the rate (a
  fraction of notional) in ``open``; ``<tf>`` is the download timeframe, not the
  settlement interval, which we infer from the timestamps;
* ``BASE_QUOTE-trades.feather``: public trades (timestamp ms, id, side, price, amount).

Candles carry ``date`` (UTC open time), ``open``, ``high``, ``low``, ``close``,
``volume`` (base units). The exchange is the folder name; freqtrade's ``binance``
futures are ccxt's ``binanceusdm``.

The name is ccxt's unified symbol (``BTC/USDC:USDC`` -> ``BTC_USDC_USDC``); the listings in
venues.yaml use the venue's own symbol, which for most venues is base and quote run
together (``BTCUSDT``). Hyperliquid names a perpetual by its coin (``BTC``, as its
websocket does); ccxt's id for it is an asset index, which no listing uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from cluster.domain import MarketKind
from cluster.lake import timeframe_seconds
from jobs.ingest.naming import InstrumentResolver, UnknownVenue
from jobs.ingest.series import IngestFileError, ParsedFile, Series

NAME = re.compile(
    r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?:_(?P<settle>[A-Z0-9]+))?"
    r"-(?:(?P<trades>trades)|(?P<tf>\d+[smhdw])(?:-(?P<candle>futures|mark|funding_rate))?)\.feather$"
)
CANDLE_COLUMNS = ("date", "open", "high", "low", "close", "volume")
TRADE_COLUMNS = ("timestamp", "id", "side", "price", "amount")
FUTURES_VENUES = {"binance": "binanceusdm"}  # freqtrade exchange folder -> ccxt futures id
COIN_NAMED_PERPS = {"hyperliquid"}  # ccxt ids of venues whose perpetuals are named by their coin


def matches(path: Path) -> bool:
    return path.suffix == ".feather"


def read(path: Path, resolver: InstrumentResolver, venue: str | None = None) -> ParsedFile:
    match = NAME.match(path.name)
    if not match:
        raise IngestFileError(
            path,
            "not a freqtrade file name: expected BASE_QUOTE[_SETTLE]-<timeframe>[-futures|-mark|-funding_rate]"
            ".feather or BASE_QUOTE-trades.feather",
        )
    base, quote, settle = match.group("base"), match.group("quote"), match.group("settle")
    candle = match.group("candle")
    perp = settle is not None or candle in ("futures", "mark", "funding_rate")
    kind = MarketKind.PERP if perp else MarketKind.SPOT
    venue = venue or _venue_from_path(path, perp)
    venue_symbol = base if perp and resolver.exchange(venue) in COIN_NAMED_PERPS else f"{base}{quote}"
    try:
        instrument = resolver.resolve(venue, venue_symbol, kind, base, quote)
    except UnknownVenue as exc:
        raise IngestFileError(
            path, f"{exc.args[0]}; freqtrade keeps files under <datadir>/<exchange>/, else pass --venue"
        ) from None
    except KeyError as exc:
        raise IngestFileError(path, exc.args[0]) from None
    try:
        table = feather.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestFileError(path, f"not a readable Feather/Arrow file ({exc})") from None

    if match.group("trades"):
        return ParsedFile([Series("trades", instrument, _trades(path, table))])
    tf = match.group("tf")
    candles = _candles(path, table)
    if candle == "funding_rate":
        interval = _settlement_interval(path, candles["ts"])
        funding = pa.table(
            {
                "ts": candles["ts"],
                "rate": candles["open"],
                "interval_s": pa.array(np.full(candles.num_rows, interval, dtype=np.int32)),
                "oracle_price": pa.nulls(candles.num_rows, pa.float64()),
                "mark_price": pa.nulls(candles.num_rows, pa.float64()),
            }
        )
        return ParsedFile([Series("funding", instrument, funding, interval_s=interval)])
    _check_ohlc(path, candles)
    prefix = "mark_bars" if candle == "mark" else "bars"
    seconds = timeframe_seconds(tf)
    return ParsedFile([Series(f"{prefix}_{tf}", instrument, candles, interval_s=seconds)])


def _venue_from_path(path: Path, perp: bool) -> str:
    parent = path.parent
    if parent.name == "futures":
        parent = parent.parent
    exchange = parent.name
    if not exchange or exchange in (".", "/"):
        raise IngestFileError(path, "cannot tell the exchange: freqtrade keeps files under <datadir>/<exchange>/")
    return FUTURES_VENUES.get(exchange, exchange) if perp else exchange


def _candles(path: Path, table: pa.Table) -> pa.Table:
    missing = [c for c in CANDLE_COLUMNS if c not in table.column_names]
    if missing:
        raise IngestFileError(path, f"missing column(s) {', '.join(missing)}; freqtrade candles have {', '.join(CANDLE_COLUMNS)}")
    date = table["date"]
    if not pa.types.is_timestamp(date.type):
        raise IngestFileError(path, f"column date should be a timestamp, found {date.type}")
    if date.null_count:
        raise IngestFileError(path, f"column date has {date.null_count} empty value(s)")
    if date.type.tz is None:
        date = date.cast(pa.timestamp(date.type.unit, tz="UTC"))  # freqtrade dates are UTC
    out = {"ts": pc.cast(date, pa.timestamp("ns", tz="UTC"))}
    for name in CANDLE_COLUMNS[1:]:
        col = table[name]
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            raise IngestFileError(path, f"column {name} should be numeric, found {col.type}")
        col = pc.cast(col, pa.float64())
        bad = col.null_count + pc.sum(pc.is_nan(col)).as_py()
        if bad:
            raise IngestFileError(path, f"column {name} has {bad} empty or NaN value(s)")
        out[name] = col
    candles = pa.table(out)
    ts = candles["ts"].to_numpy().astype(np.int64)
    steps = np.diff(ts)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise IngestFileError(path, f"dates are not strictly increasing at row {row} ({candles['ts'][row]})")
    return candles


def _check_ohlc(path: Path, candles: pa.Table) -> None:
    o, h, l, c, v = (candles[n].to_numpy() for n in CANDLE_COLUMNS[1:])
    checks = {
        "a non-positive price": (np.minimum.reduce([o, h, l, c]) <= 0),
        "high below open/close/low": h < np.maximum.reduce([o, c, l]),
        "low above open/close/high": l > np.minimum.reduce([o, c, h]),
        "a negative volume": v < 0,
    }
    for what, bad in checks.items():
        if bad.any():
            row = int(np.argmax(bad))
            raise IngestFileError(path, f"row {row} ({candles['ts'][row]}) has {what}")


def _settlement_interval(path: Path, ts: pa.ChunkedArray) -> int:
    values = ts.to_numpy().astype(np.int64)
    if len(values) < 2:
        raise IngestFileError(path, "a funding file needs at least two settlements to tell their interval")
    return int(np.median(np.diff(values)) // 1_000_000_000)


def _trades(path: Path, table: pa.Table) -> pa.Table:
    missing = [c for c in TRADE_COLUMNS if c not in table.column_names]
    if missing:
        raise IngestFileError(path, f"missing column(s) {', '.join(missing)}; freqtrade trades have {', '.join(TRADE_COLUMNS)}")
    side = pc.cast(table["side"], pa.string())
    if not pc.all(pc.is_in(side, pa.array(["buy", "sell"]))).as_py():
        raise IngestFileError(path, "column side holds values other than buy/sell")
    ts = pc.cast(pc.multiply(pc.cast(table["timestamp"], pa.int64()), 1_000_000), pa.timestamp("ns", tz="UTC"))
    return pa.table(
        {
            "ts": ts,
            "ts_recv": pa.nulls(table.num_rows, pa.timestamp("ns", tz="UTC")),
            "trade_id": pc.cast(table["id"], pa.string()),
            "price": pc.cast(table["price"], pa.float64()),
            "size": pc.cast(table["amount"], pa.float64()),
            "side": side,
        }
    )
