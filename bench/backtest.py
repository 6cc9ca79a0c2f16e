"""Backtest speed: our compiled simulator beside vectorbt, same data, same grid, same run.

Data: the sample's Binance SOLUSDT perp 1m candles (43,200 bars). Grid: EMA cross, fast
5..53 step 2, slow 20..212 step 8, fast < slow (580 combos).

* single backtest: one ``backtest()`` of sol_ema_cross with the full cost model of
  configs/ (taker fee, 1 bp + square-root impact, 250 ms latency, lot rounding, trailing
  stop, liquidation checks, auto-close, kill switch), signals and metrics and the trade
  list included; bars/s after a JIT warm-up, best of several. The kill switch is set to
  99 % so that it is checked on every bar but never ends a run early (a halted run is
  flat and costs almost nothing per bar, which would flatter the figure);
* sweep in-process: the 580 combos through ``evaluate`` on one core, full cost model, and
  again with vectorbt's settings (fill at close, fee + fixed slippage only);
* sweep through Ray: the same combos as tasks on a local Ray with every core (workers
  warmed up by a first pass), data put in the object store once;
* vectorbt: ``MA.run`` (each span once) + ``Portfolio.from_signals`` + ``total_return``
  for the same 580 pairs (fill at close, same fee and slippage, long only, all-in), best
  of several; vectorbt computes only the total return where we compute every metric;
* Ray parallel efficiency on a 10,440-combo sweep (the grid x 18 exposures): time on one
  core in-process / (workers x time through Ray with that many workers).

The last line is one JSON object with every figure printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cluster.config import load_config  # noqa: E402
from jobs.ingest.formats import read_file  # noqa: E402
from jobs.ingest.naming import InstrumentResolver  # noqa: E402
from sim.backtest import backtest, evaluate  # noqa: E402
from sim.history import frame_from_bars  # noqa: E402
from sim.market import MarketArrays  # noqa: E402
from sim.settings import LegCosts, SimSettings  # noqa: E402
from strategies.ema_cross import EmaCross, EmaCrossParams  # noqa: E402

DATA = ROOT / "data" / "sample" / "binance" / "futures" / "SOL_USDT_USDT-1m-futures.feather"
KEY = "binanceusdm:SOL-PERP"
FAST = range(5, 54, 2)
SLOW = range(20, 213, 8)
EXPOSURES = [0.5 * k for k in range(1, 19)]  # x 580 = 10,440 combos for the efficiency run
REPEATS = 5


def sample_frame():
    config = load_config(ROOT / "configs")
    parsed = read_file(DATA, InstrumentResolver(config), None)
    return config, frame_from_bars(parsed.series[0].table, KEY)


def grid(direction: str = "long_only", exposures=(1.0,)) -> list[EmaCrossParams]:
    return [
        EmaCrossParams(fast=f, slow=s, direction=direction, exposure=e)
        for e in exposures
        for f in FAST
        for s in SLOW
        if f < s
    ]


def best_of(fn, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def fresh(frame):
    """The same arrays without the indicator cache: each timed run computes its EMAs."""
    return type(frame)(frame.ts, frame.bar_seconds, frame.legs, frame.notes)


def vbt_settings() -> SimSettings:
    return SimSettings(legs=(LegCosts(key=KEY, fee=0.0005, slippage_bps=1.0),), fill_price="close")


def ours_single(frame, full: SimSettings) -> float:
    strategy = EmaCross(EmaCrossParams(fast=12, slow=48))
    backtest(strategy, fresh(frame), full)  # JIT warm-up
    return best_of(lambda: backtest(strategy, fresh(frame), full))


def ours_in_process(frame, settings: SimSettings, combos) -> float:
    market = MarketArrays.build(frame, settings)
    list(evaluate(EmaCross, combos[:2], fresh(frame), settings, market))
    return best_of(lambda: list(evaluate(EmaCross, combos, fresh(frame), settings, market)), 3)


def ours_ray(frame, settings: SimSettings, combos, workers: int, repeats: int = 3) -> float:
    import ray

    from jobs.sweep.fanout import fan_out

    market = MarketArrays.build(frame, settings)
    todo = [(i, p.model_dump()) for i, p in enumerate(combos)]
    chunk = max(1, -(-len(todo) // (workers * 4)))

    def run(key: str) -> None:
        n = sum(len(c.rows) for c in fan_out(frame, market, key, settings, EmaCross, todo, chunk))
        assert n == len(todo)

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        run("warm-up")  # workers start, import, load the JIT cache, fetch the data
        best = float("inf")
        for r in range(repeats):
            t0 = time.perf_counter()
            run(f"timed-{r}")  # a new key: every worker fetches the data again
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        ray.shutdown()


def vectorbt_sweep(frame, pairs) -> tuple[float, np.ndarray, np.ndarray] | None:
    try:
        from bench.vectorbt_reference import vectorbt_ema_sweep
    except ImportError as exc:  # vectorbt lives in the dev group
        print(f"vectorbt not importable ({exc}); skipping the reference")
        return None
    vectorbt_ema_sweep(frame, pairs[:4], count_trades=False)  # warm-up: numba compiles vectorbt's kernels
    best, out = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        out = vectorbt_ema_sweep(frame, pairs, count_trades=False)
        best = min(best, time.perf_counter() - t0)
    return best, out[0], out[1]


def main() -> None:
    config, frame = sample_frame()
    n = len(frame)
    cpus = os.cpu_count() or 1
    full = SimSettings.from_config(config, [KEY], "sol_ema_cross")
    full = full.with_(risk=dataclasses.replace(full.risk, max_drawdown=0.99))  # checked, never fires
    plain = vbt_settings()
    combos = grid()
    pairs = [(p.fast, p.slow) for p in combos]
    cb = len(combos) * n

    t_single = ours_single(frame, full)
    t_full = ours_in_process(frame, full, combos)
    t_plain = ours_in_process(frame, plain, combos)
    t_ray = ours_ray(frame, full, combos, cpus)
    vbt = vectorbt_sweep(frame, pairs)

    big = grid(exposures=EXPOSURES)
    t_big_1 = ours_in_process(frame, full, big)
    t_big_2 = ours_ray(frame, full, big, 2, repeats=2)
    efficiency = t_big_1 / (2 * t_big_2)

    fig = {
        "bars": n,
        "combos": len(combos),
        "single_backtest_bars_per_s": n / t_single,
        "sweep_in_process_full_cost_combo_bars_per_s": cb / t_full,
        "sweep_in_process_vbt_settings_combo_bars_per_s": cb / t_plain,
        "sweep_ray_full_cost_combo_bars_per_s": cb / t_ray,
        "ray_workers": cpus,
        "efficiency_combos": len(big),
        "efficiency_in_process_s": t_big_1,
        "efficiency_ray_2_workers_s": t_big_2,
        "ray_parallel_efficiency_2_workers": efficiency,
    }
    if vbt:
        fig["vectorbt_combo_bars_per_s"] = cb / vbt[0]
        fig["ratio_in_process_full_vs_vectorbt"] = fig["sweep_in_process_full_cost_combo_bars_per_s"] / fig["vectorbt_combo_bars_per_s"]
        fig["ratio_in_process_vbt_settings_vs_vectorbt"] = fig["sweep_in_process_vbt_settings_combo_bars_per_s"] / fig["vectorbt_combo_bars_per_s"]
        fig["ratio_ray_full_vs_vectorbt"] = fig["sweep_ray_full_cost_combo_bars_per_s"] / fig["vectorbt_combo_bars_per_s"]

    print(f"Backtest speed on {n:,} bars of SOLUSDT perp 1m; EMA grid of {len(combos)} combos\n")
    print(f"{'measure':<58} {'ours':>14} {'vectorbt':>14} {'ratio':>7}")
    print(f"{'single backtest, full cost model (bars/s)':<58} {fig['single_backtest_bars_per_s']:>14,.0f} {'':>14} {'':>7}  target >= 2,000,000")
    vb = fig.get("vectorbt_combo_bars_per_s")
    rows = [
        ("sweep in-process, 1 core, full cost model (combo-bars/s)", "sweep_in_process_full_cost_combo_bars_per_s", "ratio_in_process_full_vs_vectorbt"),
        ("sweep in-process, 1 core, vectorbt's settings", "sweep_in_process_vbt_settings_combo_bars_per_s", "ratio_in_process_vbt_settings_vs_vectorbt"),
        (f"sweep through Ray, {cpus} cores, full cost model", "sweep_ray_full_cost_combo_bars_per_s", "ratio_ray_full_vs_vectorbt"),
    ]
    for label, key, ratio in rows:
        ref = f"{vb:,.0f}" if vb else "-"
        r = f"{fig[ratio]:.1f}x" if ratio in fig else "-"
        print(f"{label:<58} {fig[key]:>14,.0f} {ref:>14} {r:>7}")
    print(
        f"\nRay fan-out, {len(big):,} combos: 1 core in-process {t_big_1:.2f} s, 2 workers through Ray {t_big_2:.2f} s "
        f"-> parallel efficiency {efficiency:.2f} (target >= 0.8)"
    )
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
