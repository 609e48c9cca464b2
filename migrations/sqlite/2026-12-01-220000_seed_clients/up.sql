-- What the seeds' clients need (sqlite flavour). Keep in step with the other flavour and with
-- core-service/src/storage/schema.rs.
--
-- messages.ordinal: each message's 1-based position in its chat, the chat's `message_count`
-- right after it was stored (seed 001's `metadata.messageIndex` and `totalMessages`; `seq`
-- cannot stand in, other durable events share it). Existing rows are numbered in `seq` order.
ALTER TABLE messages ADD COLUMN ordinal BIGINT NOT NULL DEFAULT 0;
UPDATE messages SET ordinal = (
    SELECT COUNT(*) FROM messages AS earlier
    WHERE earlier.chat_id = messages.chat_id AND earlier.seq <= messages.seq
);

-- chat_keys: an owner's own name for a chat (seed 003's `connectionId`, over Socket.IO): one
-- chat per owner and key, created by the key's first message.
CREATE TABLE chat_keys (
    owner_id   TEXT NOT NULL,
    client_key TEXT NOT NULL,
    chat_id    TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    PRIMARY KEY (owner_id, client_key)
);
