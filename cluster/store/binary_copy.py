"""Encode columns into PostgreSQL's binary COPY format with NumPy.

asyncpg's ``copy_records_to_table`` encodes a Python tuple per row; for time series that
already sit in NumPy/Arrow columns, building the same bytes column-wise is faster and
keeps ingest bound by the server, not by Python (``bench/ingest.py`` measures both). The
wire format (PostgreSQL docs, "COPY: Binary Format"): a 19-byte header; per row an int16
field count, then per field an int32 byte length (-1 for NULL) and the value in the
type's binary send format, all big-endian; an int16 -1 trailer.

Binary COPY carries no type check the server can redo: an int2 field is two bytes, so a
value squeezed into them arrives as another, valid number. Every value is therefore
checked here against its column's type, and a value the column cannot hold is refused
with the table, column, row and value named, before anything is sent. What each type
takes:

* int2/int4/int8: integers (NumPy, Python, integral floats), within the type's range;
* float4/float8: numbers; a finite value beyond float4's range is refused;
* bool: booleans only (not 0/1, not strings);
* timestamptz/timestamp: datetime64 of any unit, or int64 nanoseconds since the Unix
  epoch (the platform's convention); floored to PostgreSQL's microseconds;
* text/varchar/bpchar: str (or an Arrow string array), without NUL characters;
* jsonb: a str holding JSON text, or any value ``json.dumps`` takes; NaN and infinities
  are refused, since JSON has neither;
* numeric: Decimal, int, or float (as its shortest repr, so 0.1 is 0.1); infinities;
* bytea: bytes-like;
* float8[] and text[]: one-dimensional lists, tuples or arrays; a None element is a NULL
  element.

Missing values: None is NULL, and so is a NaN or NaT in place of a value, in any column
(a missing price is stored as missing, and a NOT NULL column then refuses it loudly).
Inside a float8[] a NaN stays NaN: it is an element's value, not a missing array.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
# PostgreSQL's earliest timestamp, 4714-11-24 00:00 BC (datatype/timestamp.h), in Unix
# microseconds. Its latest (294277 AD) lies beyond any int64 of Unix microseconds.
PG_MIN_TIMESTAMP_UNIX_US = -211_813_488_000_000_000 + PG_EPOCH_US

_FIXED = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float4": ">f4",
    "float8": ">f8",
    "bool": "?",
    "timestamptz": ">i8",
    "timestamp": ">i8",
}
_INT_RANGE = {"int2": (-(2**15), 2**15 - 1), "int4": (-(2**31), 2**31 - 1), "int8": (-(2**63), 2**63 - 1)}
_TEXT = {"text", "varchar", "bpchar"}
_VARIABLE = _TEXT | {"jsonb", "numeric", "bytea", "_float8", "_text"}
SUPPORTED_TYPES = frozenset(_FIXED) | _VARIABLE
_OIDS = {"float8": 701, "text": 25}
_NUMERIC_POS, _NUMERIC_NEG, _NUMERIC_PINF, _NUMERIC_NINF = 0x0000, 0x4000, 0xD000, 0xF000
_NUMERIC_MAX_DSCALE = 0x3FFF
_NUMBER_TYPES = (int, float, np.integer, np.floating)  # bool is an int, as in asyncpg
_NEVER_MISSING = frozenset({list, tuple, dict, str, bytes, int, np.ndarray})  # skips _missing's checks


class CopyEncodeError(ValueError):
    """A column or value that cannot be sent as it is; the message names the table (when
    given), the column and its type, the row and the value. Nothing was sent."""


class _Refused(Exception):
    """Raised inside a column's encoder; ``encode`` adds the table and column."""

    def __init__(self, reason: str, row: int | None = None, value: Any = None, *, count: int = 1) -> None:
        super().__init__(reason)
        self.reason, self.row, self.value, self.count = reason, row, value, count

    def message(self, where: str) -> str:
        if self.row is None:
            return f"{where}: {self.reason}"
        more = f" (first of {self.count} such rows)" if self.count > 1 else ""
        return f"{where}, row {self.row}{more}: {self.reason}; value {_show(self.value)}"


