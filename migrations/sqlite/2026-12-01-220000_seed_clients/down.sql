DROP TABLE chat_keys;
ALTER TABLE messages DROP COLUMN ordinal;
