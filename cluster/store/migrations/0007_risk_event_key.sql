-- A risk event's natural key, when its writer has one (a monitor's event on a bar: the run,
-- the strategy, the bar's close and the event's place in the bar): a decision journaled
-- again after a restart is then a no-op instead of a second line.
ALTER TABLE risk_events ADD COLUMN event_key text;
CREATE UNIQUE INDEX risk_events_key ON risk_events (run_id, event_key) WHERE event_key IS NOT NULL;
