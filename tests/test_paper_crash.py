"""The sample's largest intraday drop, replayed through the paper session with a leveraged
long: the position is closed before the simulated liquidation price is crossed (the
kernel's auto-close at the venue, the monitor's auto-close event in the journal), where the
same long without the buffer is liquidated."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from cluster.config.models import RiskConfig
from sim.backtest import backtest
from sim.history import load_frame
from sim.paper import frame_bars
from sim.settings import SimSettings
from strategies.frame import SERIES, Frame
from strategies.stream import StreamLeg
from tests.fixed_strategy import Fixed
from tests.test_paper_session import open_parts, paper_config

NAME = "sol_ema_cross"
KEY = "binanceusdm:SOL-PERP"
LEVERAGE = 9.0
HORIZON = 240  # bars: "intraday", four hours of 1m bars


def largest_drop(frame: Frame) -> tuple[int, float]:
    """The bar whose close is followed, within HORIZON bars, by the deepest low."""
    close, low = frame.leg(0).close, frame.leg(0).low
    best, at = 0.0, 0
    for i in range(len(close) - 1):
        depth = 1.0 - low[i + 1 : i + 1 + HORIZON].min() / close[i]
        if depth > best:
            best, at = depth, i
    return at, best


def window(frame: Frame, a: int, b: int) -> Frame:
    legs = tuple(dataclasses.replace(leg, **{n: getattr(leg, n)[a:b] for n in SERIES}) for leg in frame.legs)
    return Frame(frame.ts[a:b], frame.bar_seconds, legs, frame.notes)


def leveraged(config):
    """Room for a 9x long: the leverage, notional and exposure caps opened, no trailing stop
    or drawdown kill switch to close it first: only the liquidation buffer stands."""
    risk = config.risk.model_dump(exclude_unset=True)
    risk["defaults"].update(max_leverage=LEVERAGE + 1, max_position_notional=1e7, max_order_notional=1e7,
                            max_drawdown=0.99, dynamic_stop=None)  # fmt: skip
    risk["strategies"] = {}
    risk["exposure"] = {}
    return dataclasses.replace(config, risk=RiskConfig.model_validate(risk))


def test_the_monitor_closes_a_leveraged_long_before_the_crash_liquidates_it(lake_config, dsn):
    config = leveraged(paper_config(lake_config))
    full = load_frame(config, [KEY])
    at, depth = largest_drop(full)
    frame = window(full, at - 60, at + HORIZON + 30)
    entry = 50  # the long is on ten bars before the drop starts
    targets = np.full((1, len(frame)), np.nan)
    targets[0, entry] = LEVERAGE
    settings = SimSettings.from_config(config, [KEY], NAME)
    assert not settings.risk.stop_multiple and settings.risk.liquidation_buffer > 0

    # the same long without the buffer: the crash liquidates it
    bare = backtest(Fixed(targets), frame, settings.with_(risk=dataclasses.replace(settings.risk, liquidation_buffer=0.0)))
    assert [t.exit_reason for t in bare.trades][:1] == ["liquidation"], (depth, bare.trades)
    liquidation_price = bare.trades[0].liquidation_price

    run_id = "paper-crash-replay"

    async def main():
        from actors.execution.paper_session import PaperSession
        from actors.risk.monitor import RiskMonitor

        pool, journal, clock, venue, engine = await open_parts(config, dsn, NAME, run_id)
        try:
            session = PaperSession(name=NAME, strategy=Fixed(targets), legs=[StreamLeg(KEY, "perp")],
                                   bar_seconds=frame.bar_seconds, settings=settings,
                                   monitor=RiskMonitor(config, clock=clock), engine=engine, venue=venue,
                                   clock=clock)  # fmt: skip
            for ts, bars in frame_bars(frame):
                await session.on_bar(ts, bars)
            async with pool.acquire() as conn:
                events = await conn.fetch("SELECT kind, ts FROM risk_events WHERE run_id = $1 ORDER BY id", run_id)
            return session, session.result(), await journal.fills(run_id), events
        finally:
            await pool.close()

    session, result, fills, events = asyncio.run(main())
    assert session.counts.denied == 0, session.counts.denied_by
    reasons = [f.reason.value for f in fills]
    assert reasons[:2] == ["signal", "auto_close"], reasons
    close = fills[1]
    assert close.price > liquidation_price, f"closed at {close.price}, liquidation at {liquidation_price}"
    assert min(frame.leg(0).low) < liquidation_price, "the crash does cross the liquidation price"
    assert result.metrics.liquidations == 0 and result.metrics.autocloses == 1
    assert result.equity[-1] > bare.equity[-1] + 0.01 * settings.initial_cash, "the buffer saved nothing"
    # the monitor saw it too: its own auto-close decision is journaled, no later than the fill
    auto = [e for e in events if e["kind"] == "auto_close"]
    assert auto, [e["kind"] for e in events]
    back = backtest(Fixed(targets), frame, settings)
    assert np.array_equal(result.equity, back.equity)
