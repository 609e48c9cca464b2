DROP INDEX chats_activity;
DROP INDEX chats_started;
DROP TABLE audit_events;
DROP TABLE help_requests;
DROP TABLE session_metrics;
