-- Context documents, sqlite flavour. Keep in step with ../../postgres/*_user_contexts/up.sql
-- and with core-service/src/storage/schema.rs.
--
-- One JSON document per user (tasks, groups, preferences: any fields), set by internal
-- services or admins and rendered into every prompt of that user's chats.
CREATE TABLE user_contexts (
    user_id    TEXT PRIMARY KEY NOT NULL,
    -- serde_json text of a JSON object, at most 64 KiB.
    document   TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
