"""Correctness against an independent engine: our simulator and vectorbt on the same
EMA-cross grid, configured identically, combo by combo.

Data: the sample's Binance SOLUSDT perp 1m candles (43,200 bars). Grid: fast 5..53 step
2, slow 20..212 step 8, fast < slow (580 combos). Both engines: long while fast EMA >
slow EMA, flat otherwise; fill at the signal bar's close; all-in sizing (cash / (price x
(1 + slippage) x (1 + fee))); 5 bp fee and 1 bp slippage per fill; no funding, no
leverage, no liquidation, no risk rules; an open position is marked at the last close.

Prints the largest absolute difference in total return and in trade count across all
combos (target: trade counts equal, return difference below 1e-9), and the combos where
they differ most. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.backtest import KEY, grid, sample_frame  # noqa: E402
from bench.vectorbt_reference import vectorbt_ema_sweep  # noqa: E402
from sim.backtest import evaluate  # noqa: E402
from sim.settings import LegCosts, SimSettings  # noqa: E402
from strategies.ema_cross import EmaCross  # noqa: E402

FEE, SLIPPAGE = 0.0005, 0.0001


def main() -> None:
    _, frame = sample_frame()
    combos = grid("long_only")
    pairs = [(p.fast, p.slow) for p in combos]
    # perp=False: a cash account like vectorbt's (no funding, no margin, no liquidation)
    settings = SimSettings(legs=(LegCosts(key=KEY, perp=False, fee=FEE, slippage_bps=SLIPPAGE * 1e4),), fill_price="close")

    t0 = time.perf_counter()
    ours = list(evaluate(EmaCross, combos, frame, settings))
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    vbt_return, vbt_trades = vectorbt_ema_sweep(frame, pairs, FEE, SLIPPAGE, settings.initial_cash)
    t_vbt = time.perf_counter() - t0

    our_return = np.array([m.total_return for m in ours])
    our_trades = np.array([m.trades for m in ours])
    d_return = np.abs(our_return - vbt_return)
    d_trades = np.abs(our_trades - vbt_trades)
    worst = np.argsort(d_return)[::-1][:5]

    print(f"EMA cross on {len(frame):,} bars, {len(combos)} combos; fill at close, fee {FEE:.2%}, slippage {SLIPPAGE:.2%}, all-in, long only\n")
    print(f"{'':<38} {'ours':>14} {'vectorbt':>14}")
    print(f"{'mean total return':<38} {our_return.mean():>14.6f} {vbt_return.mean():>14.6f}")
    print(f"{'trades (all combos)':<38} {our_trades.sum():>14,} {int(vbt_trades.sum()):>14,}")
    print(f"{'seconds (first run, incl. compile)':<38} {t_ours:>14.2f} {t_vbt:>14.2f}")
    print(f"\nlargest |total return difference|: {d_return.max():.3e}  (target < 1e-9)")
    print(f"largest |trade count difference|:  {int(d_trades.max())}  (target 0); combos with any: {int((d_trades > 0).sum())}")
    print("\nlargest return differences:")
    for k in worst:
        print(f"  fast={pairs[k][0]:>3} slow={pairs[k][1]:>3}  ours {our_return[k]:+.12f}  vectorbt {vbt_return[k]:+.12f}  diff {d_return[k]:.2e}")
    print(
        json.dumps(
            {
                "combos": len(combos),
                "bars": len(frame),
                "max_abs_total_return_diff": float(d_return.max()),
                "max_abs_trade_count_diff": int(d_trades.max()),
                "combos_with_trade_count_diff": int((d_trades > 0).sum()),
                "total_trades_ours": int(our_trades.sum()),
                "total_trades_vectorbt": int(vbt_trades.sum()),
            }
        )
    )


if __name__ == "__main__":
    main()
