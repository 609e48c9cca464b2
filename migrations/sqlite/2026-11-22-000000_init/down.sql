DROP TABLE token_usage;
DROP TABLE read_receipts;
DROP TABLE chat_events;
DROP TABLE messages;
DROP TABLE chat_members;
DROP TABLE chats;
DROP TABLE users;
