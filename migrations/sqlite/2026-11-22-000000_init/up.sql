-- Initial schema, SQLite flavour. Keep in step with ../../postgres/*_init/up.sql and with
-- core-service/src/storage/schema.rs: the same tables and columns on both backends.
-- Ids are TEXT (UUID v7 text or JWT subjects); JSON columns are TEXT holding serde_json text.

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    display_name   TEXT NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    last_active_at TIMESTAMP NOT NULL,
    online         BOOLEAN NOT NULL DEFAULT 0
);

CREATE TABLE chats (
    id                   TEXT PRIMARY KEY NOT NULL,
    owner_id             TEXT NOT NULL,
    title                TEXT NOT NULL,
    agent_id             TEXT NOT NULL,
    model                TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'active',
    started_at           TIMESTAMP NOT NULL,
    ended_at             TIMESTAMP,
    last_activity_at     TIMESTAMP NOT NULL,
    needs_help           BOOLEAN NOT NULL DEFAULT 0,
    admin_assisted       BOOLEAN NOT NULL DEFAULT 0,
    operator_id          TEXT,
    operator_name        TEXT,
    operator_lease_until TIMESTAMP,
    -- The per-chat sequence shared by messages and chat_events; the next one to hand out.
    next_seq             BIGINT NOT NULL DEFAULT 1,
    message_count        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX chats_owner_activity ON chats (owner_id, last_activity_at);

CREATE TABLE chat_members (
    chat_id   TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    role      TEXT NOT NULL,
    joined_at TIMESTAMP NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id);

CREATE TABLE messages (
    id                TEXT PRIMARY KEY NOT NULL,
    chat_id           TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq               BIGINT NOT NULL,
    sender_id         TEXT NOT NULL,
    role              TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    content           TEXT NOT NULL,
    status            TEXT NOT NULL,
    client_message_id TEXT,
    attachments       TEXT NOT NULL DEFAULT '[]',
    metadata          TEXT NOT NULL DEFAULT '{}',
    created_at        TIMESTAMP NOT NULL,
    UNIQUE (chat_id, seq),
    -- NULLs are distinct, so messages without a client id never collide.
    UNIQUE (sender_id, client_message_id)
);

CREATE TABLE chat_events (
    chat_id    TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (chat_id, seq)
);

CREATE TABLE read_receipts (
    chat_id    TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    read_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX read_receipts_chat ON read_receipts (chat_id);

CREATE TABLE token_usage (
    message_id        TEXT PRIMARY KEY NOT NULL,
    chat_id           TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id           TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    estimated         BOOLEAN NOT NULL,
    ttft_ms           BIGINT,
    total_ms          BIGINT NOT NULL,
    created_at        TIMESTAMP NOT NULL
);
CREATE INDEX token_usage_created ON token_usage (created_at);
CREATE INDEX token_usage_chat ON token_usage (chat_id);
