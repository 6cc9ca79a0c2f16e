-- Sweep results: the risk-rule counters per run, and the trade list of the best runs.

ALTER TABLE backtest_results
    ADD COLUMN stops        int,
    ADD COLUMN autocloses   int,
    ADD COLUMN killed       boolean,
    ADD COLUMN final_equity float8;

ALTER TABLE backtest_runs
    ADD COLUMN job_id     text,
    ADD COLUMN updated_at timestamptz;

CREATE TABLE backtest_trades (
    run_id            text NOT NULL REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    combo_id          bigint NOT NULL,
    trade_no          int NOT NULL,
    instrument        text NOT NULL,       -- venue:SYMBOL
    side              text NOT NULL CHECK (side IN ('long', 'short')),
    entry_ts          timestamptz NOT NULL,
    exit_ts           timestamptz NOT NULL,
    entry_price       float8 NOT NULL,
    exit_price        float8,              -- NULL while the trade is still open
    size              float8 NOT NULL,
    pnl               float8 NOT NULL,
    fees              float8 NOT NULL,
    funding           float8 NOT NULL,
    exit_reason       text NOT NULL,
    liquidation_price float8,
    PRIMARY KEY (run_id, combo_id, trade_no)
);
