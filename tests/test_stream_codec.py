"""The wire encoding of market-data events: every event type round-trips exactly, and what
does not fit the schema is refused with the event and field named."""

from __future__ import annotations

import dataclasses
import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.stream.codec import _SCHEMAS, WIRE_TYPES, WireError, decode_batch, encode_batch
from cluster.domain import Bar, FundingRate, L2Book, Quote, Side, Trade
from cluster.events import (
    KIND_OF,
    BestPrice,
    ChainEvent,
    EventBatch,
    MarkPrice,
    NewsItem,
    PoolState,
    Signal,
    SwapQuote,
    VenueStatus,
)

ts = st.integers(min_value=0, max_value=2**63 - 1)
text = st.text(max_size=40)
num = st.floats(allow_nan=False, width=64)
opt_num = st.none() | num
side = st.sampled_from(list(Side))
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
payload = st.dictionaries(text, json_value, max_size=5)


@st.composite
def books(draw):
    bids = sorted(draw(st.lists(st.floats(1, 1000), max_size=5, unique=True)), reverse=True)
    asks = sorted(draw(st.lists(st.floats(1001, 2000), max_size=5, unique=True)))
    size = st.floats(0, 1e6)
    return L2Book(
        draw(ts), draw(text), tuple((p, draw(size)) for p in bids), tuple((p, draw(size)) for p in asks), draw(ts)
    )


EVENTS = st.one_of(
    st.builds(Quote, ts, text, num, num, num, num, ts),
    st.builds(Trade, ts, text, num, num, side, text),
    books(),
    st.builds(FundingRate, ts, text, num, st.integers(1, 86400), opt_num, opt_num),
    st.builds(Bar, ts, text, st.integers(1, 86400), num, num, num, num, num),
    st.builds(MarkPrice, ts, text, num, opt_num),
    st.builds(SwapQuote, ts, text, side, num, num, num, text),
    st.builds(PoolState, ts, text, text, num, num, num, num, opt_num),
    st.builds(ChainEvent, ts, text, st.integers(0, 2**63 - 1), text, st.none() | text, payload),
    st.builds(NewsItem, ts, text, text, text, st.none() | text, st.none() | text, st.lists(text, max_size=3).map(tuple), num),
    st.builds(Signal, ts, text, text, opt_num, st.none() | text, payload),
    st.builds(BestPrice, ts, text, opt_num, num, st.none() | text, opt_num, num, st.none() | text),
    st.builds(VenueStatus, ts, text, st.booleans(), num),
)


def test_every_event_kind_has_a_schema_that_lists_its_fields_in_order():
    assert set(_SCHEMAS) == set(KIND_OF)
    tags = [tag for tag, _ in _SCHEMAS.values()]
    assert len(set(tags)) == len(tags)
    for cls, (tag, fields) in _SCHEMAS.items():
        assert fields == tuple(f.name for f in dataclasses.fields(cls)), cls.__name__
        assert WIRE_TYPES[cls].__struct_fields__ == fields, cls.__name__
        assert WIRE_TYPES[cls].__struct_config__.tag == tag


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=20), ts, text, st.none() | ts)
def test_batches_of_any_events_round_trip_exactly(events, emitted_ns, source, cursor):
    batch = EventBatch(events, emitted_ns, source, cursor)
    back = decode_batch(encode_batch(batch))
    assert back == batch
    assert [type(e) for e in back.events] == [type(e) for e in events]


def test_special_floats_and_nested_payloads_survive():
    batch = EventBatch(
        [
            Quote(1, "x:Y", math.inf, 0.0, -math.inf, 5e-324, 2**63 - 1),
            Signal(2, "s", "regime", math.nan, None, {"levels": [1, 2.5, None, {"deep": ["é", "🚀"]}]}),
        ],
        3,
        "src",
    )
    back = decode_batch(encode_batch(batch))
    assert back.events[0] == batch.events[0]
    assert math.isnan(back.events[1].value) and back.events[1].payload == batch.events[1].payload


enc = msgspec.msgpack.Encoder()


@pytest.mark.parametrize(
    "frame, reason, message",
    [
        (b"\xc1\xc1 not msgpack", "malformed", "not a MessagePack event batch"),
        (encode_batch(EventBatch([Quote(1, "x", 1.0, 1.0, 2.0, 1.0, 1)] * 3, 1, "s"))[:-7], "malformed", "truncated"),
        (enc.encode([1, 2, 3]), "malformed", "not an event batch"),
        (enc.encode((1, "s", None, [(42, 1, "x")])), "unknown_event", "event 0: unknown event type 42"),
        (enc.encode((1, "s", None, [(1, 1, "x", 1.0, 1.0, 2.0, 1.0, 1), ("quote",)])), "unknown_event", "event 1: unknown event type 'quote'"),
        (enc.encode((1, "s", None, [(2, 1, "x", 1.0, 1.0, "hold", "t")])), "invalid_event", "event 0 (Trade): field 'side': Invalid enum value 'hold'"),
        (enc.encode((1, "s", None, [(4, 1, "x", 0.01, 3600.5, None, None)])), "invalid_event", "event 0 (FundingRate): field 'interval_s'"),
        (enc.encode((1, "s", None, [(1, 1, "x", 1.0, 1.0, 2.0)])), "invalid_event", "event 0 (Quote)"),
        (enc.encode((1, "s", None, [(3, 1, "x", [[2.0, 1.0]], [[1.0, 1.0]], 1)])), "invalid_event", "event 0 (L2Book): L2Book x: crossed book"),
        (enc.encode((1, "s", None, [(9, 1, "slot", 5, "", None, "not a dict")])), "invalid_event", "event 0 (ChainEvent): field 'payload'"),
    ],
)
def test_frames_that_do_not_fit_the_schema_are_refused_by_name(frame, reason, message):
    with pytest.raises(WireError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        decode_batch(frame)
    assert info.value.reason == reason


def test_an_object_that_is_not_an_event_cannot_be_sent():
    with pytest.raises(TypeError, match="dict is not a market-data event"):
        encode_batch(EventBatch([{"ts_ns": 1}], 1, "s"))
