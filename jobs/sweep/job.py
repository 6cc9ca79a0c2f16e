"""The sweep job: build the frame, plan the combos, fan them out, store results as they
arrive, then record the best runs' trades and equity curves.

Resumable: a run id already in ``backtest_runs`` (with the same strategy, data, search
and settings) skips the combos whose results are stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import ray

from cluster.config import BotmainConfig
from cluster.store.connection import prepare_store, resolve_dsn
from cluster.store.writer import StoreWriter
from jobs.sweep import results
from jobs.sweep.fanout import fan_out
from sim.backtest import backtest
from sim.books import market_with_books
from sim.history import load_frame
from sim.market import MarketArrays
from sim.report import write_report
from sim.search import enumerate_combos, plan
from sim.settings import SimSettings
from strategies.base import Strategy
from strategies.registry import strategy_class

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRequest:
    strategy: str  # an instance name from strategies.yaml, or a registered strategy
    grid: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()  # default: the instance's instruments
    samples: int | None = None  # random search when set
    seed: int = 0
    run_id: str | None = None
    timeframe: str | None = None
    start: str | None = None
    end: str | None = None
    store_best: int | None = None
    chunk_size: int | None = None
    rank_by: str | None = None
    report_dir: str | None = None  # HTML report of the best combo goes here (on the job's node)


@dataclass(frozen=True)
class Resolved:
    strategy: type[Strategy]
    instance: str | None
    instruments: list[str]
    fixed: dict


def resolve_strategy(config: BotmainConfig, name: str, instruments: tuple[str, ...] = ()) -> Resolved:
    """An instance from strategies.yaml (its instruments and params as the fixed base), or
    a bare registered strategy (instruments then required)."""
    for inst in config.strategies.strategies:
        if inst.name == name:
            return Resolved(strategy_class(inst.strategy), inst.name, list(instruments or inst.instruments), dict(inst.params))
    cls = strategy_class(name)
    if not instruments:
        raise ValueError(f"strategy {name!r} is not an instance in strategies.yaml: give --instrument venue:SYMBOL")
    for key in instruments:
        config.instrument(key)
    return Resolved(cls, None, list(instruments), {})


def default_run_id(strategy: str) -> str:
    return f"{strategy}-{time.strftime('%Y%m%d-%H%M%S')}"


def _settings_description(settings: SimSettings, frame, request: SweepRequest, timeframe: str) -> dict:
    return {
        "sim": dataclasses.asdict(settings),
        "timeframe": timeframe,
        "start": request.start,
        "end": request.end,
        "bars": len(frame),
        "first_bar": str(np.datetime64(int(frame.ts[0]), "ns")),
        "last_bar": str(np.datetime64(int(frame.ts[-1]), "ns")),
    }


def run_sweep(config: BotmainConfig, request: SweepRequest, say: Callable[[str], None] = print) -> dict:
    resolved = resolve_strategy(config, request.strategy, request.instruments)
    sweep_cfg = config.simulation.sweep
    timeframe = request.timeframe or config.simulation.timeframe
    frame = load_frame(config, resolved.instruments, timeframe, request.start, request.end)
    settings = SimSettings.from_config(config, resolved.instruments, resolved.instance)
    frame, market = market_with_books(config, frame, settings)
    search = plan(resolved.strategy, list(request.grid), resolved.fixed, request.samples, request.seed)
    combos = enumerate_combos(resolved.strategy, search)
    if not combos.params:
        raise ValueError(f"no valid combos: the parameter model refused all {combos.rejected}")
    run_id = request.run_id or default_run_id(resolved.instance or resolved.strategy.name)
    spec = results.RunSpec(
        run_id=run_id,
        strategy=resolved.strategy.name,
        instruments=resolved.instruments,
        search=search.describe(),
        settings=_settings_description(settings, frame, request, timeframe),
        combos_total=len(combos.params),
    )
    rank_by = request.rank_by or sweep_cfg.rank_by
    store_best = sweep_cfg.store_best if request.store_best is None else request.store_best
    chunk_size = request.chunk_size or sweep_cfg.chunk_size
    for note in frame.notes:
        say(f"note: {note}")
    say(
        f"run {run_id}: {resolved.strategy.name} on {', '.join(resolved.instruments)}, {len(frame):,} bars, "
        f"{len(combos.params):,} combos ({combos.rejected} refused by the parameter model)"
    )
    return asyncio.run(
        execute(
            config,
            spec,
            resolved.strategy,
            frame,
            settings,
            combos.params,
            market=market,
            chunk_size=chunk_size,
            rank_by=rank_by,
            store_best=store_best,
            max_retries=sweep_cfg.max_retries,
            report_dir=Path(request.report_dir) if request.report_dir else None,
            say=say,
        )
    )


async def execute(
    config: BotmainConfig,
    spec: results.RunSpec,
    strategy: type[Strategy],
    frame,
    settings: SimSettings,
    params: list,
    *,
    market: MarketArrays | None = None,
    chunk_size: int = 32,
    rank_by: str = "sharpe",
    store_best: int = 10,
    max_retries: int = 3,
    report_dir: Path | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Open (or resume) the run, compute the missing combos on the cluster, store them
    chunk by chunk, then the best runs' trades and equity curves."""
    market = market or MarketArrays.build(frame, settings)
    dsn = resolve_dsn(config)
    await prepare_store(dsn)
    pg = config.store.postgres
    async with StoreWriter(dsn, pg.reconnect, command_timeout=pg.command_timeout_s) as writer:
        done = await writer.run(lambda conn: results.open_run(conn, spec), f"opening run {spec.run_id}")
        job_id = _job_id()
        await writer.run(lambda conn: results.set_job_id(conn, spec.run_id, job_id), "recording the job id")
        todo = [(i, p.model_dump()) for i, p in enumerate(params) if i not in done]
        if done:
            say(f"resuming: {len(done):,} combos already stored, {len(todo):,} to go")
        try:
            stored = await _sweep(writer, spec, strategy, frame, market, settings, todo, chunk_size, max_retries, len(done), say)
            best = await writer.run(lambda conn: results.best_combos(conn, spec.run_id, rank_by, store_best), "ranking")
            report = None
            for rank, row in enumerate(best):
                result = backtest(strategy(strategy.Params(**json.loads(row["params"]))), frame, settings, market)
                await writer.write(results.trades_batch(spec.run_id, row["combo_id"], result))
                await writer.write(results.equity_batch(spec.run_id, row["combo_id"], result, frame.bar_seconds))
                if rank == 0 and report_dir is not None:
                    report = write_report(result, frame, settings, report_dir)
            if best:
                say(f"stored trades and equity curves of the best {len(best)} by {rank_by}")
            if report is not None:
                say(f"report of the best combo: {report}")
        except BaseException as exc:
            await writer.run(lambda conn: results.finish_run(conn, spec.run_id, "failed", f"{type(exc).__name__}: {exc}"), "marking the run failed")
            raise
        await writer.run(lambda conn: results.finish_run(conn, spec.run_id, "finished"), "finishing the run")
    return {"run_id": spec.run_id, "combos": len(params), "computed": stored, "skipped": len(done)}


async def _sweep(writer, spec, strategy, frame, market, settings, todo, chunk_size, max_retries, already, say) -> int:
    if not todo:
        return 0
    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=True, logging_level="WARNING")  # Ray's INFO lines stay out of the output
    data_key = uuid.uuid4().hex  # this invocation's data: workers drop any older cache
    started = time.perf_counter()
    stored = 0
    last_report = 0.0
    for chunk in fan_out(frame, market, data_key, settings, strategy, todo, chunk_size, max_retries):
        await writer.write(results.results_batch(spec.run_id, chunk.rows))
        stored += len(chunk.rows)
        now = time.perf_counter()
        if now - last_report > 1.0 or stored == len(todo):
            last_report = now
            rate = stored * len(frame) / (now - started)
            say(f"  {already + stored:,}/{spec.combos_total:,} combos stored  ({rate / 1e6:,.1f}M combo-bars/s)")
    return stored


def _job_id() -> str | None:
    """The Ray job submission id when running as a submitted job."""
    return os.environ.get("RAY_JOB_SUBMISSION_ID")
