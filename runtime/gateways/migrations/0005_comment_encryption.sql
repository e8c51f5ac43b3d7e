-- Encryption at rest for comments (runtime/gateways/comment_sealing.py): with keys
-- configured, a comment's body is an AES-256-GCM envelope in body_enc (body NULL), and
-- a thread's metadata and anchor are sealed together in metadata_enc (metadata and
-- anchor NULL). key_id repeats the envelope's key id so rotation finds old rows by index.
-- metadata_idx holds keyed HMAC digests of the thread's top-level metadata pairs and of
-- its anchor, under key_id's index key, so listing can still filter on them.
-- Rows written without keys keep plaintext (body, metadata, anchor) and NULL here.

ALTER TABLE comments ALTER COLUMN body DROP NOT NULL;
ALTER TABLE comments ADD COLUMN body_enc bytea;
ALTER TABLE comments ADD COLUMN key_id text;
ALTER TABLE comments ADD CONSTRAINT comments_body_or_enc
    CHECK ((body IS NULL) <> (body_enc IS NULL));
ALTER TABLE comments ADD CONSTRAINT comments_enc_has_key
    CHECK ((body_enc IS NULL) = (key_id IS NULL));
CREATE INDEX comments_key_id_idx ON comments (key_id, id) WHERE key_id IS NOT NULL;

ALTER TABLE comment_threads ALTER COLUMN metadata DROP NOT NULL;
ALTER TABLE comment_threads ADD COLUMN metadata_enc bytea;
ALTER TABLE comment_threads ADD COLUMN metadata_idx text[];
ALTER TABLE comment_threads ADD COLUMN key_id text;
ALTER TABLE comment_threads ADD CONSTRAINT comment_threads_metadata_or_enc
    CHECK ((metadata IS NULL) <> (metadata_enc IS NULL));
ALTER TABLE comment_threads ADD CONSTRAINT comment_threads_enc_has_key
    CHECK ((metadata_enc IS NULL) = (key_id IS NULL));
ALTER TABLE comment_threads ADD CONSTRAINT comment_threads_enc_has_index
    CHECK ((metadata_enc IS NULL) = (metadata_idx IS NULL));
-- The anchor is sealed with the metadata, never beside it in clear.
ALTER TABLE comment_threads ADD CONSTRAINT comment_threads_enc_no_plain_anchor
    CHECK (metadata_enc IS NULL OR anchor IS NULL);
CREATE INDEX comment_threads_key_id_idx ON comment_threads (key_id, id)
    WHERE key_id IS NOT NULL;
CREATE INDEX comment_threads_metadata_idx_idx ON comment_threads USING gin (metadata_idx)
    WHERE metadata_idx IS NOT NULL;
