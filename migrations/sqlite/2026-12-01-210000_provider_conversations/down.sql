DROP TABLE provider_conversations;
