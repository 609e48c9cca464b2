-- Replies owed, sqlite flavour. Keep in step with ../../postgres/*_pending_replies/up.sql and
-- with core-service/src/storage/schema.rs.
--
-- A row exists from the moment a user message that needs a reply is stored (same
-- transaction) until its reply is stored (same transaction), and holds the reply's id and text
-- so far while it streams. A row found when the core starts is a reply a crash or a shutdown
-- interrupted: one that had started is stored as failed with its partial text, one that had
-- not is generated then (docs/architecture.md, "What survives a restart").
CREATE TABLE pending_replies (
    trigger_id   TEXT PRIMARY KEY NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    chat_id      TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    requester_id TEXT NOT NULL,
    -- The id the reply's chunks carry, once it has started.
    reply_id     TEXT,
    model        TEXT,
    partial      TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);
CREATE INDEX pending_replies_chat ON pending_replies (chat_id);
