-- Per-chat settings and the files each chat holds (sqlite flavour). Keep in step with the
-- other flavour and with core-service/src/storage/schema.rs.
--
-- chat_settings: what a chat asked for beyond its own columns (spoken replies); a chat
-- without a row has the defaults.
-- chat_files: which chats attach which files, written with the message that attaches them,
-- so deleting a chat (retention, an admin) finds the files only it held.
CREATE TABLE chat_settings (
    chat_id        TEXT PRIMARY KEY NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    spoken_replies BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE chat_files (
    chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    PRIMARY KEY (chat_id, file_id)
);
CREATE INDEX chat_files_file ON chat_files (file_id);
-- Attachments stored before this table existed.
INSERT OR IGNORE INTO chat_files (chat_id, file_id)
SELECT DISTINCT m.chat_id, json_extract(a.value, '$.id')
FROM messages m, json_each(m.attachments) a
WHERE m.attachments <> '[]'
  AND json_extract(a.value, '$.id') IN (SELECT id FROM files);
