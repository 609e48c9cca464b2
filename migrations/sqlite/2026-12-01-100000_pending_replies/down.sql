DROP TABLE pending_replies;
