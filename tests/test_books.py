"""The ``book`` impact model on a real recorded book: Binance USD-M BTCUSDT depth from the
hftbacktest sample, replayed from the lake to each bar's open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cluster.book import OrderBook
from cluster.config import load_config
from cluster.lake import Lake
from jobs.ingest.formats import read_file
from jobs.ingest.naming import InstrumentResolver
from sim.backtest import backtest
from sim.books import bar_books, load_books
from sim.market import MarketArrays
from sim.settings import LegCosts, RiskRules, SimSettings
from strategies.frame import Frame, LegData
from tests.conftest import SAMPLE, write_config_dir
from tests.fixed_strategy import Fixed

KEY = "binanceusdm:BTC-PERP"
BAR_NS = 10_000_000_000  # 10 s bars
DEPTH = 20


@pytest.fixture(scope="module")
def book_lake(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("books")
    config = load_config(write_config_dir(base / "configs", store={"lake": {"root": str(base / "lake")}}))
    parsed = read_file(SAMPLE / "hftbacktest/usdm/btcusdt_20240808.gz", InstrumentResolver(config), None)
    updates = next(s for s in parsed.series if s.kind == "book_updates")
    Lake(config.lake_root).write("book_updates", "binanceusdm", "BTC-PERP", updates.table)
    return config, updates.table


def _bars(n: int = 30) -> np.ndarray:
    start = np.datetime64("2024-08-08T23:55:00", "ns").astype(np.int64)
    return start + BAR_NS * np.arange(n)


def _book_before(updates, t_ns: int) -> OrderBook:
    """Every message strictly before ``t_ns`` applied, a snapshot message clearing first."""
    ts = updates["ts"].cast("int64").to_numpy()
    seq, snap = updates["seq"].to_numpy(), updates["is_snapshot"].to_numpy(zero_copy_only=False)
    is_bid, price, size = updates["is_bid"].to_numpy(zero_copy_only=False), updates["price"].to_numpy(), updates["size"].to_numpy()
    book = OrderBook()
    for i in range(int(np.searchsorted(ts, t_ns, side="left"))):
        if snap[i] and (i == 0 or not snap[i - 1] or seq[i] != seq[i - 1]):
            book.clear()
        book.set_level(bool(is_bid[i]), float(price[i]), float(size[i]))
    return book


def test_each_bar_gets_the_book_as_it_stood_at_its_open(book_lake):
    config, updates = book_lake
    ts = _bars()
    off, size = bar_books(Lake(config.lake_root), "binanceusdm", "BTC-PERP", ts, BAR_NS, DEPTH)
    assert off.shape == (len(ts), 2, DEPTH)
    for i in (0, 7, 29):
        bid_px, bid_sz, ask_px, ask_sz = _book_before(updates, int(ts[i])).top(DEPTH)
        mid = 0.5 * (bid_px[0] + ask_px[0])
        np.testing.assert_allclose(mid * (1 + off[i, 0]), ask_px, rtol=1e-12)
        np.testing.assert_allclose(mid * (1 - off[i, 1]), bid_px, rtol=1e-12)
        np.testing.assert_array_equal(size[i, 0], ask_sz)
        np.testing.assert_array_equal(size[i, 1], bid_sz)
    assert (np.diff(off[:, 0], axis=1) > 0).all() and (off[:, :, 0] > 0).all()  # levels move away from the mid


def test_a_buy_walks_the_recorded_asks(book_lake):
    config, _ = book_lake
    ts = _bars()
    close = np.full(len(ts), 60_000.0)
    leg = LegData(KEY, "perp", close, close, close, close, np.ones(len(ts)), np.zeros(len(ts)), np.zeros(len(ts)))
    frame = Frame(ts, BAR_NS / 1e9, (leg,))
    q = 25.0  # BTC, deeper than the first few levels
    settings = SimSettings(
        legs=(LegCosts(key=KEY, fee=0.0, slippage_bps=0.5, impact="book"),),
        fill_price="close",
        initial_cash=2 * q * 60_000.0,
        risk=RiskRules(max_position_notional=q * 60_000.0),  # pins the size: q exactly
    )
    books = load_books(config, frame, settings)
    off, size = books[0]
    target = np.full(len(ts), np.nan)
    target[5] = 1.0
    trade = backtest(Fixed(target.reshape(1, -1)), frame, settings, MarketArrays.build(frame, settings, books)).trades[0]
    # hand walk of bar 5's asks
    left, paid = q, 0.0
    for k in range(DEPTH):
        take = min(size[5, 0, k], left)
        paid += take * off[5, 0, k]
        left -= take
    paid += left * off[5, 0, DEPTH - 1]
    expected = 60_000.0 * (1 + 0.5e-4 + paid / q)
    assert trade.size == pytest.approx(q) and trade.entry_price == pytest.approx(expected, rel=1e-12)
    assert trade.entry_price > 60_000.0 * (1 + 0.5e-4 + off[5, 0, 0])  # beyond the best ask


def test_without_a_recorded_book_the_notes_say_sqrt_is_used(tmp_path: Path):
    config = load_config(write_config_dir(tmp_path / "configs", store={"lake": {"root": str(tmp_path / "lake")}}))
    ts = _bars(5)
    close = np.full(5, 100.0)
    leg = LegData(KEY, "perp", close, close, close, close, np.ones(5), np.zeros(5), np.zeros(5))
    notes: list[str] = []
    books = load_books(config, Frame(ts, 10.0, (leg,)), SimSettings(legs=(LegCosts(key=KEY, impact="book"),)), notes)
    assert books == {} and notes == [f"{KEY}: no recorded book in the lake: square-root impact instead"]
