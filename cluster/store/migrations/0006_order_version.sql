-- An order's version, raised by every change of it: the journal writes a change from the
-- order as it last knew it only while the stored version is still that one (one statement
-- per event instead of lock, read, update and append), and reads the order again otherwise.
ALTER TABLE orders ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);
