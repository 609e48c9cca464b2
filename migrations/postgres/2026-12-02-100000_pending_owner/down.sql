DROP INDEX pending_replies_owner;
ALTER TABLE pending_replies DROP COLUMN chunks;
ALTER TABLE pending_replies DROP COLUMN owner;
