-- 0005: the trading journal (cluster/store/journal.py writes it; cluster/orders.py is the
-- order lifecycle it enforces).
--
-- 0001's orders, fills and positions were never written: they keyed orders by an
-- instrument id and fills by one fill id across venues, and had no run. They are replaced.
-- trade_logs (the whitepaper's table) stays, one line per new fill.
--
-- Everything belongs to a trading run (paper or live). Instruments are 'venue:SYMBOL'
-- text, as in the domain model, not instrument ids: an order may be journaled for a
-- market the reference tables have not seen. Prices and sizes float8, times timestamptz
-- (microseconds: the journal rounds event times of nanoseconds to them).

DROP TABLE fills;
DROP TABLE positions;
DROP TABLE orders;

CREATE TABLE trading_runs (
    run_id     text PRIMARY KEY,
    mode       text NOT NULL CHECK (mode IN ('paper', 'live')),
    strategy   text NOT NULL,
    status     text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished', 'failed', 'stopped')),
    config     jsonb NOT NULL DEFAULT '{}',
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    CHECK ((status = 'running') = (ended_at IS NULL))
);

CREATE TABLE orders (
    client_order_id text PRIMARY KEY CHECK (client_order_id ~ '^[A-Za-z0-9-]{1,32}$'),
    run_id          text NOT NULL REFERENCES trading_runs (run_id),
    strategy        text NOT NULL,
    venue           varchar(20) NOT NULL,       -- trade_logs.venue's width: every fill must fit there
    instrument      varchar(50) NOT NULL CHECK (split_part(instrument, ':', 1) = venue),
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type      text NOT NULL CHECK (order_type IN ('market', 'limit')),
    time_in_force   text NOT NULL CHECK (time_in_force IN ('gtc', 'ioc', 'post_only')),
    quantity        float8 CHECK (quantity > 0), -- NULL: a target order the venue has not sized yet
    limit_price     float8 CHECK (limit_price > 0),
    reduce_only     boolean NOT NULL,
    target          float8,                      -- a target order's exposure
    decision_ts     timestamptz NOT NULL,
    route           text NOT NULL CHECK (route IN ('fixed', 'selector', 'rule_fallback')),
    state           text NOT NULL CHECK (state IN ('initialized', 'denied', 'submitted', 'accepted',
                                                   'rejected', 'canceled', 'expired', 'pending_update',
                                                   'pending_cancel', 'partially_filled', 'filled')),
    filled_qty      float8 NOT NULL DEFAULT 0 CHECK (filled_qty >= 0),
    avg_px          float8 NOT NULL DEFAULT 0,
    fees            float8 NOT NULL DEFAULT 0,
    venue_order_id  text,
    reason          text,
    accepted_at     timestamptz,                 -- the venue's ack, or its first fill
    unknown_since   timestamptz,                 -- a request's outcome unknown since (timeout, 5xx)
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (quantity IS NOT NULL OR target IS NOT NULL),
    CHECK ((order_type = 'limit') = (limit_price IS NOT NULL)),
    CHECK (quantity IS NULL OR filled_qty <= quantity * (1 + 1e-9))
);
CREATE INDEX orders_run_state ON orders (run_id, state);
CREATE INDEX orders_open ON orders (run_id)
    WHERE state NOT IN ('denied', 'rejected', 'canceled', 'expired', 'filled');
CREATE INDEX orders_venue_order_id ON orders (venue, venue_order_id) WHERE venue_order_id IS NOT NULL;

-- Append-only: every change of an order, in the order the journal applied them.
CREATE TABLE order_events (
    seq             bigserial PRIMARY KEY,
    client_order_id text NOT NULL REFERENCES orders (client_order_id),
    event           text NOT NULL,
    from_state      text,                        -- NULL for the order's creation
    to_state        text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}', -- the event's fields
    ts              timestamptz NOT NULL,        -- when it happened (the venue's time for its reports)
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order ON order_events (client_order_id, seq);

CREATE FUNCTION order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER order_events_append_only BEFORE UPDATE OR DELETE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_append_only();

CREATE TABLE fills (
    venue           varchar(20) NOT NULL,
    venue_fill_id   text NOT NULL,
    client_order_id text NOT NULL REFERENCES orders (client_order_id),
    event_seq       bigint NOT NULL UNIQUE REFERENCES order_events (seq),  -- its journal line; orders fills
    run_id          text NOT NULL REFERENCES trading_runs (run_id),
    strategy        text NOT NULL,
    instrument      varchar(50) NOT NULL,
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    qty             float8 NOT NULL CHECK (qty > 0),
    price           float8 NOT NULL CHECK (price > 0),
    fee             float8 NOT NULL,             -- quote units; negative is a rebate
    liquidity       text NOT NULL CHECK (liquidity IN ('maker', 'taker')),
    reason          text NOT NULL CHECK (reason IN ('signal', 'stop', 'auto_close', 'liquidation', 'kill_switch')),
    leaves_qty      float8,
    ts              timestamptz NOT NULL,
    PRIMARY KEY (venue, venue_fill_id)
);
CREATE INDEX fills_run ON fills (run_id, event_seq);
CREATE INDEX fills_order ON fills (client_order_id);

-- Average-cost accounting over the fills in journal order (cluster.domain.Position).
CREATE TABLE positions (
    run_id          text NOT NULL REFERENCES trading_runs (run_id),
    strategy        text NOT NULL,
    instrument      text NOT NULL,
    venue           text NOT NULL,
    size            float8 NOT NULL DEFAULT 0,   -- signed base units, long > 0
    avg_entry_price float8 NOT NULL DEFAULT 0,
    realized_pnl    float8 NOT NULL DEFAULT 0,   -- fees and funding apart
    fees_paid       float8 NOT NULL DEFAULT 0,
    funding_paid    float8 NOT NULL DEFAULT 0,   -- positive = paid out
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, strategy, instrument, venue)
);

CREATE TABLE funding_payments (
    run_id     text NOT NULL REFERENCES trading_runs (run_id),
    strategy   text NOT NULL,
    instrument text NOT NULL,
    venue      text NOT NULL,
    ts         timestamptz NOT NULL,             -- the settlement
    amount     float8 NOT NULL,                  -- quote units; positive = paid out
    PRIMARY KEY (run_id, strategy, instrument, venue, ts)
);

CREATE TABLE risk_events (
    id       bigserial PRIMARY KEY,
    ts       timestamptz NOT NULL,
    run_id   text REFERENCES trading_runs (run_id),  -- NULL: a decision over every run
    strategy text,
    kind     text NOT NULL CHECK (kind ~ '^[a-z][a-z_]*$'),  -- accept, reject, auto_close, state_change, cancel_all, ...
    rule     text,
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX risk_events_run_ts ON risk_events (run_id, ts);

CREATE TABLE equity_snapshots (
    run_id   text NOT NULL REFERENCES trading_runs (run_id),
    strategy text NOT NULL,
    ts       timestamptz NOT NULL,
    equity   float8 NOT NULL,
    cash     float8 NOT NULL,
    PRIMARY KEY (run_id, strategy, ts)
);
