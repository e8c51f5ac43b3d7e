-- Encryption at rest: a sensitive event's payload is stored as an AES-256-GCM
-- envelope (runtime/gateways/encryption.py) in data_enc, with data NULL.
-- key_id repeats the envelope's key id so rotation finds old rows by index.

ALTER TABLE session_events ALTER COLUMN data DROP NOT NULL;
ALTER TABLE session_events ADD COLUMN data_enc bytea;
ALTER TABLE session_events ADD COLUMN key_id text;
ALTER TABLE session_events ADD CONSTRAINT session_events_data_or_enc
    CHECK ((data IS NULL) <> (data_enc IS NULL));
ALTER TABLE session_events ADD CONSTRAINT session_events_enc_has_key
    CHECK ((data_enc IS NULL) = (key_id IS NULL));
-- Rotation: "rows not under the current key" without scanning plaintext rows.
CREATE INDEX session_events_key_id_idx ON session_events (key_id, session_id, seq)
    WHERE key_id IS NOT NULL;
