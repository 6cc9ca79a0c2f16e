"""``botmain paper`` on a replay: the trading loop over the lake's bars, journaled under a
paper run id, beside the backtest of the same period.

The parts are the real ones (``actors.execution.paper_session``: the strategy's stream,
the Risk Rules Monitor, the execution engine journaling into PostgreSQL, the paper venue on
the stepped kernel), in this process. Running them as Ray actors fed by the Market Data
Server is planned (README).

``as_backtest`` switches off what the monitor has and the simulator does not, so that a
paper run configured as the backtest reproduces it: the daily loss limit, and capital split
across venues (the backtest holds one margin account for all of a strategy's legs; here each
venue the strategy trades on is allocated the whole account).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import numpy as np

from actors.execution.engine import ExecutionEngine
from actors.bar_flow import FlowCounts
from actors.execution.paper_session import PaperSession, SessionClock
from actors.execution.router import Router
from actors.execution.sim_venue import SimVenue
from actors.risk.monitor import RiskMonitor
from cluster.config import BotmainConfig
from cluster.config.models import ReplayFeedConfig, RiskConfig
from cluster.lake import Lake
from cluster.store.journal import Journal
from jobs.sweep.job import resolve_strategy
from sim.backtest import BacktestResult, backtest
from sim.history import load_frame
from sim.paper import frame_bars
from sim.settings import SimSettings
from strategies.stream import StreamLeg


@dataclass(frozen=True)
class PaperRun:
    run_id: str
    instruments: list[str]
    result: BacktestResult  # the paper run's metrics table (open positions marked at the last close)
    backtest: BacktestResult  # the same strategy, period and settings through botmain backtest's path
    counts: FlowCounts
    decisions: dict[str, int]  # orders routed per venue
    risk_events: dict[str, int]  # journaled monitor decisions by kind
    journal: dict[str, int]  # orders, fills, positions written
    flow: dict | None = None  # on actors: the strategy actor's figures (bars, intents, wall time, per-bar latency)
    allocation: dict | None = None  # the monitor's TreasurySummary at the end, as data

    def comparison(self) -> str:
        """The backtest-vs-paper line."""
        a, b = self.backtest, self.result
        n = min(len(a.equity), len(b.equity))
        worst = float(np.max(np.abs(a.equity[:n] - b.equity[:n]) / np.abs(a.equity[:n]))) if n else 0.0
        same = len(a.trades) == len(b.trades) and all(_same_trade(x, y) for x, y in zip(a.trades, b.trades))
        verdict = "same trades" if same else "trades differ"
        return (
            f"backtest vs paper: final equity {a.equity[-1]:,.2f} vs {b.equity[-1]:,.2f}, "
            f"trades {len(a.trades)} vs {len(b.trades)} ({verdict}), largest relative equity gap {worst:.1e}"
        )


def _same_trade(x, y, rel: float = 1e-9) -> bool:
    for p, q in zip(dataclasses.astuple(x), dataclasses.astuple(y)):
        if isinstance(p, float) and isinstance(q, float):
            if not (p == q or (math.isnan(p) and math.isnan(q)) or math.isclose(p, q, rel_tol=rel)):
                return False
        elif p != q:
            return False
    return True


def as_backtest(config: BotmainConfig) -> BotmainConfig:
    """``config`` with the monitor's rules that the simulator lacks off (module doc)."""
    risk = config.risk.model_dump(exclude_unset=True)
    risk.setdefault("defaults", {})["daily_loss_limit"] = None
    cash = config.simulation.initial_cash
    allocations = {name: {venue: cash for venue in venues} for name, venues in (risk.get("allocations") or {}).items()}
    risk["allocations"] = allocations
    for venue, account in (risk.get("treasury") or {}).items():
        account["balance"] = max(account.get("balance", 0.0), cash * max(len(allocations), 1))
    return dataclasses.replace(config, risk=RiskConfig.model_validate(risk))


def enabled(config: BotmainConfig, name: str) -> BotmainConfig:
    """``config`` with strategy instance ``name`` enabled (the monitor refuses a disabled one)."""
    strategies = [s.model_copy(update={"enabled": True}) if s.name == name else s for s in config.strategies.strategies]
    return dataclasses.replace(config, strategies=config.strategies.model_copy(update={"strategies": strategies}))


def default_run_id(instance: str) -> str:
    return f"paper-{instance}-{time.strftime('%Y%m%d-%H%M%S')}"


