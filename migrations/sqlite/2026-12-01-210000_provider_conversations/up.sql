-- Conversation ids of stateful providers (Dify), sqlite flavour. Keep in step with
-- ../../postgres/*_provider_conversations/up.sql and with core-service/src/storage/schema.rs.
--
-- A Dify app keeps a chat's conversation itself and names it with an id; the chat's next
-- request to the same provider sends that id instead of the history.
CREATE TABLE provider_conversations (
    chat_id         TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    -- The provider's name in [llm.providers].
    provider        TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (chat_id, provider)
);
