-- 0001: the shared store's first schema.
--
-- Conventions: timestamps are timestamptz (UTC); prices and sizes are float8 in human
-- units, except the whitepaper's two journal tables, which keep its numeric columns.
-- Time-series tables have a primary key that leads with (instrument_id, ts) or ends
-- with ts after a short natural prefix, so that "this instrument between t0 and t1"
-- is one index range scan, and the same natural key makes re-sent rows detectable.
-- Market-data tables (bars, funding_rates, quotes, market_trades, book_snapshots) carry
-- no foreign key to instruments: a per-row referential check made bulk COPY 4x slower,
-- and every writer registers the instrument (upsert) before it writes rows for it.

-- Reference data --------------------------------------------------------------------

CREATE TABLE venues (
    name        text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('perp_dex', 'spot_dex', 'cex')),
    maker_fee   float8 NOT NULL DEFAULT 0,
    taker_fee   float8 NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instruments (
    id            serial PRIMARY KEY,
    venue         text NOT NULL REFERENCES venues (name),
    symbol        text NOT NULL,            -- Botmain's name, same on every venue: SOL-PERP, SOL-USDC
    kind          text NOT NULL CHECK (kind IN ('spot', 'perp')),
    base          text NOT NULL,
    quote         text NOT NULL,
    venue_symbol  text NOT NULL,            -- the venue's own name: SOLUSDT, SOL-PERP, a pool id
    tick_size     float8,
    lot_size      float8,
    min_size      float8,
    contract_size float8 NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (venue, symbol)
);

-- The whitepaper's two tables (section 3.2). Changes from its sketch, and why:
-- * `pair` holds 'venue:SYMBOL', since one symbol trades on several venues;
-- * funding_rate has 12 decimals: hourly Drift rates are ~1e-7 and numeric(18,8)
--   would round them to zero; volume allows 20 integer digits;
-- * timestamps are timestamptz, like every other table.
CREATE TABLE trading_pairs (
    id            serial PRIMARY KEY,
    pair          varchar(50) UNIQUE NOT NULL,
    instrument_id int REFERENCES instruments (id),
    last_price    numeric(18, 8) NOT NULL,
    volume        numeric(28, 8),
    funding_rate  numeric(20, 12),
    updated_at    timestamptz DEFAULT now()
);

CREATE TABLE trade_logs (
    id          bigserial PRIMARY KEY,
    pair        varchar(50) NOT NULL,
    trade_type  varchar(10) NOT NULL CHECK (trade_type IN ('BUY', 'SELL')),
    venue       varchar(20) NOT NULL,
    order_size  numeric(28, 12) NOT NULL,
    price       numeric(28, 12) NOT NULL,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    fill_id     text UNIQUE                  -- the fill this line journals; makes journaling idempotent
);
CREATE INDEX trade_logs_pair_ts ON trade_logs (pair, "timestamp");

-- Market data -----------------------------------------------------------------------

CREATE TABLE bars (
    instrument_id int NOT NULL,
    interval_s    int NOT NULL CHECK (interval_s > 0),
    ts            timestamptz NOT NULL,     -- open time
    open          float8 NOT NULL,
    high          float8 NOT NULL,
    low           float8 NOT NULL,
    close         float8 NOT NULL,
    volume        float8 NOT NULL,          -- base units
    PRIMARY KEY (instrument_id, interval_s, ts)
);

CREATE TABLE funding_rates (
    instrument_id int NOT NULL,
    ts            timestamptz NOT NULL,     -- settlement time
    rate          float8 NOT NULL,          -- fraction of notional per interval; > 0: longs pay
    interval_s    int NOT NULL CHECK (interval_s > 0),
    oracle_price  float8,
    mark_price    float8,
    PRIMARY KEY (instrument_id, ts)
);

CREATE TABLE quotes (
    instrument_id int NOT NULL,
    ts            timestamptz NOT NULL,
    seq           bigint NOT NULL,          -- venue update id, or the feed's own sequence
    bid           float8 NOT NULL,
    bid_size      float8 NOT NULL,
    ask           float8 NOT NULL,
    ask_size      float8 NOT NULL,
    PRIMARY KEY (instrument_id, ts, seq)
);

CREATE TABLE market_trades (
    instrument_id int NOT NULL,
    ts            timestamptz NOT NULL,
    trade_id      text NOT NULL,
    price         float8 NOT NULL,
    size          float8 NOT NULL,
    side          text NOT NULL CHECK (side IN ('buy', 'sell')),   -- the aggressor's side
    PRIMARY KEY (instrument_id, ts, trade_id)
);

CREATE TABLE book_snapshots (
    instrument_id int NOT NULL,
    ts            timestamptz NOT NULL,
    seq           bigint NOT NULL,          -- last venue update id applied
    bid_px        float8[] NOT NULL,        -- best first
    bid_sz        float8[] NOT NULL,
    ask_px        float8[] NOT NULL,
    ask_sz        float8[] NOT NULL,
    PRIMARY KEY (instrument_id, ts, seq)
);

-- Trading ---------------------------------------------------------------------------

