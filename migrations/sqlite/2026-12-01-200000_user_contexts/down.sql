DROP TABLE user_contexts;
