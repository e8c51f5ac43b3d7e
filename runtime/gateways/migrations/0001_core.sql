-- Sessions, their members and their ordered event streams.

CREATE TABLE sessions (
    id          text COLLATE "C" PRIMARY KEY,  -- byte order: pages like Python str order
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Highest seq ever assigned: survives trimming so a seq is never reused.
    last_seq    bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX sessions_created_at_idx ON sessions (created_at);
-- Listing live sessions pages by id; keep that index small.
CREATE INDEX sessions_live_id_idx ON sessions (id) WHERE deleted_at IS NULL;

CREATE TABLE session_members (
    session_id  text COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id     text COLLATE "C" NOT NULL,
    role        text NOT NULL,
    joined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, user_id)
);
-- "Which sessions is this user in?"
CREATE INDEX session_members_user_id_idx ON session_members (user_id);

CREATE TABLE session_events (
    session_id  text COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         bigint NOT NULL CHECK (seq > 0),
    name        text NOT NULL,
    data        jsonb NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    ts          timestamptz NOT NULL,
    PRIMARY KEY (session_id, seq)
);
-- Time-based retention (trim older_than) and per-user audits.
CREATE INDEX session_events_session_ts_idx ON session_events (session_id, ts);
CREATE INDEX session_events_user_id_idx ON session_events (user_id);