@dataclass
class _Encoded:
    null: np.ndarray  # bool[N]
    fixed: np.ndarray | None = None  # big-endian values[N], for fixed-width types
    var_lengths: np.ndarray | None = None  # int64[N] byte lengths (0 where null), variable-width types
    var_blob: bytes = b""  # the non-null values' bytes, concatenated in row order

    def lengths(self) -> np.ndarray:
        if self.fixed is None:
            return self.var_lengths
        lens = np.full(len(self.null), self.fixed.dtype.itemsize, dtype=np.int64)
        lens[self.null] = 0
        return lens


def encode(columns: Sequence[tuple[str, str, Any]], *, table: str | None = None) -> bytes:
    """``columns`` is ``[(name, pg_type, values), ...]``, all of one length; ``table``
    only names the table in errors."""
    prefix = f"{table}: " if table else ""
    if not columns:
        raise CopyEncodeError(f"{prefix}no columns to encode")
    n = len(columns[0][2])
    encoded = []
    for name, pg_type, values in columns:
        where = f"{prefix}column {name!r} ({pg_type})"
        if len(values) != n:
            raise CopyEncodeError(f"{where} has {len(values)} values, expected {n}")
        try:
            encoded.append(_encode_column(pg_type, values))
        except _Refused as refused:
            raise CopyEncodeError(refused.message(where)) from None
    if all(e.fixed is not None and not e.null.any() for e in encoded):
        body = _pack_fixed(encoded, n)
    else:
        body = _pack_general(encoded, n)
    return HEADER + body + TRAILER


# --- assembling rows ------------------------------------------------------------------


