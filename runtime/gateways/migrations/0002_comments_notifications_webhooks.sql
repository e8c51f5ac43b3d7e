-- Threaded comments, per-user notification inboxes, webhook endpoints and their outbox.
-- Times are unix seconds (double precision) so they read back exactly as written.

CREATE TABLE comment_threads (
    pos            bigserial UNIQUE,               -- listing order and cursor
    id             text COLLATE "C" PRIMARY KEY,
    session_id     text COLLATE "C" NOT NULL,
    author_id      text COLLATE "C" NOT NULL,
    anchor         jsonb,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    resolved       boolean NOT NULL DEFAULT false,
    resolved_by    text COLLATE "C",
    resolved_at    double precision,
    comment_count  integer NOT NULL DEFAULT 0,     -- positions handed out (row lock serialises)
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL
);
CREATE INDEX comment_threads_session_pos_idx ON comment_threads (session_id, pos);

CREATE TABLE comments (
    id          text COLLATE "C" PRIMARY KEY,
    thread_id   text COLLATE "C" NOT NULL REFERENCES comment_threads (id) ON DELETE CASCADE,
    session_id  text COLLATE "C" NOT NULL,
    parent_id   text COLLATE "C" REFERENCES comments (id),
    depth       integer NOT NULL CHECK (depth >= 0),
    position    integer NOT NULL CHECK (position > 0),
    author_id   text COLLATE "C" NOT NULL,
    body        text NOT NULL,
    mentions    text[] NOT NULL DEFAULT '{}',
    created_at  double precision NOT NULL,
    edited_at   double precision,
    deleted_at  double precision,
    deleted_by  text COLLATE "C",
    UNIQUE (thread_id, position)
);

CREATE TABLE comment_reactions (
    comment_id  text COLLATE "C" NOT NULL REFERENCES comments (id) ON DELETE CASCADE,
    emoji       text NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    created_at  double precision NOT NULL,
    PRIMARY KEY (comment_id, emoji, user_id)
);

CREATE TABLE notifications (
    pos          bigserial UNIQUE,                 -- listing order (newest first) and cursor
    id           text COLLATE "C" PRIMARY KEY,
    user_id      text COLLATE "C" NOT NULL,
    kind         text NOT NULL,
    group_key    text,                             -- activity with one key within the window groups
    session_id   text COLLATE "C",
    thread_id    text COLLATE "C",
    actor_ids    text[] NOT NULL DEFAULT '{}',     -- who caused it, latest last
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    count        integer NOT NULL DEFAULT 1,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL,
    read_at      double precision
);
CREATE INDEX notifications_user_pos_idx ON notifications (user_id, pos);
CREATE INDEX notifications_unread_idx ON notifications (user_id) WHERE read_at IS NULL;
CREATE INDEX notifications_group_idx ON notifications (user_id, group_key, updated_at)
    WHERE read_at IS NULL;

CREATE TABLE webhook_endpoints (
    id              text COLLATE "C" PRIMARY KEY,
    url             text NOT NULL,
    secret          text NOT NULL,
    events          text[] NOT NULL DEFAULT '{}',  -- empty: every event
    created_at      double precision NOT NULL,
    failing_since   double precision,
    last_error      text,
    disabled_at     double precision,
    disabled_reason text
);

-- Undelivered events, one row per (event, endpoint); delivered rows are deleted.
CREATE TABLE webhook_outbox (
    pos              bigserial PRIMARY KEY,         -- delivery order within an ordering key
    event_id         text COLLATE "C" NOT NULL,
    endpoint_id      text COLLATE "C" NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    ordering_key     text COLLATE "C" NOT NULL,     -- "session:<id>" or "user:<id>"
    payload          text NOT NULL,                 -- the exact JSON body signed and sent
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  double precision NOT NULL,
    last_error       text,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_outbox_key_idx ON webhook_outbox (endpoint_id, ordering_key, pos);
