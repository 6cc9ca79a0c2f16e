"""The Risk Rules Monitor's pre-trade check, in process: one ``RiskMonitor.check(intent)``
with every rule on, beside a no-work floor measured in the same run.

* ours: the shipped configuration with both strategies enabled (sol_ema_cross on
  binanceusdm:SOL-PERP, sol_funding_carry on drift:SOL-PERP and jupiter:SOL-USDC), every
  rule of ``actors.risk.rules.RULES`` switched on, margin checks (free collateral,
  liquidation buffer, the treasury) included; an intent runs through those that can apply
  to its instrument (a listing without a max size has no max-size rule, spot no liquidation
  buffer, a perp no spot inventory: 20, 19 and 16 of the 22 here). Positions held: 8 SOL long on binanceusdm, a 15 SOL Drift short
  against a 15 SOL Jupiter spot long (SOL's net exposure limit lowered to 4,000 so that some
  orders reach the exposure rule and are refused there, late in the list). A fixed mix of
  2,000 intents, cycled: about 70% accepted (market, limit on the tick, target and
  reduce-only orders) and 30% refused, by early rules (tick, lot, price band, reduce-only,
  spot inventory, order notional) and late ones (net exposure). Between checks, outside the
  timing: the event clock moves 3 ms (333 orders/s, under the 400/s limit set here, so the
  throttle's window is full of recent orders and checked in earnest), an accepted order is
  reported done (``order_closed``), and every 10 intents SOL's marks and consolidated mids
  move on a random walk through ``on_mark`` / ``on_best``;
* reference: the same loop calling an object whose ``check(intent)`` returns a constant
  accepted verdict: the cost of the call, the timer and the loop, doing no work.

The two alternate in ``ROUNDS`` slices so that both see the same machine; the garbage
collector is frozen after the set-up, as every actor does at its start. Each is timed twice
over: by the wall clock (``perf_counter_ns``), and by the thread's CPU time
(``thread_time_ns``, a system call of ~0.4 us that the reference pays too). On a machine
shared with other work the wall clock's tail holds the time the OS gave to another process
in the middle of a check (the p99.9 in milliseconds shows it); CPU time leaves that out and
is what the check costs. Target (the issue): p99 well under 25 us. NautilusTrader's RiskEngine is quoted at ~21 us per order for a cash
account and ~6 us for margin (their figures, not measured here). The last line is one JSON
object with every figure printed.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from actors.risk import RiskMonitor, Verdict  # noqa: E402
from actors.risk.rules import RULES, net_exposure  # noqa: E402
from cluster.domain import Fill, OrderIntent, OrderType, Side  # noqa: E402
from tests.risk_fixtures import config  # noqa: E402

EMA, CARRY = "sol_ema_cross", "sol_funding_carry"
BINANCE, DRIFT, JUPITER = "binanceusdm:SOL-PERP", "drift:SOL-PERP", "jupiter:SOL-USDC"
SOL_KEYS = (BINANCE, DRIFT, JUPITER)
T0 = 1_767_225_600 * 1_000_000_000
STEP_NS = 3_000_000
MIX = 2_000
SLICE = 20_000
ROUNDS = 10
TARGET_P99_US = 25.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class NoWork:
    """The floor: the same call shape, a constant answer."""

    def __init__(self) -> None:
        self.verdict = Verdict(True, None)

    def check(self, intent: OrderIntent) -> Verdict:
        return self.verdict


def build(clock: Clock) -> RiskMonitor:
    mon = RiskMonitor(config({"defaults": {"max_orders_per_s": 400}, "exposure": {"SOL": {"max_net_notional": 4000}}}),
                      clock=clock)
    assert all(lim.checks == {name for name, _ in RULES} for lim in mon.limits.values()), "every rule on"
    for key in SOL_KEYS:
        mon.on_mark(key, 250.0)
    mon.on_best("SOL-PERP", 249.95, 250.05)
    mon.on_best("SOL-USDC", 249.95, 250.05)
    for n, (strategy, key, side, size) in enumerate(
        ((EMA, BINANCE, Side.BUY, 8.0), (CARRY, DRIFT, Side.SELL, 15.0), (CARRY, JUPITER, Side.BUY, 15.0))
    ):
        mon.on_fill(strategy, Fill(f"o{n}", key.split(":")[0], f"f{n}", T0, key, side, size, 250.0, 0.0))
    return mon


def mix(rng: random.Random) -> list[OrderIntent]:
    def order(strategy, key, side, size, limit=None, **kw):
        return OrderIntent(strategy, key, side, size, OrderType.LIMIT if limit else OrderType.MARKET, limit, **kw)

    B, S = Side.BUY, Side.SELL
    makers = [
        # accepted
        (20, lambda: order(EMA, BINANCE, rng.choice((B, S)), round(rng.uniform(0.5, 3), 2), reference_price=250.0)),
        (10, lambda: order(EMA, BINANCE, B, 1.0, limit=round(rng.uniform(247, 253), 2))),
        (10, lambda: order(CARRY, DRIFT, rng.choice((B, S)), round(rng.uniform(0.5, 5), 2), reference_price=250.0)),
        (10, lambda: order(CARRY, DRIFT, S, rng.uniform(1, 8), target=-0.9, reference_price=250.0)),
        (10, lambda: order(CARRY, JUPITER, rng.choice((B, S)), round(rng.uniform(0.1, 2), 3), reference_price=250.0)),
        (10, lambda: order(EMA, BINANCE, S, round(rng.uniform(1, 8), 2), reduce_only=True, reference_price=250.0)),
        # refused early
        (5, lambda: order(EMA, BINANCE, B, 12.0, reference_price=250.0)),  # max_order_notional
        (5, lambda: order(EMA, BINANCE, B, 1.0, limit=250.125)),  # tick_size
        (4, lambda: order(EMA, BINANCE, B, 1.234, reference_price=250.0)),  # lot_size
        (4, lambda: order(EMA, BINANCE, S, 1.0, limit=270.0)),  # price_band
        (4, lambda: order(EMA, BINANCE, S, 9.0, reduce_only=True, reference_price=250.0)),  # reduce_only: a flip
        (3, lambda: order(CARRY, JUPITER, S, 20.0, reference_price=250.0)),  # spot_inventory
        # refused late: SOL's net is 2,000 with a 4,000 limit
        (5, lambda: order(EMA, BINANCE, B, 9.0, reference_price=250.0)),  # net_exposure
    ]
    weights = [w for w, _ in makers]
    return [rng.choices(makers, weights)[0][1]() for _ in range(MIX)]


def run_slice(check, intents: list[OrderIntent], mon: RiskMonitor, clock: Clock, rng: random.Random,
              out: list[int], verdicts: list[Verdict] | None, timer=time.perf_counter_ns) -> None:
    pc = timer
    price = 250.0
    for i, intent in enumerate(intents):
        t0 = pc()
        verdict = check(intent)
        t1 = pc()
        out.append(t1 - t0)
        clock.now += STEP_NS
        if verdicts is not None:
            verdicts.append(verdict)
            if verdict.accepted:
                mon.order_closed(intent.strategy)
        if i % 10 == 0:
            price = min(max(price * (1 + rng.gauss(0, 0.0004)), 248.5), 251.5)
            for key in SOL_KEYS:
                mon.on_mark(key, price)
            mon.on_best("SOL-PERP", price - 0.05, price + 0.05)
            mon.on_best("SOL-USDC", price - 0.05, price + 0.05)


def pct(ns: list[int] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(ns), q)) / 1000.0


def main() -> None:
    rng = random.Random(7)
    clock = Clock()
    mon = build(clock)
    noop = NoWork()
    intents = mix(rng)
    cycle = (intents * (SLICE // MIX + 1))[:SLICE]

    run_slice(mon.check, cycle, mon, clock, rng, [], [])  # warm-up
    gc.collect()
    gc.freeze()
    ours: list[int] = []
    floor: list[int] = []
    ours_cpu: list[int] = []
    floor_cpu: list[int] = []
    verdicts: list[Verdict] = []
    for _ in range(ROUNDS):
        run_slice(mon.check, cycle, mon, clock, rng, ours, verdicts)
        run_slice(noop.check, cycle, mon, clock, rng, floor, None)
        run_slice(mon.check, cycle, mon, clock, rng, ours_cpu, [], time.thread_time_ns)
        run_slice(noop.check, cycle, mon, clock, rng, floor_cpu, None, time.thread_time_ns)

    times = np.asarray(ours)
    accepted = np.fromiter((v.accepted for v in verdicts), bool, len(verdicts))
    refused_by = Counter(v.rule for v in verdicts if not v.accepted)
    late = np.fromiter((v.rule == "net_exposure" for v in verdicts), bool, len(verdicts))
    fig = {
        "checks": len(ours),
        "mix": MIX,
        "rules_on": len(RULES) + 1,
        "rules_applying": {key: len(mon.rules[(EMA if key == BINANCE else CARRY, key)]) for key in SOL_KEYS},
        "late_rule_position": 1 + mon.rules[(EMA, BINANCE)].index(net_exposure),
        "accepted_share": float(accepted.mean()),
        "ours_p50_us": pct(times, 50),
        "ours_p99_us": pct(times, 99),
        "ours_p999_us": pct(times, 99.9),
        "ours_mean_us": float(times.mean()) / 1000.0,
        "ours_accepted_p50_us": pct(times[accepted], 50),
        "ours_accepted_p99_us": pct(times[accepted], 99),
        "ours_refused_p50_us": pct(times[~accepted], 50),
        "ours_refused_p99_us": pct(times[~accepted], 99),
        "ours_refused_late_p50_us": pct(times[late], 50),
        "ours_refused_late_p99_us": pct(times[late], 99),
        "reference_p50_us": pct(floor, 50),
        "reference_p99_us": pct(floor, 99),
        "reference_p999_us": pct(floor, 99.9),
        "ours_cpu_p50_us": pct(ours_cpu, 50),
        "ours_cpu_p99_us": pct(ours_cpu, 99),
        "ours_cpu_p999_us": pct(ours_cpu, 99.9),
        "reference_cpu_p50_us": pct(floor_cpu, 50),
        "reference_cpu_p99_us": pct(floor_cpu, 99),
        "reference_cpu_p999_us": pct(floor_cpu, 99.9),
        "checks_per_s": 1e9 / float(times.mean()),
        "target_p99_us": TARGET_P99_US,
    }
    fig["ratio_p50"] = fig["ours_p50_us"] / fig["reference_p50_us"]
    fig["ratio_p99"] = fig["ours_p99_us"] / fig["reference_p99_us"]
    fig["ours_minus_reference_p50_us"] = fig["ours_p50_us"] - fig["reference_p50_us"]
    fig["cpu_ratio_p50"] = fig["ours_cpu_p50_us"] / fig["reference_cpu_p50_us"]
    fig["cpu_ratio_p99"] = fig["ours_cpu_p99_us"] / fig["reference_cpu_p99_us"]
    fig["ours_minus_reference_cpu_p99_us"] = fig["ours_cpu_p99_us"] - fig["reference_cpu_p99_us"]
    fig["meets_target"] = fig["ours_cpu_p99_us"] < TARGET_P99_US
    fig["meets_target_wall"] = fig["ours_p99_us"] < TARGET_P99_US
    fig["refused_by"] = dict(sorted(refused_by.items()))

    applying = ", ".join(f"{key} {n}" for key, n in fig["rules_applying"].items())
    print(f"RiskMonitor.check, {fig['checks']:,} checks of a {MIX:,}-intent mix ({fig['accepted_share']:.0%} accepted), "
          f"all {fig['rules_on']} rules on (those that can apply run: {applying}), "
          f"in {ROUNDS} slices alternating with the reference\n")
    print(f"{'measure':<58} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}")
    rows = [
        ("wall clock: check, every rule on (ours)", fig["ours_p50_us"], fig["ours_p99_us"], fig["ours_p999_us"]),
        ("  accepted (every applying rule ran)", fig["ours_accepted_p50_us"], fig["ours_accepted_p99_us"], None),
        ("  refused", fig["ours_refused_p50_us"], fig["ours_refused_p99_us"], None),
        (f"  refused late (net_exposure, {fig['late_rule_position']}th of {fig['rules_applying'][BINANCE]})",
         fig["ours_refused_late_p50_us"], fig["ours_refused_late_p99_us"], None),
        ("wall clock: no-work floor, same call (reference)", fig["reference_p50_us"], fig["reference_p99_us"], fig["reference_p999_us"]),
        ("CPU time: check, every rule on (ours)", fig["ours_cpu_p50_us"], fig["ours_cpu_p99_us"], fig["ours_cpu_p999_us"]),
        ("CPU time: no-work floor, same call (reference)", fig["reference_cpu_p50_us"], fig["reference_cpu_p99_us"], fig["reference_cpu_p999_us"]),
    ]
    for name, p50, p99, p999 in rows:
        print(f"{name:<58} {p50:>8.2f} {p99:>8.2f} {'' if p999 is None else f'{p999:9.2f}':>9}")
    print(f"\nours / reference, wall clock: p50 {fig['ratio_p50']:.1f}x, p99 {fig['ratio_p99']:.1f}x; "
          f"CPU time: p50 {fig['cpu_ratio_p50']:.1f}x, p99 {fig['cpu_ratio_p99']:.1f}x; "
          f"{fig['checks_per_s']:,.0f} checks/s on one core")
    print("refused by: " + ", ".join(f"{rule} {n:,}" for rule, n in fig["refused_by"].items()))
    verdict = "meets" if fig["meets_target"] else "MISSES"
    wall = "meets" if fig["meets_target_wall"] else "misses"
    print(f"target p99 < {TARGET_P99_US:g} us: {verdict} it in CPU time ({fig['ours_cpu_p99_us']:.2f} us; "
          f"the wall clock's p99, {fig['ours_p99_us']:.2f} us, {wall} it on this machine's load); "
          "NautilusTrader's RiskEngine, their figures: ~21 us cash account, ~6 us margin")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
