"""The domain model: fills, position accounting, rounding, books, intents (the order
lifecycle is tests/test_orders.py)."""

from __future__ import annotations

import itertools

import pytest

from cluster.domain import (
    FundingRate,
    Fill,
    FillReason,
    Instrument,
    L2Book,
    MarketKind,
    OrderIntent,
    OrderType,
    Position,
    Quote,
    Side,
)

_fill_ids = itertools.count()


def make_fill(size: float, price: float, side: Side = Side.BUY, fee: float = 0.0) -> Fill:
    return Fill(
        client_order_id="o1", venue="drift", venue_fill_id=f"f{next(_fill_ids)}", ts_ns=1,
        instrument="drift:SOL-PERP", side=side, qty=size, price=price, fee=fee,
    )


def test_fill_key_and_signed_qty():
    fill = make_fill(2.0, 100.0, side=Side.SELL)
    assert fill.key == ("drift", fill.venue_fill_id)
    assert fill.signed_qty == -2.0
    assert fill.reason is FillReason.SIGNAL and fill.leaves_qty is None


# --- Position ------------------------------------------------------------------------


def test_position_open_long_and_add_averages_entry():
    pos = Position("drift:SOL-PERP")
    assert pos.apply_fill(make_fill(2.0, 100.0)) == 0.0
    assert pos.size == 2.0 and pos.avg_entry_price == 100.0
    pos.apply_fill(make_fill(1.0, 130.0))
    # (2*100 + 1*130) / 3 = 110
    assert pos.size == pytest.approx(3.0)
    assert pos.avg_entry_price == pytest.approx(110.0)
    assert pos.unrealized_pnl(120.0) == pytest.approx(30.0)


def test_position_partial_close_realizes_pnl_and_keeps_entry():
    pos = Position("drift:SOL-PERP")
    pos.apply_fill(make_fill(3.0, 100.0))
    realized = pos.apply_fill(make_fill(1.0, 112.0, side=Side.SELL))
    # closed 1 x (112 - 100)
    assert realized == pytest.approx(12.0)
    assert pos.realized_pnl == pytest.approx(12.0)
    assert pos.size == pytest.approx(2.0)
    assert pos.avg_entry_price == pytest.approx(100.0)


def test_position_full_close_resets_size_and_entry():
    pos = Position("drift:SOL-PERP")
    pos.apply_fill(make_fill(2.0, 100.0))
    realized = pos.apply_fill(make_fill(2.0, 95.0, side=Side.SELL))
    assert realized == pytest.approx(-10.0)
    assert pos.size == 0.0
    assert pos.avg_entry_price == 0.0
    assert pos.realized_pnl == pytest.approx(-10.0)


def test_position_flip_through_zero_sets_entry_to_fill_price():
    pos = Position("drift:SOL-PERP")
    pos.apply_fill(make_fill(1.0, 100.0))
    realized = pos.apply_fill(make_fill(3.0, 110.0, side=Side.SELL))
    # closes 1 x (110 - 100) = 10, then is short 2 from 110
    assert realized == pytest.approx(10.0)
    assert pos.size == pytest.approx(-2.0)
    assert pos.avg_entry_price == pytest.approx(110.0)


def test_short_position_is_symmetric():
    pos = Position("drift:SOL-PERP")
    pos.apply_fill(make_fill(2.0, 100.0, side=Side.SELL))
    pos.apply_fill(make_fill(2.0, 90.0, side=Side.SELL))
    assert pos.size == pytest.approx(-4.0)
    assert pos.avg_entry_price == pytest.approx(95.0)
    realized = pos.apply_fill(make_fill(1.0, 85.0, side=Side.BUY))
    # short gains when the price falls: 1 x (95 - 85)
    assert realized == pytest.approx(10.0)
    assert pos.size == pytest.approx(-3.0)
    assert pos.unrealized_pnl(90.0) == pytest.approx(15.0)  # -3 x (90 - 95)


def test_position_accumulates_fees():
    pos = Position("drift:SOL-PERP")
    pos.apply_fill(make_fill(1.0, 100.0, fee=0.035))
    pos.apply_fill(make_fill(1.0, 100.0, side=Side.SELL, fee=-0.0025))
    assert pos.fees_paid == pytest.approx(0.0325)
    assert pos.realized_pnl == 0.0


def test_positive_funding_charges_long_and_pays_short():
    funding = FundingRate(ts_ns=0, instrument="drift:SOL-PERP", rate=0.0001, interval_s=3600)
    long_ = Position("drift:SOL-PERP", size=2.0, avg_entry_price=100.0)
    short = Position("drift:SOL-PERP", size=-2.0, avg_entry_price=100.0)
    # 2 x 150 x 0.0001 = 0.03
    assert long_.apply_funding(funding, 150.0) == pytest.approx(0.03)
    assert short.apply_funding(funding, 150.0) == pytest.approx(-0.03)
    long_.apply_funding(funding, 150.0)
    assert long_.funding_paid == pytest.approx(0.06)
    assert short.funding_paid == pytest.approx(-0.03)


# --- Instrument rounding -------------------------------------------------------------


SOL = Instrument(
    venue="drift", symbol="SOL-PERP", kind=MarketKind.PERP, base="SOL", quote="USD",
    venue_symbol="SOL-PERP", tick_size=0.01, lot_size=0.1, min_size=0.5,
)


def test_round_price_buy_rounds_down_sell_rounds_up():
    assert SOL.round_price(172.317, Side.BUY) == pytest.approx(172.31)
    assert SOL.round_price(172.311, Side.SELL) == pytest.approx(172.32)


