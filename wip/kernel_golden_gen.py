import sys, numpy as np
sys.path.insert(0, sys.argv[2] if len(sys.argv) > 2 else ".")  # usage: gen.py OUT.npz [CHECKOUT]
from bench.backtest import sample_frame, KEY
from sim.backtest import backtest
from sim.settings import SimSettings, LegCosts, RiskRules
from strategies.ema_cross import EmaCross, EmaCrossParams
from strategies.frame import Frame, LegData

out = {}
config, frame = sample_frame()
s = SimSettings.from_config(config, [KEY], "sol_ema_cross")
for name, st in [("full", s), ("close", s.with_(fill_price="close", latency_ms=0.0)),
                 ("lev", s.with_(risk=RiskRules(max_leverage=20, stop_multiple=2.0, liquidation_buffer=0.2, max_drawdown=0.5)))]:
    for p in [EmaCrossParams(fast=12, slow=48), EmaCrossParams(fast=5, slow=20, exposure=8.0)]:
        r = backtest(EmaCross(p), frame, st)
        key = f"ema_{name}_{p.fast}_{p.exposure}"
        out[key + "_eq"] = r.equity
        out[key + "_tr"] = np.array([[t.entry_price, t.exit_price, t.size, t.pnl, t.fees, t.funding, t.entry_ts.astype(np.int64), t.exit_ts.astype(np.int64)] for t in r.trades])
        out[key + "_m"] = np.array([getattr(r.metrics, f) for f in ("total_return", "sharpe", "max_drawdown", "trades")], dtype=float)
# synthetic 2-leg with funding and random targets
rng = np.random.default_rng(7)
n = 5000
def leg(key, kind, seed):
    r = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(r.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * (1 + r.normal(0, 0.002, n))
    h = np.maximum(o, c) * (1 + np.abs(r.normal(0, 0.005, n)))
    l = np.minimum(o, c) * (1 - np.abs(r.normal(0, 0.005, n)))
    f = np.where(np.arange(n) % 60 == 59, r.normal(0.0001, 0.0003, n), 0.0)
    return LegData(key, kind, o, h, l, c, r.uniform(100, 1000, n), f, f)
fr = Frame(np.arange(n, dtype=np.int64) * 60_000_000_000, 60.0, (leg("drift:SOL-PERP", "perp", 1), leg("jupiter:SOL-USDC", "spot", 2)))
tgt = np.full((2, n), np.nan)
idx = rng.choice(n, 400, replace=False)
tgt[0, idx] = rng.choice([-3.0, -1.0, 0.0, 1.0, 4.0], 400)
tgt[1, idx] = rng.choice([0.0, 0.5, 1.0], 400)
class T:
    name = "t"
    class params:
        @staticmethod
        def model_dump(): return {}
    def signals(self, f): return tgt
legs = (LegCosts(key="drift:SOL-PERP", perp=True, fee=0.0005, slippage_bps=1, impact="sqrt", lot_size=0.01, min_size=0.01),
        LegCosts(key="jupiter:SOL-USDC", perp=False, fee=0.0003, slippage_bps=2, impact="amm", pool_depth_usd=2e6))
for name, rr, fp, lat in [("a", RiskRules(stop_multiple=3.0, liquidation_buffer=0.1, max_drawdown=0.6, max_leverage=10), "next_open", 250.0),
                 ("b", RiskRules(), "close", 0.0), ("c", RiskRules(max_position_notional=5000, max_order_notional=2000, stop_multiple=1.5), "next_open", 90_000.0),
                 ("d", RiskRules(), "next_open", 250.0), ("e", RiskRules(liquidation_buffer=0.5), "next_open", 0.0)]:
    tgt[0] = np.where(np.isnan(tgt[0]), np.nan, np.sign(tgt[0]) * 9.5) if name in ("d", "e") else tgt[0]
    st = SimSettings(legs=legs, fill_price=fp, latency_ms=lat, risk=rr)
    r = backtest(T(), fr, st)
    out[f"syn_{name}_eq"] = r.equity
    out[f"syn_{name}_tr"] = np.array([[t.entry_price, t.exit_price, t.size, t.pnl, t.fees, t.funding, t.entry_ts.astype(np.int64), t.exit_ts.astype(np.int64)] for t in r.trades])
    out[f"syn_{name}_m"] = np.array([getattr(r.metrics, f) for f in ("total_return", "sharpe", "max_drawdown", "trades")], dtype=float)
    print(name, r.metrics.trades, r.metrics.total_return, {x: sum(t.exit_reason == x for t in r.trades) for x in set(t.exit_reason for t in r.trades)})
np.savez(sys.argv[1], **out)
print(len(out))
