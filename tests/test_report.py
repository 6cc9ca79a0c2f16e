"""``sim.report.write_report`` on small synthetic backtests: files, PNGs, and the HTML page."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.collections import PathCollection

from sim import report
from sim.backtest import BacktestResult, backtest
from sim.settings import LegCosts, RiskRules, SimSettings
from sim.summary import ROWS, render_metrics
from strategies.base import Params
from strategies.frame import Frame, LegData
from tests.fixed_strategy import Fixed as FixedTargets

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
T0 = np.datetime64("2024-03-01T00:00:00", "ns").astype(np.int64)
HOUR = 3600.0
NOTE = 'bars <script>alert("x")</script> & gaps'


class _Params(Params):
    label: str = "a<b>&c"


class Fixed(FixedTargets):
    Params = _Params


def _leg(close: np.ndarray, key: str) -> LegData:
    n = len(close)
    open_ = np.concatenate([close[:1], close[:-1]])
    return LegData(
        key=key,
        kind="perp",
        open=open_,
        high=np.maximum(open_, close) * 1.001,
        low=np.minimum(open_, close) * 0.999,
        close=close,
        volume=np.full(n, 1_000.0),
        funding=np.where(np.arange(n) % 8 == 7, 0.0001, 0.0),
        funding_known=np.full(n, 0.0001),
    )


def _frame(n_legs: int, n: int = 300, notes: tuple[str, ...] = (NOTE,)) -> Frame:
    i = np.arange(n)
    legs = tuple(_leg(100.0 + 10.0 * np.sin(i / (15.0 + 5 * j)) + 0.02 * i, f"sim:ASSET{j}") for j in range(n_legs))
    ts = T0 + i.astype(np.int64) * int(HOUR * 1e9)
    return Frame(ts=ts, bar_seconds=HOUR, legs=legs, notes=notes)


def _settings(n_legs: int) -> SimSettings:
    return SimSettings(
        legs=tuple(LegCosts(key=f"sim:ASSET{j}", fee=0.0005, slippage_bps=2.0) for j in range(n_legs)),
        fill_price="close",
        risk=RiskRules(max_leverage=3.0),
    )


def _targets(n: int, shift: int = 0) -> np.ndarray:
    t = np.zeros(n)
    t[20 + shift : 60 + shift] = 0.5  # long, closed by the signal
    t[100 + shift : 150 + shift] = -0.5  # short, closed by the signal
    t[200 + shift :] = 0.4  # long, still open at the end
    return t


def _run(n_legs: int, targets: np.ndarray | None = None) -> tuple[BacktestResult, Frame, SimSettings]:
    fr, st = _frame(n_legs), _settings(n_legs)
    if targets is None:
        targets = np.vstack([_targets(len(fr), shift=7 * j) / n_legs for j in range(n_legs)])
    return backtest(Fixed(targets), fr, st), fr, st


@pytest.fixture(scope="module")
def one_leg():
    return _run(1)


@pytest.fixture(scope="module")
def two_legs():
    return _run(2)


class _Page(HTMLParser):
    """Rows of every table (cell texts, unescaped) by table id, and every img src."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_tbody = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_tbody = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _text_metrics(result: BacktestResult, instruments: list[str]) -> dict[str, str]:
    lines = render_metrics(result, instruments).splitlines()
    out = {}
    for label, _, _ in ROWS:
        prefix = f"  {label:<28} "
        (line,) = [ln for ln in lines if ln.startswith(prefix)]
        out[label] = line[len(prefix) :].strip()
    return out


def _check_pngs(directory: Path) -> dict[str, tuple[int, int]]:
    shapes = {}
    for name in ("equity.png", "drawdown.png", "trades.png", "costs.png"):
        path = directory / name
        assert path.is_file(), name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 600, (name, image.shape)
        assert float(image[..., :3].std()) > 0.01, f"{name} is blank"
        shapes[name] = image.shape[:2]
    return shapes


def _check_page(html_text: str, result: BacktestResult, settings: SimSettings) -> _Page:
    page = _Page(html_text)
    assert sorted(page.images) == ["costs.png", "drawdown.png", "equity.png", "trades.png"]
    # the metrics table: the same labels and formatted values as the text table
    expected = _text_metrics(result, [leg.key for leg in settings.legs])
    assert {row[0]: row[1] for row in page.tables["metrics"]} == expected
    assert [row[0] for row in page.tables["metrics"]] == [label for label, _, _ in ROWS]
    # one trade row per trade, in order
    rows = page.tables["trades"]
    assert len(rows) == len(result.trades)
    for row, t in zip(rows, result.trades, strict=True):
        assert row[1:3] == [t.instrument, t.side]
        assert row[11] == t.exit_reason
    # settings
    account = dict(page.tables["account"])
    assert account["fill price"] == "close"
    assert len(page.tables["legs"]) == len(settings.legs)
    assert dict(page.tables["risk"])["max_leverage"] == "3"
    assert dict(page.tables["risk"])["max_drawdown"] == "off"
    return page