def test_round_price_on_the_tick_is_unchanged():
    assert SOL.round_price(172.3, Side.BUY) == pytest.approx(172.3)
    assert SOL.round_price(172.3, Side.SELL) == pytest.approx(172.3)
    assert SOL.round_price(0.3, Side.BUY) == pytest.approx(0.3)  # 0.3 / 0.01 is 29.999...


def test_round_price_without_tick_size_returns_price():
    inst = Instrument("v", "SOL-USDC", MarketKind.SPOT, "SOL", "USDC", "x")
    assert inst.round_price(1.23456, Side.BUY) == 1.23456


def test_round_size_rounds_down_to_lot():
    assert SOL.round_size(1.29) == pytest.approx(1.2)
    assert SOL.round_size(0.7) == pytest.approx(0.7)  # 0.7 / 0.1 is 6.999...


def test_round_size_below_min_size_becomes_zero():
    assert SOL.round_size(0.59) == pytest.approx(0.5)
    assert SOL.round_size(0.49) == 0.0


# --- L2Book --------------------------------------------------------------------------


def book(bids=((100.0, 1.0), (99.0, 2.0)), asks=((101.0, 1.0), (102.0, 2.0), (104.0, 5.0))) -> L2Book:
    return L2Book(ts_ns=0, instrument="drift:SOL-PERP", bids=tuple(bids), asks=tuple(asks))


def test_book_rejects_unsorted_bids():
    with pytest.raises(ValueError, match="bids are not sorted"):
        book(bids=((99.0, 1.0), (100.0, 1.0)))


def test_book_rejects_unsorted_asks():
    with pytest.raises(ValueError, match="asks are not sorted"):
        book(asks=((102.0, 1.0), (101.0, 1.0)))


def test_book_rejects_crossed_book():
    with pytest.raises(ValueError, match="crossed"):
        book(bids=((101.0, 1.0),), asks=((101.0, 1.0),))


def test_book_rejects_negative_size():
    with pytest.raises(ValueError, match="negative size"):
        book(bids=((100.0, -1.0),))


def test_book_best_prices_and_mid():
    b = book()
    assert (b.best_bid, b.best_ask, b.mid) == (100.0, 101.0, 100.5)
    one_sided = book(bids=())
    assert one_sided.best_bid is None and one_sided.mid is None


def test_average_fill_price_walks_levels():
    b = book()
    # buy 2.5: 1 @ 101 + 1.5 @ 102 = 254 -> 101.6
    assert b.average_fill_price(Side.BUY, 2.5) == pytest.approx(101.6)
    # sell 2: 1 @ 100 + 1 @ 99 = 199 -> 99.5
    assert b.average_fill_price(Side.SELL, 2.0) == pytest.approx(99.5)
    # within the first level
    assert b.average_fill_price(Side.BUY, 0.5) == pytest.approx(101.0)


def test_average_fill_price_none_when_book_too_thin():
    b = book()
    assert b.average_fill_price(Side.SELL, 3.5) is None
    assert b.average_fill_price(Side.BUY, 8.01) is None
    assert book(asks=()).average_fill_price(Side.BUY, 1.0) is None


def test_average_fill_price_taking_the_whole_side():
    # 1 @ 101 + 2 @ 102 + 5 @ 104 = 101 + 204 + 520 = 825 over 8
    assert book().average_fill_price(Side.BUY, 8.0) == pytest.approx(825 / 8)


def test_average_fill_price_taking_exact_depth_with_large_sizes():
    b = book(bids=(), asks=((100.0, 1000.1), (101.0, 2000.2)))
    expected = (100.0 * 1000.1 + 101.0 * 2000.2) / 3000.3
    assert b.average_fill_price(Side.BUY, 3000.3) == pytest.approx(expected)


# --- OrderIntent, FundingRate, Quote -------------------------------------------------


@pytest.mark.parametrize("size", [0.0, -1.0, float("nan"), float("inf")])
def test_intent_rejects_non_positive_or_non_finite_size(size):
    with pytest.raises(ValueError, match="size"):
        OrderIntent(strategy="s", instrument="i", side=Side.BUY, size=size)


@pytest.mark.parametrize("price", [None, 0.0, -5.0])
def test_limit_intent_needs_positive_price(price):
    with pytest.raises(ValueError, match="limit_price"):
        OrderIntent(strategy="s", instrument="i", side=Side.BUY, size=1.0,
                    order_type=OrderType.LIMIT, limit_price=price)


def test_market_intent_takes_no_price():
    with pytest.raises(ValueError, match="market order"):
        OrderIntent(strategy="s", instrument="i", side=Side.SELL, size=1.0,
                    order_type=OrderType.MARKET, limit_price=100.0)


def test_valid_intents_construct():
    limit = OrderIntent(strategy="s", instrument="i", side=Side.BUY, size=1.0,
                        order_type=OrderType.LIMIT, limit_price=99.5)
    market = OrderIntent(strategy="s", instrument="i", side=Side.SELL, size=0.1)
    assert limit.limit_price == 99.5
    assert market.order_type is OrderType.MARKET and market.limit_price is None


def test_hourly_rate_of_an_8h_funding_rate():
    rate = FundingRate(ts_ns=0, instrument="binanceusdm:SOL-PERP", rate=0.0008, interval_s=8 * 3600)
    assert rate.hourly_rate == pytest.approx(0.0001)


def test_quote_mid_and_spread_bps():
    q = Quote(ts_ns=0, instrument="drift:SOL-PERP", bid=99.0, bid_size=1.0, ask=101.0, ask_size=1.0)
    assert q.mid == pytest.approx(100.0)
    assert q.spread_bps == pytest.approx(200.0)  # 2 / 100 * 1e4


def test_side_sign_and_opposite():
    assert (Side.BUY.sign, Side.SELL.sign) == (1, -1)
    assert Side.BUY.opposite is Side.SELL and Side.SELL.opposite is Side.BUY
