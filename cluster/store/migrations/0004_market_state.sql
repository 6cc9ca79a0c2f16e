-- What the MDS sees of market state beyond quotes, trades, books and funding: perp marks,
-- aggregator swap quotes and AMM pool states (before 0004 they reached subscribers only).

CREATE TABLE mark_prices (
    instrument_id int NOT NULL,
    ts            timestamptz NOT NULL,
    mark          float8 NOT NULL,
    oracle        float8,
    PRIMARY KEY (instrument_id, ts)
);

CREATE TABLE swap_quotes (
    instrument_id int NOT NULL,
    ts            timestamptz NOT NULL,
    side          text NOT NULL CHECK (side IN ('buy', 'sell')),
    size          float8 NOT NULL,          -- base units quoted
    price         float8 NOT NULL,          -- quote per base, all fees included
    price_impact  float8 NOT NULL,          -- fraction
    route         text NOT NULL DEFAULT '',
    PRIMARY KEY (instrument_id, ts, side, size)
);

CREATE TABLE pool_states (
    instrument_id int NOT NULL,
    ts            timestamptz NOT NULL,
    pool_id       text NOT NULL,
    price         float8 NOT NULL,
    base_reserve  float8 NOT NULL,
    quote_reserve float8 NOT NULL,
    fee_rate      float8 NOT NULL,
    tvl_usd       float8,
    PRIMARY KEY (instrument_id, ts, pool_id)
);
