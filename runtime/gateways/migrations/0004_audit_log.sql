-- Tamper-evident audit log: an append-only hash chain (runtime/security/audit.py).
-- Each record's hash covers its fields and the previous record's hash; audit_head
-- holds the newest seq and hash, updated in the same transaction as each append,
-- so removing the newest records is detectable too. Appends lock the head row,
-- which serialises writers: the chain cannot fork.

CREATE TABLE audit_log (
    seq        bigint PRIMARY KEY CHECK (seq > 0),
    ts         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    details    jsonb NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL
);
CREATE INDEX audit_log_action_idx ON audit_log (action, seq);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq);
CREATE INDEX audit_log_ts_idx ON audit_log (ts);

CREATE TABLE audit_head (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),  -- exactly one row
    seq   bigint NOT NULL CHECK (seq >= 0),
    hash  text NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Defence in depth: the application never changes or removes a record. (The
-- table owner can still disable this; the hash chain and head catch that.)
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