async def run_paper_replay(
    config: BotmainConfig,
    name: str,
    dsn: str,
    *,
    start: str | None = None,
    end: str | None = None,
    timeframe: str | None = None,
    speed: float | None = None,
    run_id: str | None = None,
    actors: bool = False,
    feed: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> PaperRun:
    """Trade strategy instance ``name`` on the paper venue over the lake's bars from
    ``start`` to ``end``; ``speed`` replays that many bar-seconds per second (None: as fast
    as the loop goes). ``actors``: across the trading actors (the caller is a Ray driver),
    else in this process. ``feed``: where the actors' strategy takes its bars: ``mds`` (the
    replay feed plays the span's bars and funding through the Market Data Server), ``lake``
    (the bars read here, handed over), None: the MDS when every leg has a bars series the
    replay can play. In one process the bars are the lake's."""
    resolved = resolve_strategy(config, name)
    if resolved.instance is None:
        raise ValueError(f"paper trading runs an instance from strategies.yaml; {name!r} is not one")
    if speed is not None and not speed > 0:
        raise ValueError(f"--speed must be > 0, got {speed}")
    spec = next(s for s in config.strategies.strategies if s.name == name)
    if not spec.enabled:
        say(f"note: {name} is disabled in strategies.yaml; paper trades it anyway (paper moves no money, live will not)")
        config = enabled(config, name)
    frame = load_frame(config, resolved.instruments, timeframe, start, end)
    settings = SimSettings.from_config(config, resolved.instruments, resolved.instance)
    params = resolved.strategy.Params(**resolved.fixed)
    run_id = run_id or default_run_id(name)
    tf = timeframe or config.simulation.timeframe
    if feed not in (None, "mds", "lake"):
        raise ValueError(f"feed must be mds or lake, got {feed!r}")
    if not actors and feed == "mds":
        raise ValueError("bars through the Market Data Server need the trading actors (not --in-process)")
    if actors and feed is None:
        missing = unplayable_legs(config, resolved.instruments, tf)
        feed = "lake" if missing else "mds"
        if missing:
            say(f"note: {', '.join(missing)} has no bars_{tf} series for the replay feed to play (its frame is built "
                "from other series): the strategy takes the lake's bars directly, not through the MDS")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        journal = Journal(pool)
        await journal.open_run(run_id, mode="paper", strategy=name, config={
            "instruments": resolved.instruments, "params": resolved.fixed, "start": start, "end": end,
            "timeframe": timeframe or config.simulation.timeframe, "bars": len(frame),
        })  # fmt: skip
        say(f"paper run {run_id}: {name} on {', '.join(resolved.instruments)}, {len(frame):,} bars"
            + (f" (strategy, risk and execution as Ray actors; bars from the {'MDS' if feed == 'mds' else 'lake'})"
               if actors else ""))
        try:
            if actors:
                replay = replaying(config, resolved.instruments, start, end, tf, speed) if feed == "mds" else None
                result, counts, decisions, flow, allocation = await _on_actors(
                    config, run_id, name, resolved.strategy(params), frame, settings, speed, replay)  # fmt: skip
            else:
                result, counts, decisions, allocation = await _in_process(config, journal, run_id, name, resolved, params,
                                                                          frame, settings, speed)  # fmt: skip
                flow = None
            # the monitor's allocation, usage and PnL per strategy and venue at the end (botmain positions)
            end_ns = int(frame.ts[-1]) + int(frame.bar_seconds * 1e9)
            await journal.record_risk_event("allocation", ts_ns=end_ns, run_id=run_id, strategy=name, detail=allocation,
                                            key=f"{name}:allocation:end")  # fmt: skip
        except BaseException:
            await journal.close_run(run_id, status="failed")  # what was journaled stays
            raise
        await journal.close_run(run_id)
        orders = await journal.orders(run_id)
        fills = await journal.fills(run_id)
        positions = await journal.positions(run_id)
        risk_events = await journal.risk_event_counts(run_id)
    finally:
        await pool.close()
    reference = backtest(resolved.strategy(params), frame, settings)
    return PaperRun(
        run_id=run_id, instruments=resolved.instruments, result=result, backtest=reference, counts=counts,
        decisions=decisions, risk_events=risk_events,
        journal={"orders": len(orders), "fills": len(fills), "positions": len(positions)}, flow=flow,
        allocation=allocation,
    )  # fmt: skip


async def _in_process(config, journal, run_id, name, resolved, params, frame, settings, speed):
    clock = SessionClock()
    venue = SimVenue(run_id, list(config.venues.venues))
    router = Router(config)
    engine = ExecutionEngine(journal, run_id, [venue], router, clock=clock)
    session = PaperSession(
        name=name, strategy=resolved.strategy(params), legs=[StreamLeg(leg.key, leg.kind) for leg in frame.legs],
        bar_seconds=frame.bar_seconds, settings=settings, monitor=RiskMonitor(config, clock=clock),
        engine=engine, venue=venue, clock=clock,
    )  # fmt: skip
    pace = None if speed is None else frame.bar_seconds / speed
    for ts, bars in frame_bars(frame):
        await session.on_bar(ts, bars)
        if pace:
            await asyncio.sleep(pace)
    if session.paused:
        raise RuntimeError(f"the run ended paused: {session.paused}")
    return session.result(), session.counts, dict(router.decisions), dataclasses.asdict(session.monitor.summary())


def unplayable_legs(config: BotmainConfig, instruments: list[str], timeframe: str) -> list[str]:
    """The legs without a ``bars_<timeframe>`` series in the lake (the replay feed plays only those)."""
    lake = Lake(config.lake_root)
    out = []
    for key in instruments:
        inst = config.instrument(key)
        if lake.span(f"bars_{timeframe}", inst.venue, inst.symbol) is None:
            out.append(key)
    return out


def replaying(config: BotmainConfig, instruments: list[str], start: str | None, end: str | None, timeframe: str,
              speed: float | None) -> BotmainConfig:  # fmt: skip
    """``config`` with the replay feed set to play the legs' bars and funding over the span
    the frame was read on (the same lake rows), at ``speed`` (None: as fast as it goes)."""
    replay = ReplayFeedConfig.model_validate({
        **config.market_data.feeds.replay.model_dump(), "enabled": True, "instruments": instruments,
        "kinds": ["bars", "funding"], "timeframe": timeframe, "start": start, "end": end,
        "speed": "max" if speed is None else speed, "rate": None,
    })  # fmt: skip
    feeds = config.market_data.feeds.model_copy(update={"replay": replay})
    return dataclasses.replace(config, market_data=config.market_data.model_copy(update={"feeds": feeds}))


class FeedBusy(RuntimeError):
    pass


async def _on_actors(config, run_id, name, strategy, frame, settings, speed, replay: BotmainConfig | None):
    """The same run with the strategy, the monitor, the Execution Server and the paper
    venue as Ray actors (actors/trading/); the caller is a Ray driver. ``replay``: the
    configuration the replay feed plays the bars with, through the MDS (None: the frame's
    bars handed to the strategy actor)."""
    from actors import names, topology
    from actors.trading.launch import start_paper_actors, stop_paper_actors

    if replay is not None and topology.feed_state("replay") in ("starting", "running"):
        raise FeedBusy("a replay feed is playing on this cluster already (botmain mds stop, or --feed lake)")
    actors = start_paper_actors(config, run_id, name, strategy)
    started_mds = False
    try:
        if replay is None:
            flow = await actors.strategy.run.remote(frame, settings, None if speed is None else speed / frame.bar_seconds)
        else:
            started_mds = topology.named_actor(names.MDS) is None
            topology.start_market_data(replay, feeds=[])  # the MDS, if it is not running
            legs = [(leg.key, leg.kind) for leg in frame.legs]
            await actors.strategy.subscribe.remote([key for key, _ in legs], frame.bar_seconds)
            topology.start_market_data(replay, feeds=["replay"])  # then the bars
            flow = await actors.strategy.run_stream.remote(legs, frame.bar_seconds, settings, len(frame))
        result = await actors.strategy.finish.remote()
        risk = await actors.risk.status.remote()
        execution = await actors.execution.status.remote()
    finally:
        stop_paper_actors(actors)
        if replay is not None:
            if started_mds:
                topology.stop_market_data()  # it was started for this run
            else:
                topology.stop_feed("replay")
    counts = FlowCounts(**{k: v for k, v in risk["strategies"][name].items() if k in FlowCounts.__dataclass_fields__})
    counts.restarts = risk["execution_unreachable"]
    flow["feed"] = "mds" if replay is not None else "lake"
    return result, counts, execution["decisions"], flow, risk["summary"]