def _pack_fixed(encoded: list[_Encoded], n: int) -> bytes:
    """Fast path: every value present and fixed-width, so a row is one struct."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, e in enumerate(encoded):
        fields += [(f"l{i}", ">i4"), (f"v{i}", e.fixed.dtype.str)]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["count"] = len(encoded)
    for i, e in enumerate(encoded):
        rows[f"l{i}"] = e.fixed.dtype.itemsize
        rows[f"v{i}"] = e.fixed
    return rows.tobytes()


def _pack_general(encoded: list[_Encoded], n: int) -> bytes:
    """Any mix of NULLs and variable-width values: scatter each field into place."""
    lens = [e.lengths() for e in encoded]
    row_len = 2 + sum(4 + length for length in lens)
    starts = np.cumsum(row_len) - row_len
    out = np.zeros(int(row_len.sum()), dtype=np.uint8)
    _scatter(out, starts, np.full(n, len(encoded), dtype=">i2"))
    cursor = starts + 2
    for e, length in zip(encoded, lens):
        _scatter(out, cursor, np.where(e.null, -1, length).astype(">i4"))
        data_at = cursor + 4
        present = ~e.null
        if e.fixed is not None:
            _scatter(out, data_at[present], e.fixed[present])
        elif e.var_blob:
            plen = length[present]
            offsets = np.repeat(data_at[present] - (np.cumsum(plen) - plen), plen)
            out[offsets + np.arange(len(e.var_blob))] = np.frombuffer(e.var_blob, dtype=np.uint8)
        cursor = data_at + length
    return out.tobytes()


def _scatter(out: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    width = values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), width)
    out[at[:, None] + np.arange(width)] = raw


# --- one column -------------------------------------------------------------------------


def _encode_column(pg_type: str, values: Any) -> _Encoded:
    if pg_type not in SUPPORTED_TYPES:
        raise _Refused(f"type {pg_type} is not supported by the binary COPY encoder")
    if len(values) == 0:  # an empty list has no dtype worth checking
        fixed = np.zeros(0, dtype=_FIXED[pg_type]) if pg_type in _FIXED else None
        return _Encoded(null=np.zeros(0, dtype=bool), fixed=fixed, var_lengths=np.zeros(0, dtype=np.int64))
    if pg_type in ("timestamptz", "timestamp"):
        return _encode_timestamps(values)
    if pg_type in _INT_RANGE:
        return _encode_integers(pg_type, values)
    if pg_type in ("float4", "float8"):
        return _encode_floats(pg_type, values)
    if pg_type == "bool":
        return _encode_bools(values)
    if pg_type in _TEXT:
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            return _encode_arrow_strings(values)
        return _encode_strings(values)
    payload = {"jsonb": _jsonb, "numeric": _numeric, "bytea": _bytea, "_float8": _float8_array, "_text": _text_array}
    return _encode_payloads(values, payload[pg_type])


def _column_array(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-width column's values as one NumPy array, and where they are missing (NaN
    and NaT are found later, by type). Object arrays are returned as they are."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if pa.types.is_null(arr.type):  # every value missing
            return np.full(len(arr), None, dtype=object), np.ones(len(arr), dtype=bool)
        null = arr.is_null().to_numpy(zero_copy_only=False)
        if arr.null_count:  # to_numpy would turn an int column with nulls into floats
            arr = arr.fill_null(pa.scalar(0).cast(arr.type))
        return arr.to_numpy(zero_copy_only=False), null
    try:
        arr = np.asarray(values)
    except ValueError as exc:  # ragged nesting
        raise _Refused(f"expected one value per row: {exc}") from None
    if arr.ndim != 1:
        raise _Refused(f"expected one value per row, got an array of shape {arr.shape}")
    return arr, np.zeros(len(arr), dtype=bool)


def _first(bad: np.ndarray, arr: np.ndarray, reason: str, given: Any = None) -> None:
    """Refuse the first row ``bad`` marks, if any, showing the value as ``given`` (a
    list's Python int, say, rather than the float NumPy made of it)."""
    if bad.any():
        rows = np.flatnonzero(bad)
        row = int(rows[0])
        value = given[row] if isinstance(given, (list, tuple)) else arr[row]
        raise _Refused(reason, row, value, count=len(rows))


def _wrong_kind(values: Any, arr: np.ndarray, expected: str, convert: Callable[[Any], Any]) -> None:
    """Refuse a column whose NumPy dtype the type cannot take, naming the first value
    that is wrong (a list mixing True and 1, say, becomes an int64 array)."""
    items = values if isinstance(values, (list, tuple)) else arr
    for i, v in enumerate(items):
        if not _missing(v):
            try:
                convert(v)
            except _Refused as refused:
                raise _Refused(refused.reason, i, v) from None
    raise _Refused(f"expected {expected}, got an array of {arr.dtype}")


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return v != v
    if isinstance(v, Decimal):
        return v.is_nan()
    if isinstance(v, np.datetime64):
        return bool(np.isnat(v))
    return False


def _encode_integers(pg_type: str, values: Any) -> _Encoded:
    lo, hi = _INT_RANGE[pg_type]
    arr, null = _column_array(values)
    kind = arr.dtype.kind
    if kind == "O":
        return _encode_objects(pg_type, arr, null, _integer_of(lo, hi))
    if kind == "b":
        arr = arr.astype(np.int8)
    elif kind in "iu":
        if not np.can_cast(arr.dtype, np.dtype(_FIXED[pg_type]), "safe"):
            _first((arr < lo) | (arr > hi), arr, f"out of {pg_type}'s range {lo}..{hi}", values)
    elif kind == "f":
        nan = np.isnan(arr)
        null = null | nan
        _first(~nan & ~np.isfinite(arr), arr, f"out of {pg_type}'s range {lo}..{hi}", values)
        _first(~nan & (arr != np.trunc(arr)), arr, "fractional value in an integer column", values)
        # lo and hi + 1 are powers of two: exact as floats, where hi itself may not be.
        _first((arr < lo) | (arr >= float(hi + 1)), arr, f"out of {pg_type}'s range {lo}..{hi}", values)
        if nan.any():
            arr = np.where(nan, 0, arr)
    else:
        _wrong_kind(values, arr, "integers", _integer_of(lo, hi))
    return _Encoded(null=null, fixed=arr.astype(_FIXED[pg_type]))


def _integer_of(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, (int, np.integer)):
            value = int(v)
        elif isinstance(v, (float, np.floating)):
            if not math.isfinite(v) or not float(v).is_integer():
                raise _Refused("fractional value in an integer column" if math.isfinite(v) else "not a finite number")
            value = int(v)
        else:
            raise _Refused(f"expected an integer, got {type(v).__name__}")
        if not lo <= value <= hi:
            raise _Refused(f"out of range {lo}..{hi}")
        return value

    return convert


def _encode_floats(pg_type: str, values: Any) -> _Encoded:
    arr, null = _column_array(values)
    kind = arr.dtype.kind
    if kind == "O":
        return _encode_objects(pg_type, arr, null, _float_of)
    if kind not in "fiub":
        _wrong_kind(values, arr, "numbers", _float_of)
    if kind == "f":
        nan = np.isnan(arr)
        if nan.any():
            null = null | nan
            arr = np.where(nan, 0.0, arr)
    with np.errstate(over="ignore"):  # float4 overflow is refused just below
        fixed = arr.astype(_FIXED[pg_type])
    if pg_type == "float4" and kind == "f":
        # asyncpg's rule: refused if the value is finite and its float4 is not.
        _first(np.isinf(fixed) & ~np.isinf(arr), arr, "out of float4's range", values)
    return _Encoded(null=null, fixed=fixed)


def _float_of(v: Any) -> float:
    if not isinstance(v, _NUMBER_TYPES):
        raise _Refused(f"expected a number, got {type(v).__name__}")
    try:
        return float(v)
    except OverflowError:
        raise _Refused("too large for a float") from None


def _encode_bools(values: Any) -> _Encoded:
    arr, null = _column_array(values)
    if arr.dtype.kind == "O":
        return _encode_objects("bool", arr, null, _bool_of)
    if arr.dtype.kind != "b":
        _wrong_kind(values, arr, "booleans", _bool_of)
    return _Encoded(null=null, fixed=arr)


def _bool_of(v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _Refused(f"expected a bool, got {type(v).__name__}")
    return bool(v)


def _encode_objects(pg_type: str, arr: np.ndarray, null: np.ndarray, convert: Callable[[Any], Any]) -> _Encoded:
    """A fixed-width column given as Python objects (a list with None in it, say): one
    check per value, which costs what building those objects already did."""
    out = np.zeros(len(arr), dtype={"i": np.int64, "f": np.float64, "b": np.bool_}[np.dtype(_FIXED[pg_type]).kind])
    null = null.copy()
    for i, v in enumerate(arr):
        if null[i] or _missing(v):
            null[i] = True
            continue
        try:
            out[i] = convert(v)
        except _Refused as refused:
            raise _Refused(refused.reason, i, v) from None
    with np.errstate(over="ignore"):
        fixed = out.astype(_FIXED[pg_type])
    if pg_type == "float4":
        _first(np.isinf(fixed) & ~np.isinf(out) & ~null, arr, "out of float4's range")
    return _Encoded(null=null, fixed=fixed)


def _encode_timestamps(values: Any) -> _Encoded:
    arr, null = _column_array(values)
    kind = arr.dtype.kind
    if kind == "O":
        us, null = _timestamp_objects(arr, null)
    elif kind == "M":
        null = null | np.isnat(arr)
        us = _datetime64_to_us(arr, null, values)
    elif kind in "iu":
        if arr.dtype == np.uint64:
            _first(arr > np.iinfo(np.int64).max, arr, "out of range for int64 nanoseconds", values)
        us = arr.astype(np.int64) // 1000  # int64 nanoseconds, the platform's convention
    else:
        _wrong_kind(values, arr, "datetime64 or int64 nanoseconds", _timestamp_of)
    if null.any():
        us = np.where(null, PG_EPOCH_US, us)
    _first(us < PG_MIN_TIMESTAMP_UNIX_US, arr, "before 4714-11-24 BC, PostgreSQL's earliest timestamp", values)
    return _Encoded(null=null, fixed=(us - PG_EPOCH_US).astype(">i8"))


_TICKS_PER_US = {"us": 1, "ns": 10**3, "ps": 10**6, "fs": 10**9, "as": 10**12}


def _datetime64_to_us(arr: np.ndarray, null: np.ndarray, given: Any) -> np.ndarray:
    """Unix microseconds, floored. Units finer than a microsecond are divided as
    integers: NumPy's own cast wraps around near int64's ends (1677-09-21 in ns became
    2262). Coarser units may hold dates whose microseconds overflow int64: refused."""
    unit, count = np.datetime_data(arr.dtype)
    if unit in _TICKS_PER_US and count == 1:
        return arr.view(np.int64) // _TICKS_PER_US[unit]
    us = arr.astype("datetime64[us]")
    _first(~null & (us.astype(arr.dtype) != arr), arr, "out of range", given)
    return us.astype(np.int64)


def _timestamp_objects(arr: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    us = np.zeros(len(arr), dtype=np.int64)
    null = null.copy()
    for i, v in enumerate(arr):
        if null[i] or _missing(v):
            null[i] = True
            continue
        try:
            us[i] = _timestamp_of(v)
        except _Refused as refused:
            raise _Refused(refused.reason, i, v) from None
    return us, null


def _timestamp_of(v: Any) -> int:
    """Unix microseconds of one value."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        if not -(2**63) <= int(v) < 2**63:
            raise _Refused("out of range for int64 nanoseconds")
        return int(v) // 1000
    if isinstance(v, np.datetime64):
        one = np.array([v])
        us = _datetime64_to_us(one, np.zeros(1, dtype=bool), None)
        return int(us[0])
    raise _Refused(f"expected datetime64 or int64 nanoseconds, got {type(v).__name__}")


# --- variable-width values --------------------------------------------------------------


def _encode_strings(values: Any) -> _Encoded:
    """text from Python strings; the loop is the cost of having them as objects at all."""
    payloads: list[bytes] = []
    n = len(values)
    null = np.zeros(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    i, v = 0, None
    try:
        for i, v in enumerate(values):
            if isinstance(v, str):  # a str subclass (an enum's value) encodes as its text
                payload = v.encode()
            elif _missing(v):
                null[i] = True
                continue
            else:
                raise _Refused(f"expected str, got {type(v).__name__}", i, v)
            payloads.append(payload)
            lengths[i] = len(payload)
    except UnicodeEncodeError as exc:
        raise _Refused(f"not encodable as UTF-8 ({exc.reason})", i, v) from None
    blob = b"".join(payloads)
    _refuse_nul(blob, lengths, values)
    return _Encoded(null=null, var_lengths=lengths, var_blob=blob)


def _encode_arrow_strings(values: pa.Array | pa.ChunkedArray) -> _Encoded:
    """Arrow already stores strings as UTF-8 bytes plus offsets: the COPY payload as is."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if pa.types.is_null(arr.type):
        n = len(arr)
        return _Encoded(null=np.ones(n, dtype=bool), var_lengths=np.zeros(n, dtype=np.int64))
    if not pa.types.is_string(arr.type):
        raise _Refused(f"expected an Arrow string array, got {arr.type}")
    null = arr.is_null().to_numpy(zero_copy_only=False)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    lengths = np.diff(offsets).astype(np.int64)
    lengths[null] = 0
    blob = data_buf.to_pybytes()[offsets[0] : offsets[-1]] if data_buf is not None else b""
    _refuse_nul(blob, lengths, arr)
    return _Encoded(null=null, var_lengths=lengths, var_blob=blob)


def _refuse_nul(blob: bytes, lengths: np.ndarray, values: Any) -> None:
    """PostgreSQL text cannot hold U+0000; the server would refuse the whole COPY
    without saying which row. One memchr over the batch; the row is found only then."""
    at = blob.find(b"\x00")
    if at >= 0:
        row = int(np.searchsorted(np.cumsum(lengths), at, side="right"))
        value = values[row].as_py() if isinstance(values, pa.Array) else values[row]
        raise _Refused("NUL character (U+0000): PostgreSQL text cannot hold it", row, value)


def _encode_payloads(values: Any, to_bytes: Callable[[Any], bytes]) -> _Encoded:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_pylist()
    payloads: list[bytes] = []
    null = np.zeros(len(values), dtype=bool)
    lengths = np.zeros(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or (v.__class__ not in _NEVER_MISSING and _missing(v)):
            null[i] = True
            continue
        try:
            payload = to_bytes(v)
        except _Refused as refused:
            raise _Refused(refused.reason, i, v) from None
        payloads.append(payload)
        lengths[i] = len(payload)
    return _Encoded(null=null, var_lengths=lengths, var_blob=b"".join(payloads))


def _jsonb(v: Any) -> bytes:
    if isinstance(v, str):
        if "NaN" in v or "Infinity" in v:  # cheap test first: only then parse
            _refuse_nonfinite_json_text(v)
        text = v
    else:
        try:
            text = json.dumps(v, allow_nan=False)
        except ValueError:
            where = _nonfinite_path(v, "value")
            raise _Refused(f"{where or 'it'} is NaN or infinite, which JSON cannot hold") from None
        except TypeError as exc:
            raise _Refused(f"not JSON-serialisable: {exc}") from None
    if "\x00" in text or ("\\u0000" in text and _holds_nul(_parsed(text))):
        raise _Refused("NUL character (U+0000): PostgreSQL's jsonb cannot hold it")
    try:
        return b"\x01" + text.encode()
    except UnicodeEncodeError as exc:
        raise _Refused(f"not encodable as UTF-8 ({exc.reason})") from None


def _refuse_nonfinite_json_text(text: str) -> None:
    def constant(name: str) -> None:
        raise _Refused(f"JSON text holds {name}, which JSON does not allow")

    try:
        json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise _Refused(f"not valid JSON text: {exc}") from None


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Refused(f"not valid JSON text: {exc}") from None


def _holds_nul(value: Any) -> bool:
    """True if a parsed JSON value has U+0000 in a string or key (only looked for when
    its text has the escape ``\\u0000``, which may also be an escaped backslash)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _nonfinite_path(value: Any, path: str) -> str | None:
    """Where in a JSON-like value the first NaN or infinity sits, e.g. ``value['fast']``."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _nonfinite_path(item, f"{path}[{key!r}]")
        if found:
            return found
    return None


def _numeric(v: Any) -> bytes:
    """PostgreSQL's numeric send format: digit count, weight, sign, display scale, then
    base-10000 digits (most significant first)."""
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, (int, np.integer)):
        d = Decimal(int(v))
    elif isinstance(v, (float, np.floating)):
        d = Decimal(str(v))  # the shortest repr: 0.1 is 0.1, not 0.1000000000000000055...
    else:
        raise _Refused(f"expected a Decimal, int or float, got {type(v).__name__}")
    sign, digits, exponent = d.as_tuple()
    if exponent == "F":
        return struct.pack(">hhHh", 0, 0, _NUMERIC_NINF if sign else _NUMERIC_PINF, 0)
    dscale = max(0, -exponent)
    if dscale > _NUMERIC_MAX_DSCALE:
        raise _Refused(f"more than {_NUMERIC_MAX_DSCALE} digits after the decimal point")
    coefficient = int("".join(map(str, digits)) or "0")
    if coefficient == 0:
        return struct.pack(">hhHh", 0, 0, _NUMERIC_POS, dscale)
    shift = exponent % 4  # align the exponent to whole base-10000 digits
    coefficient, exponent = coefficient * 10**shift, exponent - shift
    groups = []
    while coefficient:
        coefficient, group = divmod(coefficient, 10_000)
        groups.append(group)
    groups.reverse()
    weight = len(groups) - 1 + exponent // 4
    while groups[-1] == 0:
        groups.pop()
    if not -(2**15) <= weight < 2**15 or len(groups) >= 2**15:
        raise _Refused("too large or too small for numeric")
    head = struct.pack(">hhHh", len(groups), weight, _NUMERIC_NEG if sign else _NUMERIC_POS, dscale)
    return head + np.asarray(groups, dtype=">i2").tobytes()


def _bytea(v: Any) -> bytes:
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise _Refused(f"expected bytes, got {type(v).__name__}")
    return bytes(v)


def _array_items(v: Any) -> Sequence:
    if v.__class__ is list:
        return v
    # A str is a sequence too: iterating it would store its characters.
    if not isinstance(v, (list, tuple, np.ndarray)):
        raise _Refused(f"expected a list, tuple or 1-D array, got {type(v).__name__}")
    if isinstance(v, np.ndarray) and v.ndim != 1:
        raise _Refused("only one-dimensional arrays are supported")
    return v


def _array_header(oid: int, n: int, has_null: bool) -> bytes:
    """Dimensions, has-NULL flag, element type, then per dimension its length and lower bound."""
    if n == 0:
        return struct.pack(">iii", 0, 0, oid)
    return struct.pack(">iiiii", 1, int(has_null), oid, n, 1)


def _float8_array(v: Any) -> bytes:
    items = _array_items(v)
    if not len(items):
        return _array_header(_OIDS["float8"], 0, False)
    arr = np.asarray(items)
    if arr.ndim != 1:
        raise _Refused("only one-dimensional arrays are supported")
    if arr.dtype.kind in "fiub":
        body = np.empty(arr.size, dtype=[("len", ">i4"), ("v", ">f8")])
        body["len"] = 8
        body["v"] = arr
        return _array_header(_OIDS["float8"], arr.size, False) + body.tobytes()
    if arr.dtype.kind != "O":
        raise _Refused(f"expected numbers, got {arr.dtype} elements")
    parts = []
    has_null = False
    for k, item in enumerate(items):
        if item is None:
            parts.append(b"\xff\xff\xff\xff")
            has_null = True
        elif isinstance(item, _NUMBER_TYPES):
            parts.append(struct.pack(">id", 8, float(item)))
        else:
            raise _Refused(f"element {k}: expected a number, got {type(item).__name__}")
    return _array_header(_OIDS["float8"], len(items), has_null) + b"".join(parts)


def _text_array(v: Any) -> bytes:
    items = _array_items(v)
    parts = []
    has_null = False
    for k, item in enumerate(items):
        if item is None:
            parts.append(b"\xff\xff\xff\xff")
            has_null = True
            continue
        if not isinstance(item, str):
            raise _Refused(f"element {k}: expected str, got {type(item).__name__}")
        if "\x00" in item:
            raise _Refused(f"element {k}: NUL character (U+0000): PostgreSQL text cannot hold it")
        try:
            data = item.encode()
        except UnicodeEncodeError as exc:
            raise _Refused(f"element {k}: not encodable as UTF-8 ({exc.reason})") from None
        parts.append(len(data).to_bytes(4, "big") + data)
    return _array_header(_OIDS["text"], len(items), has_null) + b"".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, (np.number, np.bool_)):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