def test_one_leg_report(one_leg, tmp_path):
    result, fr, st = one_leg
    assert [t.exit_reason for t in result.trades] == ["signal", "signal", "open"]
    assert [t.side for t in result.trades] == ["long", "short", "long"]

    path = report.write_report(result, fr, st, tmp_path / "deep" / "er")
    assert path == tmp_path / "deep" / "er" / "report.html"
    _check_pngs(path.parent)
    text = path.read_text(encoding="utf-8")
    _check_page(text, result, st)

    # every string from data is escaped: the frame's note, the params
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; gaps" in text
    assert "label=a&lt;b&gt;&amp;c" in text
    assert "fixed_targets" in text and "sim:ASSET0" in text
    assert "2024-03-01 00:00:00 -&gt; 2024-03-13 12:00:00 UTC" in text  # first open -> last close
    assert "3 trades." in text


def test_two_leg_report(one_leg, two_legs, tmp_path):
    result, fr, st = two_legs
    assert {t.instrument for t in result.trades} == {"sim:ASSET0", "sim:ASSET1"}
    path = report.write_report(result, fr, st, tmp_path)
    shapes = _check_pngs(tmp_path)
    page = _check_page(path.read_text(encoding="utf-8"), result, st)
    assert [row[0] for row in page.tables["legs"]] == ["sim:ASSET0", "sim:ASSET1"]

    # a subplot per leg: taller than the one-leg figure; every trade has both markers
    one = report.trades_figure(*one_leg)
    two = report.trades_figure(result, fr, st)
    assert len(two.axes) == 2 and len(one.axes) == 1
    assert shapes["trades.png"][0] > one.get_size_inches()[1] * one.dpi
    for ax, key in zip(two.axes, ("sim:ASSET0", "sim:ASSET1"), strict=True):
        n = sum(t.instrument == key for t in result.trades)
        assert _marker_count(ax) == 2 * n


def test_zero_trades_still_renders(tmp_path):
    fr = _frame(1, notes=())
    st = _settings(1)
    result = backtest(Fixed(np.zeros((1, len(fr)))), fr, st)
    assert result.trades == [] and result.metrics.trades == 0
    path = report.write_report(result, fr, st, tmp_path)
    _check_pngs(tmp_path)
    text = path.read_text(encoding="utf-8")
    page = _check_page(text, result, st)
    assert page.tables["trades"] == []
    assert "0 trades." in text
    assert "<p>none</p>" in text  # no notes


def test_trade_list_is_capped(one_leg):
    result, fr, st = one_leg
    many = dataclasses.replace(result, trades=result.trades * 201)  # 603 rows
    text = report._html(many, fr, st, np.asarray(many.ts), int(fr.bar_seconds * 1e9))  # the page only, no plots
    assert len(_Page(text).tables["trades"]) == report.MAX_TRADE_ROWS
    assert "103 more trades omitted: showing the first 500 of 603." in text


def test_long_frames_reduce_the_line_but_keep_every_marker():
    n = 30_000
    x = np.arange(n, dtype=np.float64)
    y = np.sin(x / 500.0)
    y[12_345] = 50.0  # a one-bar spike
    y[23_456] = -50.0
    xs, ys = report._reduce(x, y)
    assert len(xs) <= 2 * report.LINE_BUCKETS < n
    assert ys.max() == 50.0 and ys.min() == -50.0
    assert np.all(np.diff(xs) >= 0)
    assert xs[0] < n / report.LINE_BUCKETS and xs[-1] >= n - n / report.LINE_BUCKETS  # spans the whole line

    # a whole frame longer than the threshold: every trade still gets its markers
    fr = _frame(1, n=25_000)
    st = _settings(1)
    targets = np.zeros(len(fr))
    targets[np.arange(len(fr)) % 100 < 30] = 0.5  # 250 round trips
    result = backtest(Fixed(targets[None, :]), fr, st)
    assert len(result.trades) == 250
    fig = report.trades_figure(result, fr, st)
    (ax,) = fig.axes
    assert len(ax.lines[0].get_xdata()) <= 2 * report.LINE_BUCKETS
    assert _marker_count(ax) == 2 * len(result.trades)


def _marker_count(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