CREATE TABLE orders (
    order_id       text PRIMARY KEY,
    strategy       text NOT NULL,
    instrument_id  int NOT NULL REFERENCES instruments (id),
    side           text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type     text NOT NULL CHECK (order_type IN ('market', 'limit')),
    time_in_force  text NOT NULL DEFAULT 'gtc',
    size           float8 NOT NULL CHECK (size > 0),
    limit_price    float8,
    reduce_only    boolean NOT NULL DEFAULT false,
    status         text NOT NULL CHECK (status IN ('new', 'submitted', 'open', 'partially_filled',
                                                   'filled', 'cancelled', 'rejected', 'expired')),
    filled_size    float8 NOT NULL DEFAULT 0,
    avg_fill_price float8 NOT NULL DEFAULT 0,
    fees           float8 NOT NULL DEFAULT 0,
    venue_order_id text,
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_strategy_created ON orders (strategy, created_at);
CREATE INDEX orders_working ON orders (instrument_id)
    WHERE status IN ('new', 'submitted', 'open', 'partially_filled');

CREATE TABLE fills (
    fill_id       text PRIMARY KEY,
    order_id      text NOT NULL REFERENCES orders (order_id),
    instrument_id int NOT NULL REFERENCES instruments (id),
    ts            timestamptz NOT NULL,
    side          text NOT NULL CHECK (side IN ('buy', 'sell')),
    price         float8 NOT NULL,
    size          float8 NOT NULL CHECK (size > 0),
    fee           float8 NOT NULL,
    liquidity     text NOT NULL CHECK (liquidity IN ('maker', 'taker'))
);
CREATE INDEX fills_instrument_ts ON fills (instrument_id, ts);
CREATE INDEX fills_order ON fills (order_id);

CREATE TABLE positions (
    strategy        text NOT NULL,
    instrument_id   int NOT NULL REFERENCES instruments (id),
    size            float8 NOT NULL,        -- signed base units, long > 0
    avg_entry_price float8 NOT NULL,
    realized_pnl    float8 NOT NULL DEFAULT 0,
    fees_paid       float8 NOT NULL DEFAULT 0,
    funding_paid    float8 NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (strategy, instrument_id)
);

CREATE TABLE strategy_signals (
    strategy      text NOT NULL,
    name          text NOT NULL,
    ts            timestamptz NOT NULL,
    instrument_id int REFERENCES instruments (id),
    value         float8,
    payload       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (strategy, name, ts)
);
CREATE INDEX strategy_signals_instrument_ts ON strategy_signals (instrument_id, ts);

-- Other sources ---------------------------------------------------------------------

CREATE TABLE news_items (
    item_id      text PRIMARY KEY,          -- hash of source + guid/link: the dedup key
    source       text NOT NULL,
    published_at timestamptz NOT NULL,
    title        text NOT NULL,
    url          text,
    summary      text,
    instruments  text[] NOT NULL DEFAULT '{}',
    sentiment    float8,
    fetched_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX news_items_published ON news_items (published_at);

CREATE TABLE chain_events (
    kind      text NOT NULL,                -- slot | log | priority_fee
    slot      bigint NOT NULL,
    signature text NOT NULL DEFAULT '',     -- '' for events that are not transactions
    ts        timestamptz NOT NULL,
    program   text,
    payload   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, slot, signature)
);
CREATE INDEX chain_events_ts ON chain_events (ts);

-- Research --------------------------------------------------------------------------

CREATE TABLE backtest_runs (
    run_id       text PRIMARY KEY,
    strategy     text NOT NULL,
    instruments  text[] NOT NULL,
    search_space jsonb NOT NULL DEFAULT '{}',
    settings     jsonb NOT NULL DEFAULT '{}',  -- cost model, data range, sizing
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'finished', 'failed')),
    combos_total int,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    error        text
);

CREATE TABLE backtest_results (
    run_id        text NOT NULL REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    combo_id      bigint NOT NULL,
    params        jsonb NOT NULL,
    total_return  float8,
    cagr          float8,
    sharpe        float8,
    sortino       float8,
    calmar        float8,
    max_drawdown  float8,
    win_rate      float8,
    profit_factor float8,
    exposure      float8,
    turnover      float8,
    fees_paid     float8,
    funding_paid  float8,
    slippage_paid float8,
    trades        int,
    liquidations  int,
    PRIMARY KEY (run_id, combo_id)
);

CREATE TABLE equity_curves (
    run_id   text NOT NULL REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    combo_id bigint NOT NULL,
    ts       timestamptz NOT NULL,
    equity   float8 NOT NULL,
    PRIMARY KEY (run_id, combo_id, ts)
);

CREATE TABLE model_registry (
    version      text PRIMARY KEY,
    name         text NOT NULL,             -- e.g. venue_selector
    created_at   timestamptz NOT NULL DEFAULT now(),
    metrics      jsonb NOT NULL DEFAULT '{}',
    features     jsonb NOT NULL DEFAULT '[]',
    artifact_uri text NOT NULL,
    is_active    boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX model_registry_one_active ON model_registry (name) WHERE is_active;

-- Monitoring ------------------------------------------------------------------------

CREATE TABLE metric_snapshots (
    component text NOT NULL,
    name      text NOT NULL,
    ts        timestamptz NOT NULL,
    labels    jsonb NOT NULL DEFAULT '{}',
    value     float8 NOT NULL,
    PRIMARY KEY (component, name, ts, labels)
);

-- Write ledger: one row per committed COPY batch, written in the same transaction as
-- the batch. A writer that lost its connection mid-commit looks here before re-sending.
CREATE TABLE write_batches (
    batch_id     text PRIMARY KEY,
    table_name   text NOT NULL,
    rows         bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
