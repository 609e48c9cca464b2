-- Operators' data, postgres flavour. Keep in step with ../../sqlite/*_operators/up.sql and with
-- core-service/src/storage/schema.rs.

-- A session's figures, kept current as it runs (one row per chat, created with the chat).
CREATE TABLE session_metrics (
    chat_id            TEXT PRIMARY KEY NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_messages      BIGINT NOT NULL DEFAULT 0,
    assistant_messages BIGINT NOT NULL DEFAULT 0,
    admin_messages     BIGINT NOT NULL DEFAULT 0,
    -- Replies that produced a first token, and the sum and maximum of those times.
    timed_replies      BIGINT NOT NULL DEFAULT 0,
    ttft_total_ms      BIGINT NOT NULL DEFAULT 0,
    ttft_max_ms        BIGINT,
    -- Every reply's total response time: sum and maximum.
    response_total_ms  BIGINT NOT NULL DEFAULT 0,
    response_max_ms    BIGINT,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    -- JSON array of model ids, in order of first use.
    models             TEXT NOT NULL DEFAULT '[]',
    -- End (or, while active, last activity) minus start.
    duration_ms        BIGINT NOT NULL DEFAULT 0
);
INSERT INTO session_metrics (chat_id) SELECT id FROM chats;
CREATE INDEX session_metrics_duration ON session_metrics (duration_ms);

CREATE TABLE help_requests (
    id          TEXT PRIMARY KEY NOT NULL,
    chat_id     TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    reason      TEXT,
    created_at  TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP,
    resolved_by TEXT
);
CREATE INDEX help_requests_queue ON help_requests (resolved_at, created_at);
CREATE INDEX help_requests_chat ON help_requests (chat_id);

-- Who did what to a session, when: takeover, release, lease expiry, help requested/resolved, end.
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY NOT NULL,
    chat_id    TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    action     TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_events_chat ON audit_events (chat_id, created_at);

CREATE INDEX chats_started ON chats (started_at);
CREATE INDEX chats_activity ON chats (last_activity_at);
