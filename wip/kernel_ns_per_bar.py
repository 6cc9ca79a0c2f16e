import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
from sim import kernel as k
from bench.backtest import sample_frame, KEY
from sim.settings import SimSettings
from sim.market import MarketArrays
config, frame = sample_frame()
s = SimSettings.from_config(config, [KEY], "sol_ema_cross")
m = MarketArrays.build(frame, s)
lp, AS = s.leg_params(), s.account_params(frame.bar_seconds)
N = len(frame)
for name, tgt in [("quiet", np.full((1, N), np.nan)), ("long", np.r_[np.nan, np.ones(N-1)].reshape(1, -1)), ("flip", np.where(np.arange(N) % 100 < 50, 1.0, 0.0).reshape(1, -1))]:
    args = (m.open, m.high, m.low, m.close, m.sigma, m.volume, m.stop_sigma, m.funding, m.book_off, m.book_size, tgt, lp, AS, False)
    k.simulate(*args)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter(); k.simulate(*args); best = min(best, time.perf_counter() - t)
    print(name, "%.1f ns/bar" % (best / N * 1e9))
