"""The binary COPY encoder against a real PostgreSQL: values a column cannot hold are
refused with the table, column, row and value named (nothing stored), missing values
are NULL, and for random rows of every type the schema uses, our encoder and asyncpg's
``copy_records_to_table`` leave identical table contents."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import math
from decimal import Decimal

import asyncpg
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.store import binary_copy
from cluster.store.writer import Batch, BatchRejected, StoreWriter

T0 = 1_746_372_780_000_000_000  # 2025-05-04 15:33 UTC, in ns


def run(coro):
    return asyncio.run(coro)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetch(dsn: str, sql: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def _copy(dsn: str, table: str, columns) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        payload = binary_copy.encode(columns, table=table)
        await conn.copy_to_table(table, source=io.BytesIO(payload), columns=[c[0] for c in columns], format="binary")
    finally:
        await conn.close()


# --- round trip of the supported types ----------------------------------------------------


def test_binary_copy_round_trips_every_supported_type(dsn):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """CREATE TABLE enc (i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, b bool,
                   tz timestamptz, t text, j jsonb, fa float8[], ta text[], n numeric, by bytea)"""
            )
            columns = [
                ("i2", "int2", np.array([1, -2, 3], np.int16)),
                ("i4", "int4", [2**31 - 1, None, 0]),
                ("i8", "int8", np.array([2**62, -1, 7])),
                ("f4", "float4", np.array([1.5, 2.25, -0.5], np.float32)),
                ("f8", "float8", np.array([np.pi, np.nan, -1e300])),
                ("b", "bool", np.array([True, False, True])),
                ("tz", "timestamptz", np.array([T0, T0 + 1_000, 0], np.int64)),
                ("t", "text", ["plain", "ünïcødé ✓", None]),
                ("j", "jsonb", [{"a": 1}, "[1, 2]", None]),
                ("fa", "_float8", [[1.0, 2.5], [], None]),
                ("ta", "_text", [["x", "y"], [], ["z"]]),
                ("n", "numeric", [Decimal("-12345.678"), 10**20, 0.1]),
                ("by", "bytea", [b"\x00\xff", b"", None]),
            ]
            payload = binary_copy.encode(columns)
            await conn.copy_to_table("enc", source=io.BytesIO(payload), columns=[c[0] for c in columns], format="binary")
            return await conn.fetch("SELECT *, extract(epoch from tz) AS epoch FROM enc ORDER BY i2")
        finally:
            await conn.close()

    rows = run(go())
    by_i2 = {r["i2"]: r for r in rows}
    one, minus_two, three = by_i2[1], by_i2[-2], by_i2[3]
    assert (one["i4"], minus_two["i4"], three["i4"]) == (2**31 - 1, None, 0)
    assert one["i8"] == 2**62 and one["f4"] == 1.5 and one["f8"] == pytest.approx(np.pi)
    assert minus_two["f8"] is None  # NaN is stored as NULL
    assert three["f8"] == -1e300 and minus_two["b"] is False
    assert float(one["epoch"]) == pytest.approx(T0 / 1e9)
    assert int(round(float(minus_two["epoch"]) * 1e6)) == (T0 + 1_000) // 1_000
    assert float(three["epoch"]) == 0.0
    assert one["t"] == "plain" and minus_two["t"] == "ünïcødé ✓" and three["t"] is None
    assert one["j"] == '{"a": 1}' and minus_two["j"] == "[1, 2]" and three["j"] is None
    assert one["fa"] == [1.0, 2.5] and minus_two["fa"] == [] and three["fa"] is None
    assert one["ta"] == ["x", "y"] and minus_two["ta"] == [] and three["ta"] == ["z"]
    assert (one["n"], minus_two["n"], three["n"]) == (Decimal("-12345.678"), Decimal(10**20), Decimal("0.1"))
    assert (one["by"], minus_two["by"], three["by"]) == (b"\x00\xff", b"", None)


def test_fast_and_general_paths_encode_the_same_values():
    cols = {
        "a": np.arange(50, dtype=np.int32),
        "ts": T0 + np.arange(50, dtype=np.int64) * 60_000_000_000,
        "v": np.linspace(1.0, 2.0, 50),
    }
    types = {"a": "int4", "ts": "timestamptz", "v": "float8"}
    fast = binary_copy.encode([(k, types[k], v) for k, v in cols.items()])
    with_null = dict(cols, v=np.where(np.arange(50) == 7, np.nan, cols["v"]))
    general = binary_copy.encode([(k, types[k], v) for k, v in with_null.items()])
    assert fast != general
    assert len(general) == len(fast) - 8  # one float8 (8 bytes) became a NULL (length only)


def test_arrow_strings_encode_exactly_like_python_strings():
    values = ["5266583935", None, "ünïcødé", "", "x" * 300]
    chunked = pa.chunked_array([pa.array(["skip"] + values[:2]).slice(1), pa.array(values[2:])])
    from_arrow = binary_copy.encode([("n", "int4", np.arange(5)), ("t", "text", chunked)])
    from_python = binary_copy.encode([("n", "int4", np.arange(5)), ("t", "text", values)])
    assert from_arrow == from_python


def test_bad_columns_are_refused_by_name():
    with pytest.raises(binary_copy.CopyEncodeError, match="column 'b'.*2 values, expected 3"):
        binary_copy.encode([("a", "int4", [1, 2, 3]), ("b", "int4", [1, 2])])
    with pytest.raises(binary_copy.CopyEncodeError, match="uuid.*not supported"):
        binary_copy.encode([("a", "uuid", [1])])
    with pytest.raises(binary_copy.CopyEncodeError, match="fractional value"):
        binary_copy.encode([("a", "int4", np.array([1.5]))])


# --- refusals: named, and nothing stored ----------------------------------------------------

CHECKED = """CREATE TABLE checked (
    id int4, small int2, mid int4, big int8, f4 float4, flag bool, ts timestamptz,
    label text, tags text[], levels float8[], doc jsonb, amount numeric, blob bytea)"""


@pytest.mark.parametrize(
    "column, values, refusal",
    [
        # the example: 70000 wrapped to 4464 in an int2
        ("small", [1, 70000, 3], r"column 'small' \(int2\), row 1: out of int2's range -32768\.\.32767; value 70000"),
        ("small", np.array([1, 2, 70000]), r"column 'small' \(int2\), row 2: out of int2's range.*; value 70000"),
        ("mid", np.array([0, 2**31]), r"column 'mid' \(int4\), row 1: out of int4's range.*; value 2147483648"),
        ("mid", np.array([1.0, 1e10, 3.0]), r"column 'mid' \(int4\), row 1: out of int4's range.*; value 10000000000\.0"),
        ("big", np.array([1, 2**64 - 1], np.uint64), r"column 'big' \(int8\), row 1: out of int8's range"),
        ("big", [1, 2, 2**63], r"column 'big' \(int8\), row 2: out of int8's range.*; value 9223372036854775808"),
        ("mid", np.array([1.0, np.inf]), r"column 'mid' \(int4\), row 1: out of int4's range.*; value inf"),
        ("f4", [1.0, 1e39], r"column 'f4' \(float4\), row 1: out of float4's range; value 1e\+39"),
        ("flag", [True, "false"], r"column 'flag' \(bool\), row 1: expected a bool, got str; value 'false'"),
        ("flag", [True, 0], r"column 'flag' \(bool\), row 1: expected a bool, got int; value 0"),
        ("ts", np.array(["-5000-01-01", "2020-01-01"], "datetime64[s]"), r"column 'ts' \(timestamptz\), row 0: before 4714-11-24 BC"),
        ("ts", np.array([0, 2**62], "datetime64[D]"), r"column 'ts' \(timestamptz\), row 1: out of range"),
        ("label", ["a", b"bytes"], r"column 'label' \(text\), row 1: expected str, got bytes; value b'bytes'"),
        ("label", ["a", "b", 7], r"column 'label' \(text\), row 2: expected str, got int; value 7"),
        ("label", ["ok", "nul\x00inside"], r"column 'label' \(text\), row 1: NUL character"),
        ("label", pa.array(["ok", None, "nul\x00"]), r"column 'label' \(text\), row 2: NUL character"),
        ("label", ["a", "\ud800"], r"column 'label' \(text\), row 1: not encodable as UTF-8"),
        ("tags", [["a"], "abc"], r"column 'tags' \(_text\), row 1: expected a list.*got str"),
        ("tags", [["a", 1]], r"column 'tags' \(_text\), row 0: element 1: expected str, got int"),
        ("levels", [[1.0], [2.0, "x"]], r"column 'levels' \(_float8\), row 1: expected numbers"),
        ("amount", [Decimal(1), "1.5"], r"column 'amount' \(numeric\), row 1: expected a Decimal, int or float, got str"),
        ("blob", [b"x", "text"], r"column 'blob' \(bytea\), row 1: expected bytes, got str"),
    ],
)
def test_values_a_column_cannot_hold_are_refused_naming_table_column_row_and_value(dsn, column, values, refusal):
    run(_execute(dsn, CHECKED))
    n = len(values)

    async def go():
        async with StoreWriter(dsn) as writer:
            with pytest.raises(BatchRejected, match="checked: " + refusal) as refused:
                await writer.write(Batch("checked", {"id": np.arange(n, dtype=np.int32), column: values}, "bad"))
        return refused.value

    refused = run(go())
    assert "nothing was sent" in str(refused)
    stored = run(_fetch(dsn, "SELECT (SELECT count(*) FROM checked) AS c, (SELECT count(*) FROM write_batches) AS w"))[0]
    assert (stored["c"], stored["w"]) == (0, 0)


def test_nan_inside_a_jsonb_value_is_refused_by_name(dsn):
    run(_execute(dsn, CHECKED))
    cases = [
        ([{"fast": 5}, {"fast": 5, "slow": [1.0, float("nan")]}], r"row 1: value\['slow'\]\[1\] is NaN or infinite"),
        ([{"x": float("inf")}], r"row 0: value\['x'\] is NaN or infinite"),
        (['{"a": 1}', '{"a": NaN}'], r"row 1: JSON text holds NaN"),
        (['[Infinity]'], r"row 0: JSON text holds Infinity"),
    ]

    async def go():
        async with StoreWriter(dsn) as writer:
            for values, refusal in cases:
                batch = Batch("checked", {"id": np.arange(len(values), dtype=np.int32), "doc": values}, "nan")
                with pytest.raises(BatchRejected, match=r"checked: column 'doc' \(jsonb\), " + refusal):
                    await writer.write(batch)
            # the word inside a string is not a NaN
            await writer.write(Batch("checked", {"id": np.arange(2, dtype=np.int32), "doc": ['{"a": "NaN"}', {"b": "Infinity"}]}, "ok"))

    run(go())
    rows = run(_fetch(dsn, "SELECT doc::text AS d FROM checked ORDER BY id"))
    assert [r["d"] for r in rows] == ['{"a": "NaN"}', '{"b": "Infinity"}']


def test_none_is_null_in_text_columns_and_text_array_elements(dsn):
    run(_execute(dsn, CHECKED))
    n = 4
    columns = {
        "id": np.arange(n, dtype=np.int32),
        "label": ["a", None, "None", None],
        "tags": [["x", None], [None], None, []],
    }
    run(_copy(dsn, "checked", [("id", "int4", columns["id"]), ("label", "text", columns["label"]), ("tags", "_text", columns["tags"])]))
    rows = run(_fetch(dsn, "SELECT label, tags, tags[2] IS NULL AS second_null FROM checked ORDER BY id"))
    assert [r["label"] for r in rows] == ["a", None, "None", None]  # only the string 'None' is 'None'
    assert rows[0]["tags"] == ["x", None] and rows[0]["second_null"]
    assert rows[1]["tags"] == [None] and rows[2]["tags"] is None and rows[3]["tags"] == []
    for label, expected in (
        (np.array(["b", None], dtype=object), ["b", None]),
        (pa.array(["b", None]), ["b", None]),
        (pa.array([None, None]), [None, None]),  # Arrow's null type
    ):
        run(_execute(dsn, "TRUNCATE checked"))
        run(_copy(dsn, "checked", [("id", "int4", np.array([10, 11], np.int32)), ("label", "text", label)]))
        rows = run(_fetch(dsn, "SELECT label FROM checked ORDER BY id"))
        assert [r["label"] for r in rows] == expected, type(label).__name__


def test_nan_and_nat_are_null_in_every_column(dsn):
    run(_execute(dsn, CHECKED))
    run(
        _copy(
            dsn,
            "checked",
            [
                ("id", "int4", np.arange(3, dtype=np.int32)),
                ("mid", "int4", np.array([1.0, np.nan, 3.0])),
                ("f4", "float4", [np.float32("nan"), 1.5, None]),
                ("ts", "timestamptz", np.array(["2025-01-01", "NaT", "NaT"], "datetime64[ns]")),
                ("amount", "numeric", [Decimal("NaN"), float("nan"), 2]),
                ("levels", "_float8", [[1.0, float("nan")], None, [None]]),
            ],
        )
    )
    rows = run(_fetch(dsn, "SELECT mid, f4, ts IS NULL AS no_ts, amount, levels::text AS lv FROM checked ORDER BY id"))
    assert [r["mid"] for r in rows] == [1, None, 3]
    assert [r["f4"] for r in rows] == [None, 1.5, None]
    assert [r["no_ts"] for r in rows] == [False, True, True]
    assert [r["amount"] for r in rows] == [None, None, Decimal(2)]
    assert [r["lv"] for r in rows] == ["{1,NaN}", None, "{NULL}"]  # inside an array NaN is a value


# --- the property: ours and asyncpg's encoder store the same contents ---------------------

# Every column type the migrations use, plus the other types the encoder supports.
# (pg type for the DDL, binary_copy type name)
PROPERTY_COLUMNS = {
    "c_int2": ("int2", "int2"),
    "c_int4": ("int4", "int4"),
    "c_int8": ("int8", "int8"),
    "c_float4": ("float4", "float4"),
    "c_float8": ("float8", "float8"),
    "c_bool": ("bool", "bool"),
    "c_tstz": ("timestamptz", "timestamptz"),
    "c_ts": ("timestamp", "timestamp"),
    "c_text": ("text", "text"),
    "c_varchar": ("varchar(50)", "varchar"),
    "c_numeric": ("numeric", "numeric"),
    "c_numeric_18_8": ("numeric(18, 8)", "numeric"),
    "c_jsonb": ("jsonb", "jsonb"),
    "c_bytea": ("bytea", "bytea"),
    "c_float8_arr": ("float8[]", "_float8"),
    "c_text_arr": ("text[]", "_text"),
}

UTC = dt.timezone.utc
UNIX = dt.datetime(1970, 1, 1, tzinfo=UTC)
F32_MAX = float(np.finfo(np.float32).max)
# No U+0000 (PostgreSQL text cannot hold it: refused, tested above) and no lone surrogates
# (not UTF-8).
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = st.text(CHARS, max_size=20)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=8,
)


def _maybe(strategy):
    return st.none() | strategy


def _timestamp_ref(us: int | None, aware: bool):
    if us is None:
        return None
    value = UNIX + dt.timedelta(microseconds=us)
    return value if aware else value.replace(tzinfo=None)


@st.composite
def column_values(draw, pg_type: str, ddl: str, n: int):
    """(what our encoder is given, what asyncpg is given) for ``n`` rows of one column,
    in one of the input forms the platform hands the encoder."""
    if pg_type in ("int2", "int4", "int8"):
        lo, hi = binary_copy._INT_RANGE[pg_type]
        ref = draw(st.lists(_maybe(st.integers(lo, hi)), min_size=n, max_size=n))
        form = draw(st.sampled_from(["list", "numpy", "float", "arrow"]))
        if form == "numpy" and None not in ref:
            return np.array(ref, dtype={"int2": np.int16, "int4": np.int32, "int8": np.int64}[pg_type]), ref
        if form == "float" and all(v is None or abs(v) < 2**53 for v in ref):
            return np.array([np.nan if v is None else float(v) for v in ref]), ref
        if form == "arrow":
            return pa.array(ref, pa.int64()), ref
        return ref, ref
    if pg_type in ("float4", "float8"):
        finite = st.floats(-F32_MAX, F32_MAX) if pg_type == "float4" else st.floats(allow_nan=False, allow_infinity=False)
        values = draw(st.lists(_maybe(finite | st.sampled_from([math.nan, math.inf, -math.inf, -0.0])), min_size=n, max_size=n))
        ref = [None if v is None or math.isnan(v) else v for v in values]  # NaN is stored as NULL
        form = draw(st.sampled_from(["list", "numpy"]))
        if form == "numpy":
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64), ref
        return values, ref
    if pg_type == "bool":
        ref = draw(st.lists(_maybe(st.booleans()), min_size=n, max_size=n))
        if None not in ref and draw(st.booleans()):
            return np.array(ref, dtype=bool), ref
        return ref, ref
    if pg_type in ("timestamptz", "timestamp"):
        aware = pg_type == "timestamptz"
        form = draw(st.sampled_from(["ns-list", "ns-array", "datetime64[ns]", "datetime64[us]"]))
        if form == "datetime64[us]":
            # The range a Python datetime has, years 1 to 9999, without its two ends: asyncpg
            # sends datetime.min and datetime.max as -infinity and infinity.
            lo = (dt.datetime.min.replace(tzinfo=UTC) - UNIX) // dt.timedelta(microseconds=1) + 1
            hi = (dt.datetime.max.replace(tzinfo=UTC) - UNIX) // dt.timedelta(microseconds=1) - 1
            us = draw(st.lists(_maybe(st.integers(lo, hi)), min_size=n, max_size=n))
            ours = np.array(["NaT" if u is None else u for u in us], dtype="datetime64[us]")
            return ours, [_timestamp_ref(u, aware) for u in us]
        ns = draw(st.lists(_maybe(st.integers(-(2**63) + 1, 2**63 - 1)), min_size=n, max_size=n))
        ref = [None if v is None else _timestamp_ref(v // 1000, aware) for v in ns]  # floored to microseconds
        if form == "ns-array" and None not in ns:
            return np.array(ns, dtype=np.int64), ref
        if form == "datetime64[ns]":
            return np.array(["NaT" if v is None else v for v in ns], dtype="datetime64[ns]"), ref
        return ns, ref
    if pg_type in ("text", "varchar"):
        strings = TEXT if pg_type == "text" else st.text(CHARS, max_size=50)  # varchar(50)
        ref = draw(st.lists(_maybe(strings), min_size=n, max_size=n))
        form = draw(st.sampled_from(["list", "object-array", "arrow", "arrow-chunked"]))
        if form == "object-array":
            return np.array(ref + [None], dtype=object)[:n], ref
        if form == "arrow":
            return pa.array(ref, pa.string()), ref
        if form == "arrow-chunked":
            cut = draw(st.integers(0, n))
            return pa.chunked_array([pa.array(["skipped"] + ref[:cut], pa.string()).slice(1), pa.array(ref[cut:], pa.string())]), ref
        return ref, ref
    if pg_type == "numeric":
        constrained = ddl != "numeric"  # numeric(18, 8): |v| < 1e10, no infinities
        bound = Decimal("9999999999") if constrained else Decimal("1e40")
        decimals = st.decimals(-bound, bound, allow_nan=False, allow_infinity=False, places=None)
        floats = st.floats(-1e9, 1e9) if constrained else st.floats(allow_nan=False)
        specials = st.sampled_from([Decimal("NaN"), math.nan] + ([] if constrained else [Decimal("Infinity"), Decimal("-Infinity"), math.inf]))
        ours = draw(st.lists(_maybe(decimals | st.integers(-(10**9), 10**9) | floats | specials), min_size=n, max_size=n))

        def as_decimal(v):
            if v is None or (isinstance(v, (float, Decimal)) and v != v):
                return None  # NaN is stored as NULL
            return Decimal(str(v)) if isinstance(v, float) else v

        return ours, [as_decimal(v) for v in ours]
    if pg_type == "jsonb":
        docs = draw(st.lists(JSON, min_size=n, max_size=n))
        as_text = draw(st.booleans())
        # As objects, None is SQL NULL (as JSON text, 'null' is JSON's null), and a str is
        # always JSON text, so a JSON string travels as text.
        ours = [json.dumps(d) if as_text or isinstance(d, str) else d for d in docs]
        ref = [json.dumps(d) if (as_text or d is not None) else None for d in docs]
        return ours, ref
    if pg_type == "bytea":
        ref = draw(st.lists(_maybe(st.binary(max_size=20)), min_size=n, max_size=n))
        return ref, ref
    if pg_type == "_float8":
        element = st.floats() | st.none()
        ref = draw(st.lists(_maybe(st.lists(element, max_size=5)), min_size=n, max_size=n))
        if draw(st.booleans()):  # rows as NumPy arrays where they have no NULL element
            return [np.array(v, dtype=np.float64) if v is not None and None not in v else v for v in ref], ref
        return ref, ref
    if pg_type == "_text":
        ref = draw(st.lists(_maybe(st.lists(_maybe(TEXT), max_size=5)), min_size=n, max_size=n))
        return [tuple(v) if v is not None and draw(st.booleans()) else v for v in ref], ref
    raise AssertionError(f"no strategy for {pg_type}")


def test_the_property_covers_every_type_the_migrations_use(dsn):
    used = run(
        _fetch(
            dsn,
            """SELECT DISTINCT t.typname FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace s ON s.oid = c.relnamespace
               JOIN pg_type t ON t.oid = a.atttypid
               WHERE s.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped""",
        )
    )
    covered = {encoder_type for _, encoder_type in PROPERTY_COLUMNS.values()}
    assert {r["typname"] for r in used} <= covered
    assert covered == set(binary_copy.SUPPORTED_TYPES) - {"bpchar"}  # bpchar: text's path, not in our schema


def test_our_encoder_and_asyncpgs_store_identical_contents(dsn):
    """For random rows of random columns (edge values, NULLs, unicode, empty strings,
    extreme floats and timestamps, every input form), COPY through our encoder and
    through asyncpg's ``copy_records_to_table`` leave the same rows, compared as
    PostgreSQL's own text of each row."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(dsn))
    ddl = ", ".join(f"{name} {ddl}" for name, (ddl, _) in PROPERTY_COLUMNS.items())
    for table in ("via_ours", "via_asyncpg"):
        loop.run_until_complete(conn.execute(f"CREATE TABLE {table} (row_no int4, {ddl})"))

    async def store_both(names, ours, refs, n):
        await conn.execute("TRUNCATE via_ours, via_asyncpg")
        columns = [("row_no", "int4", np.arange(n, dtype=np.int32))]
        columns += [(name, PROPERTY_COLUMNS[name][1], ours[name]) for name in names]
        payload = binary_copy.encode(columns, table="via_ours")
        await conn.copy_to_table("via_ours", source=io.BytesIO(payload), columns=[c[0] for c in columns], format="binary")
        records = [(i, *(refs[name][i] for name in names)) for i in range(n)]
        await conn.copy_records_to_table("via_asyncpg", records=records, columns=["row_no", *names])
        select = f"SELECT row_no, {', '.join(f'{c}::text' for c in names) or 'NULL'} FROM {{}} ORDER BY row_no"
        return [tuple(r) for r in await conn.fetch(select.format("via_ours"))], [
            tuple(r) for r in await conn.fetch(select.format("via_asyncpg"))
        ]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def check(data):
        n = data.draw(st.integers(0, 12), label="rows")
        names = data.draw(st.lists(st.sampled_from(sorted(PROPERTY_COLUMNS)), unique=True, max_size=6), label="columns")
        ours, refs = {}, {}
        for name in names:
            ddl, pg_type = PROPERTY_COLUMNS[name]
            ours[name], refs[name] = data.draw(column_values(pg_type, ddl, n), label=name)
        stored_ours, stored_ref = loop.run_until_complete(store_both(names, ours, refs, n))
        assert stored_ours == stored_ref

    try:
        check()
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
