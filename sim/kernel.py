"""The compiled simulator: one account, one or more instruments ("legs"), bar by bar.

One implementation for backtests, sweeps and paper trading (``step``). Inputs are plain
arrays so that numba compiles it once and a sweep calls it thousands of times.

Per bar ``i`` (bar spans ``[t_i, t_i + bar)``, prices ``open/high/low/close``):

1. Orders decided at an earlier close fill at this bar's open, moved along a straight
   open->close line by the latency (``fill_next_open``). Otherwise they filled at the
   signal bar's close (step 6).
2. Intrabar exits for each open position, from the bar's low/high: the volatility
   trailing stop, the auto-close before liquidation, the liquidation itself. The first
   price reached on the way is the one that fires; a gap through it fills at the open.
3. Funding at this bar's close for perps: ``paid = size * close * rate``.
4. Mark to market at the close; returns, drawdown and exposure are accumulated online.
5. Drawdown kill switch: below ``peak * (1 - max_dd)`` everything closes and trading stops.
6. The strategy's target exposure at this close becomes an order when it changed.

Target exposure ``e`` for a leg is the fraction of account equity committed to it, costs
included: a fill of ``q = e * equity / (price * (1 + impact) * (1 + fee))`` base units.
Positions are not rebalanced as prices drift; only a changed target trades.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Impact models (CostDefaults.slippage)
IMPACT_NONE, IMPACT_AMM, IMPACT_BOOK, IMPACT_SQRT = 0, 1, 2, 3

# Exit reasons in the trade list
EXIT_SIGNAL, EXIT_STOP, EXIT_AUTOCLOSE, EXIT_LIQUIDATION, EXIT_KILL, EXIT_OPEN = 0, 1, 2, 3, 4, 5

# Per-leg parameter columns (LP: legs x N_LP)
LP_FEE, LP_SLIP, LP_MODEL, LP_POOL, LP_IMPACT, LP_LOT, LP_MIN, LP_PERP, LP_IMR, LP_MMR, LP_LIQ_FEE = range(11)
N_LP = 11

# Account settings (AS)
(
    AS_CASH,
    AS_NEXT_OPEN,
    AS_LAT_BARS,
    AS_LAT_FRAC,
    AS_MAX_POS,
    AS_MAX_ORDER,
    AS_MAX_LEV,
    AS_STOP_MULT,
    AS_LIQ_BUFFER,
    AS_MAX_DD,
) = range(10)
N_AS = 10

# Per-leg state (S: legs x N_S)
(
    S_Q,
    S_TRIP_CASH,
    S_ENTRY_I,
    S_SIDE,
    S_ENTRY_COST,
    S_ENTRY_QTY,
    S_EXIT_COST,
    S_EXIT_QTY,
    S_MAX_SIZE,
    S_FEES,
    S_FUNDING,
    S_TRAIL,
    S_LAST_TARGET,
    S_PENDING,
    S_PENDING_BAR,
    S_LIQ_PX,
    S_MARK,
    S_LIQ_NOW,
    S_AC_NOW,
    S_FUND_STEP,
) = range(20)
N_S = 20

# Results (ST)
(
    ST_CASH,
    ST_EQUITY,
    ST_PEAK,
    ST_MAX_DD,
    ST_SUM_R,
    ST_SUM_R2,
    ST_SUM_DOWN2,
    ST_N_R,
    ST_EXPOSED_BARS,
    ST_SUM_EQUITY,
    ST_TURNOVER,
    ST_FEES,
    ST_FUNDING,
    ST_SLIPPAGE,
    ST_TRADES,
    ST_CLOSED,
    ST_WINS,
    ST_GROSS_PROFIT,
    ST_GROSS_LOSS,
    ST_LIQUIDATIONS,
    ST_STOPS,
    ST_AUTOCLOSES,
    ST_KILLED,  # the kill switch fired: nothing trades any more
    ST_N_TRADE_ROWS,
    ST_N_FILL_ROWS,
    ST_BARS,  # bars stepped so far
    ST_PENDING,  # legs with an order waiting for a later bar
    ST_DIRTY,  # liquidation thresholds need recomputing
    ST_ALL_FLAT,  # no position in any leg after the previous bar
) = range(29)
N_ST = 29
# While stepping, ST_EQUITY is the equity after the last bar stepped (the previous bar's
# result for the next bar's return) and ST_PEAK/ST_MAX_DD/ST_SUM_* accumulate online.

# Trade list columns
(
    TR_LEG,
    TR_SIDE,
    TR_ENTRY_I,
    TR_EXIT_I,
    TR_ENTRY_PX,
    TR_EXIT_PX,
    TR_SIZE,
    TR_PNL,
    TR_FEES,
    TR_FUNDING,
    TR_REASON,
    TR_LIQ_PX,
) = range(12)
N_TR = 12

# Fill log columns: every fill the account books, in order (paper trading reports them to
# the execution server; a backtest can keep them for inspection)
FL_BAR, FL_LEG, FL_QTY, FL_PRICE, FL_REF, FL_FEE, FL_REASON = range(7)
N_FL = 7


@njit(cache=True, error_model="numpy")
def _impact(lp, l, side, qty, p_ref, i, sigma, vol, book_off, book_sz):
    """Relative price concession for trading ``qty`` base units (``side`` +1 buy, -1 sell)."""
    frac = lp[l, LP_SLIP]
    model = int(lp[l, LP_MODEL])
    if qty <= 0.0:
        return frac
    if model == IMPACT_AMM:
        # Constant product, reserves re-centred on p_ref: x base, y = x * p_ref quote.
        x = 0.5 * lp[l, LP_POOL] / p_ref
        if side > 0:
            if qty >= 0.999 * x:
                qty = 0.999 * x
            frac += qty / (x - qty)
        else:
            frac += qty / (x + qty)
    elif model == IMPACT_BOOK and book_off.shape[1] > 0 and book_sz[l, i, 0 if side > 0 else 1, 0] > 0.0:
        s = 0 if side > 0 else 1
        left = qty
        paid = 0.0
        k_last = 0
        for k in range(book_off.shape[3]):
            size = book_sz[l, i, s, k]
            if size <= 0.0:
                break
            k_last = k
            take = size if size < left else left
            paid += take * book_off[l, i, s, k]
            left -= take
            if left <= 0.0:
                break
        if left > 0.0:  # deeper than the recorded book: the rest at the last level seen
            paid += left * book_off[l, i, s, k_last]
        frac += paid / qty
    elif model == IMPACT_SQRT or model == IMPACT_BOOK:
        s = sigma[l, i]
        v = vol[l, i]
        if s > 0.0 and v > 0.0:
            frac += lp[l, LP_IMPACT] * s * np.sqrt(qty / v)
    return frac


@njit(cache=True, error_model="numpy", inline="always")
def _account_equity(S, cash):
    eq = cash
    for m in range(S.shape[0]):
        eq += S[m, S_Q] * S[m, S_MARK]
    return eq


@njit(cache=True, error_model="numpy")
def _fill(S, st, tr, fl, l, dq, p_exec, p_ref, fee_rate, i, reason, record):
    """Book one fill that does not cross zero; closes and records the round trip at flat."""
    n = int(st[ST_N_FILL_ROWS])
    if n < fl.shape[0]:
        fl[n, FL_BAR] = i
        fl[n, FL_LEG] = l
        fl[n, FL_QTY] = dq
        fl[n, FL_PRICE] = p_exec
        fl[n, FL_REF] = p_ref
        fl[n, FL_FEE] = abs(dq) * p_exec * fee_rate
        fl[n, FL_REASON] = reason
        st[ST_N_FILL_ROWS] = n + 1
    q0 = S[l, S_Q]
    q1 = q0 + dq
    notional = abs(dq) * p_exec
    fee = notional * fee_rate
    st[ST_CASH] -= dq * p_exec + fee
    st[ST_FEES] += fee
    st[ST_TURNOVER] += notional
    st[ST_SLIPPAGE] += abs(dq) * abs(p_exec - p_ref)
    if q0 == 0.0:
        st[ST_TRADES] += 1
        S[l, S_TRIP_CASH] = 0.0
        S[l, S_ENTRY_I] = i
        S[l, S_SIDE] = 1.0 if dq > 0 else -1.0
        S[l, S_ENTRY_COST] = 0.0
        S[l, S_ENTRY_QTY] = 0.0
        S[l, S_EXIT_COST] = 0.0
        S[l, S_EXIT_QTY] = 0.0
        S[l, S_MAX_SIZE] = 0.0
        S[l, S_FEES] = 0.0
        S[l, S_FUNDING] = 0.0
        S[l, S_LIQ_PX] = np.nan
    S[l, S_TRIP_CASH] -= dq * p_exec + fee
    S[l, S_FEES] += fee
    if abs(q1) > abs(q0):
        S[l, S_ENTRY_COST] += notional
        S[l, S_ENTRY_QTY] += abs(dq)
    else:
        S[l, S_EXIT_COST] += notional
        S[l, S_EXIT_QTY] += abs(dq)
    if abs(q1) > S[l, S_MAX_SIZE]:
        S[l, S_MAX_SIZE] = abs(q1)
    S[l, S_Q] = q1
    if q1 == 0.0:
        _close_trip(S, st, tr, l, i, reason, record, 0.0)


@njit(cache=True, error_model="numpy")
def _close_trip(S, st, tr, l, i, reason, record, open_value):
    pnl = S[l, S_TRIP_CASH] + open_value
    if reason != EXIT_OPEN:
        st[ST_CLOSED] += 1
        if pnl > 0.0:
            st[ST_WINS] += 1
            st[ST_GROSS_PROFIT] += pnl
        else:
            st[ST_GROSS_LOSS] -= pnl
    if record:
        n = int(st[ST_N_TRADE_ROWS])
        if n < tr.shape[0]:
            tr[n, TR_LEG] = l
            tr[n, TR_SIDE] = S[l, S_SIDE]
            tr[n, TR_ENTRY_I] = S[l, S_ENTRY_I]
            tr[n, TR_EXIT_I] = i
            tr[n, TR_ENTRY_PX] = S[l, S_ENTRY_COST] / S[l, S_ENTRY_QTY] if S[l, S_ENTRY_QTY] > 0 else np.nan
            tr[n, TR_EXIT_PX] = S[l, S_EXIT_COST] / S[l, S_EXIT_QTY] if S[l, S_EXIT_QTY] > 0 else np.nan
            tr[n, TR_SIZE] = S[l, S_MAX_SIZE]
            tr[n, TR_PNL] = pnl
            tr[n, TR_FEES] = S[l, S_FEES]
            tr[n, TR_FUNDING] = S[l, S_FUNDING]
            tr[n, TR_REASON] = reason
            tr[n, TR_LIQ_PX] = S[l, S_LIQ_PX]
            st[ST_N_TRADE_ROWS] = n + 1


@njit(cache=True, error_model="numpy", inline="always")
def _liquidation_price(S, lp, st, l, m_scale):
    """Price of leg ``l`` at which equity meets ``m_scale`` x maintenance margin, the other
    legs held at their marks (Drift's get_perp_liq_price does the same). NaN if none."""
    q = S[l, S_Q]
    if q == 0.0 or lp[l, LP_PERP] == 0.0:
        return np.nan
    other = st[ST_CASH]
    mm_other = 0.0
    for m in range(S.shape[0]):
        if m != l:
            other += S[m, S_Q] * S[m, S_MARK]
            if lp[m, LP_PERP] != 0.0:
                mm_other += abs(S[m, S_Q]) * S[m, S_MARK] * lp[m, LP_MMR] * m_scale
    mmr = lp[l, LP_MMR] * m_scale
    # other + q p = mm_other + |q| p mmr  ->  p (q - |q| mmr) = mm_other - other
    denom = q - abs(q) * mmr
    if denom == 0.0:
        return np.nan
    p = (mm_other - other) / denom
    if p <= 0.0:
        return np.nan
    return p


@njit(cache=True, error_model="numpy")
def _trade_to(S, st, tr, fl, lp, l, q_target, p_ref, i, col, reason, record, sigma, vol, stop_sigma, book_off, book_sz, stop_mult):
    """Move leg ``l`` to ``q_target`` base units at reference price ``p_ref`` (market order).
    ``i`` is the bar being stepped (for the records), ``col`` its column in the market arrays."""
    q0 = S[l, S_Q]
    if q0 != 0.0 and (q_target == 0.0 or (q_target > 0.0) != (q0 > 0.0)):
        side = -1.0 if q0 > 0 else 1.0
        frac = _impact(lp, l, side, abs(q0), p_ref, col, sigma, vol, book_off, book_sz)
        _fill(S, st, tr, fl, l, -q0, p_ref * (1.0 + side * frac), p_ref, lp[l, LP_FEE], i, reason, record)
        q0 = 0.0
    dq = q_target - q0
    if dq == 0.0:
        return
    side = 1.0 if dq > 0 else -1.0
    frac = _impact(lp, l, side, abs(dq), p_ref, col, sigma, vol, book_off, book_sz)
    opening = q0 == 0.0
    _fill(S, st, tr, fl, l, dq, p_ref * (1.0 + side * frac), p_ref, lp[l, LP_FEE], i, reason, record)
    if opening and stop_mult > 0.0:
        s = stop_sigma[l, col]
        S[l, S_TRAIL] = p_ref * (1.0 - S[l, S_SIDE] * stop_mult * s) if s > 0.0 else np.nan
    if S[l, S_Q] != 0.0 and np.isnan(S[l, S_LIQ_PX]):
        S[l, S_LIQ_PX] = _liquidation_price(S, lp, st, l, 1.0)


@njit(cache=True, error_model="numpy")
def _order_size(S, st, lp, AS, l, target, p_ref, col, sigma, vol, book_off, book_sz):
    """Base units for target exposure ``target``, after the risk caps and lot rounding
    (``col``: the column of the market arrays the impact model reads)."""
    if lp[l, LP_PERP] == 0.0 and target < 0.0:
        target = 0.0  # spot legs are long only: borrowing to short spot is not simulated
    if target == 0.0:
        return 0.0
    S[l, S_MARK] = p_ref
    equity = _account_equity(S, st[ST_CASH])
    if equity <= 0.0:
        return 0.0
    side = 1.0 if target > 0 else -1.0
    fee = lp[l, LP_FEE]
    q = target * equity / (p_ref * (1.0 + fee))
    for _ in range(2):  # impact depends on size and size on impact: two fixed-point steps
        frac = _impact(lp, l, side, abs(q - S[l, S_Q]), p_ref, col, sigma, vol, book_off, book_sz)
        q = target * equity / (p_ref * (1.0 + frac) * (1.0 + fee))
    cap = AS[AS_MAX_POS] / p_ref
    gross_other = 0.0
    for m in range(S.shape[0]):
        if m != l:
            gross_other += abs(S[m, S_Q]) * S[m, S_MARK]
    lev = AS[AS_MAX_LEV]
    if lp[l, LP_PERP] != 0.0 and 1.0 / lp[l, LP_IMR] < lev:
        lev = 1.0 / lp[l, LP_IMR]
    room = (lev * equity - gross_other) / p_ref
    if room < cap:
        cap = room
    if cap < 0.0:
        cap = 0.0
    if lp[l, LP_PERP] == 0.0 and equity / p_ref < cap:
        cap = equity / p_ref  # spot is paid for with equity: no margin borrowing
    if abs(q) > cap:
        q = side * cap
    max_dq = AS[AS_MAX_ORDER] / p_ref
    q0 = S[l, S_Q]
    if abs(q - q0) > max_dq:
        q = q0 + max_dq * (1.0 if q > q0 else -1.0)
    lot = lp[l, LP_LOT]
    if lot > 0.0:  # toward zero, to whole lots (the 1e-9 forgives float noise)
        q = np.sign(q) * np.floor(abs(q) / lot + 1e-9) * lot
    if q != 0.0 and abs(q - q0) < lp[l, LP_MIN]:
        return q0
    return q


@njit(cache=True, error_model="numpy")
def new_account(L, AS, first_marks):
    """The account before its first bar: cash ``AS[AS_CASH]``, flat legs marked at
    ``first_marks`` (legs,). Returns (S, st)."""
    S = np.zeros((L, N_S))
    st = np.zeros(N_ST)
    for l in range(L):
        S[l, S_PENDING_BAR] = -1.0
        S[l, S_TRAIL] = np.nan
        S[l, S_LIQ_PX] = np.nan
        S[l, S_MARK] = first_marks[l]
    st[ST_CASH] = AS[AS_CASH]
    st[ST_EQUITY] = AS[AS_CASH]
    st[ST_PEAK] = AS[AS_CASH]
    st[ST_DIRTY] = 1.0
    st[ST_ALL_FLAT] = 1.0
    return S, st


@njit(cache=True, error_model="numpy")
def step(i0, open_, high, low, close, sigma, vol, stop_sigma, funding, book_off, book_sz, target, lp, AS, S, st, trades, fills, record, equity_out):
    """Advance the account over the bars in the market arrays' columns, bar after bar:
    the six steps of the module docstring for each.

    Column ``c`` of the market arrays (legs, columns) and of ``target`` (the strategy's
    exposure at that bar's close per leg, NaN: no decision) is bar ``i0 + c`` of the run:
    orders wait for ``i + 1 + latency bars`` and the records carry ``i``. A backtest passes
    its whole arrays with ``i0 = 0`` (``simulate``); the paper venue passes the one column
    of the bar that just closed with ``i0`` = the bars stepped so far. Either way each bar
    goes through the same loop body below: one implementation.

    The state lives in ``S`` (legs, N_S) and ``st`` (N_ST) between calls; inside a call it
    is carried in locals and written back at the end (LLVM keeps them in registers, which
    a call per bar would not allow: see the ``bench/backtest.py`` figures). Trades closed
    are appended to ``trades`` when ``record``, every fill to ``fills`` while it has room,
    each bar's equity to ``equity_out`` when it has room. Returns the equity at the last
    bar's close, costs included."""
    L = S.shape[0]
    n = close.shape[1]
    next_open = AS[AS_NEXT_OPEN] != 0.0
    lat_bars = int(AS[AS_LAT_BARS])
    lat_frac = AS[AS_LAT_FRAC]
    stop_mult = AS[AS_STOP_MULT]
    buffer = AS[AS_LIQ_BUFFER]
    max_dd = AS[AS_MAX_DD]
    keep_equity = equity_out.shape[0] >= n
    # loop-carried state
    halted = st[ST_KILLED] != 0.0
    pending = int(st[ST_PENDING])
    dirty = st[ST_DIRTY] != 0.0
    all_flat = st[ST_ALL_FLAT] != 0.0
    prev_equity = st[ST_EQUITY]
    peak = st[ST_PEAK]
    max_dd_seen = st[ST_MAX_DD]
    sum_r = st[ST_SUM_R]
    sum_r2 = st[ST_SUM_R2]
    sum_down2 = st[ST_SUM_DOWN2]
    n_r = st[ST_N_R]
    exposed_bars = st[ST_EXPOSED_BARS]
    sum_equity = st[ST_SUM_EQUITY]
    for l in range(L):
        S[l, S_FUND_STEP] = 0.0

    for col in range(n):
        i = i0 + col
        decides = False
        for l in range(L):
            t = target[l, col]
            if t == t and t != S[l, S_LAST_TARGET]:  # t == t: not NaN
                decides = True

        # Quiet bar: flat, nothing pending, no new decision. Equity is the cash, the bar's
        # return is 0 and nothing else can happen (a sweep spends most bars here).
        if all_flat and pending == 0 and not decides:
            equity = st[ST_CASH]
            if prev_equity > 0.0:
                n_r += 1.0
            prev_equity = equity
            sum_equity += equity
            if keep_equity:
                equity_out[col] = equity
            continue

        for l in range(L):
            S[l, S_FUND_STEP] = 0.0

        # 1. pending orders fill in this bar
        if next_open and not halted and pending > 0:
            for l in range(L):
                S[l, S_MARK] = open_[l, col]
            for l in range(L):
                if S[l, S_PENDING_BAR] == i:
                    S[l, S_PENDING_BAR] = -1.0
                    pending -= 1
                    p = open_[l, col] + (close[l, col] - open_[l, col]) * lat_frac
                    q = _order_size(S, st, lp, AS, l, S[l, S_PENDING], p, col, sigma, vol, book_off, book_sz)
                    _trade_to(S, st, trades, fills, lp, l, q, p, i, col, EXIT_SIGNAL, record, sigma, vol, stop_sigma, book_off, book_sz, stop_mult)
                    dirty = True

        # 2. intrabar exits: stop, auto-close, liquidation. The thresholds depend on cash
        # and the other legs' marks: recomputed after a fill or funding, or every bar when
        # other legs move.
        if L > 1:
            dirty = True
        for l in range(L):
            q = S[l, S_Q]
            if q == 0.0:
                continue
            long = q > 0.0
            if dirty:
                S[l, S_LIQ_NOW] = _liquidation_price(S, lp, st, l, 1.0)
                S[l, S_AC_NOW] = _liquidation_price(S, lp, st, l, 1.0 + buffer) if buffer > 0.0 else np.nan
            trigger = np.nan
            reason = EXIT_SIGNAL
            liq = S[l, S_LIQ_NOW]
            if not np.isnan(liq):
                trigger = liq
                reason = EXIT_LIQUIDATION
            ac = S[l, S_AC_NOW]
            if not np.isnan(ac) and (np.isnan(trigger) or (ac > trigger if long else ac < trigger)):
                trigger = ac
                reason = EXIT_AUTOCLOSE
            trail = S[l, S_TRAIL]
            if stop_mult > 0.0 and not np.isnan(trail):
                if np.isnan(trigger) or (trail > trigger if long else trail < trigger):
                    trigger = trail
                    reason = EXIT_STOP
            if np.isnan(trigger):
                continue
            hit = low[l, col] <= trigger if long else high[l, col] >= trigger
            if not hit:
                continue
            o = open_[l, col]
            p = min(o, trigger) if long else max(o, trigger)
            if reason == EXIT_LIQUIDATION:
                _fill(S, st, trades, fills, l, -q, p, p, lp[l, LP_LIQ_FEE], i, reason, record)
                st[ST_LIQUIDATIONS] += 1
            else:
                frac = _impact(lp, l, -1.0 if long else 1.0, abs(q), p, col, sigma, vol, book_off, book_sz)
                p_exec = p * (1.0 - frac) if long else p * (1.0 + frac)
                _fill(S, st, trades, fills, l, -q, p_exec, p, lp[l, LP_FEE], i, reason, record)
                if reason == EXIT_STOP:
                    st[ST_STOPS] += 1
                else:
                    st[ST_AUTOCLOSES] += 1
            S[l, S_TRAIL] = np.nan
            dirty = True

        if L == 1:
            dirty = False
        # 3. funding at the close, 4. mark to market
        exposed = False
        traded = False
        for l in range(L):
            c = close[l, col]
            q = S[l, S_Q]
            S[l, S_MARK] = c
            if q != 0.0:
                exposed = True
                rate = funding[l, col]
                if rate != 0.0 and lp[l, LP_PERP] != 0.0:
                    paid = q * c * rate
                    st[ST_CASH] -= paid
                    st[ST_FUNDING] += paid
                    S[l, S_FUNDING] += paid
                    S[l, S_FUND_STEP] = paid
                    S[l, S_TRIP_CASH] -= paid
                    dirty = True
        equity = _account_equity(S, st[ST_CASH])

        # 5. kill switch (also when the account is wiped out)
        peak_now = peak if peak > equity else equity
        if not halted and ((max_dd > 0.0 and equity <= peak_now * (1.0 - max_dd)) or equity <= 0.0):
            for l in range(L):
                if S[l, S_Q] != 0.0:
                    _trade_to(S, st, trades, fills, lp, l, 0.0, close[l, col], i, col, EXIT_KILL, record, sigma, vol, stop_sigma, book_off, book_sz, 0.0)
            halted = True
            st[ST_KILLED] = 1.0
            dirty = True
            traded = True

        # 6. the strategy's decision at this close
        if not halted:
            for l in range(L if decides else 0):
                t = target[l, col]
                if np.isnan(t) or t == S[l, S_LAST_TARGET]:
                    continue
                S[l, S_LAST_TARGET] = t
                if next_open:
                    if S[l, S_PENDING_BAR] < 0.0:
                        pending += 1
                    S[l, S_PENDING] = t
                    S[l, S_PENDING_BAR] = i + 1 + lat_bars
                else:
                    q = _order_size(S, st, lp, AS, l, t, close[l, col], col, sigma, vol, book_off, book_sz)
                    _trade_to(S, st, trades, fills, lp, l, q, close[l, col], i, col, EXIT_SIGNAL, record, sigma, vol, stop_sigma, book_off, book_sz, stop_mult)
                    dirty = True
                    traded = True
            # trailing stops follow the close
            if stop_mult > 0.0:
                for l in range(L):
                    q = S[l, S_Q]
                    s = stop_sigma[l, col]
                    if q == 0.0 or not s > 0.0:
                        continue
                    c = close[l, col]
                    if q > 0.0:
                        level = c * (1.0 - stop_mult * s)
                        if np.isnan(S[l, S_TRAIL]) or level > S[l, S_TRAIL]:
                            S[l, S_TRAIL] = level
                    else:
                        level = c * (1.0 + stop_mult * s)
                        if np.isnan(S[l, S_TRAIL]) or level < S[l, S_TRAIL]:
                            S[l, S_TRAIL] = level

        # the bar's result, costs of this close's trades included
        if traded:
            equity = _account_equity(S, st[ST_CASH])
        if prev_equity > 0.0:
            r = equity / prev_equity - 1.0
            sum_r += r
            sum_r2 += r * r
            if r < 0.0:
                sum_down2 += r * r
            n_r += 1.0
        prev_equity = equity
        if equity > peak:
            peak = equity
        dd = 1.0 - equity / peak
        if dd > max_dd_seen:
            max_dd_seen = dd
        if exposed:
            exposed_bars += 1.0
        sum_equity += equity
        if keep_equity:
            equity_out[col] = equity
        all_flat = True
        for l in range(L):
            if S[l, S_Q] != 0.0:
                all_flat = False

    st[ST_KILLED] = 1.0 if halted else 0.0
    st[ST_PENDING] = pending
    st[ST_DIRTY] = 1.0 if dirty else 0.0
    st[ST_ALL_FLAT] = 1.0 if all_flat else 0.0
    st[ST_EQUITY] = prev_equity
    st[ST_PEAK] = peak
    st[ST_MAX_DD] = max_dd_seen
    st[ST_SUM_R] = sum_r
    st[ST_SUM_R2] = sum_r2
    st[ST_SUM_DOWN2] = sum_down2
    st[ST_N_R] = n_r
    st[ST_EXPOSED_BARS] = exposed_bars
    st[ST_SUM_EQUITY] = sum_equity
    st[ST_BARS] = i0 + n
    return prev_equity


@njit(cache=True, error_model="numpy")
def finish(S, st, trades, last_close, i, record):
    """End of the run after bar ``i``: positions still open are recorded as open trades,
    marked at ``last_close`` (legs,)."""
    for l in range(S.shape[0]):
        if S[l, S_Q] != 0.0:
            _close_trip(S, st, trades, l, i, EXIT_OPEN, record, S[l, S_Q] * last_close[l])


@njit(cache=True, error_model="numpy")
def simulate(open_, high, low, close, sigma, vol, stop_sigma, funding, book_off, book_sz, target, lp, AS, record):
    """Run the account over all bars: ``new_account``, ``step`` over every column,
    ``finish``. Arrays are (legs, bars): ``sigma``/``vol`` feed the square-root impact,
    ``stop_sigma`` the trailing stop (per-bar return volatility known before the bar opens);
    ``funding`` is the rate settled at each bar's close; ``book_*`` are (legs, bars, 2 sides,
    levels) price offsets (fractions of the reference price) and sizes, or empty. Returns
    (stats, equity curve, trade list)."""
    L, N = close.shape
    S, st = new_account(L, AS, close[:, 0].copy())
    equity_curve = np.empty(N if record else 0)
    trades = np.zeros((L * N + L if record else 0, N_TR))
    fills = np.zeros((0, N_FL))
    step(0, open_, high, low, close, sigma, vol, stop_sigma, funding, book_off, book_sz, target, lp, AS, S, st, trades, fills, record, equity_curve)
    finish(S, st, trades, close[:, N - 1].copy(), N - 1, record)
    return st, equity_curve, trades[: int(st[ST_N_TRADE_ROWS])]
