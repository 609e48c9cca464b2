-- Which core owes each reply (postgres flavour). Keep in step with ../../sqlite/*_pending_owner
-- and with core-service/src/storage/schema.rs.
--
-- owner: the id of the core process that streams (or will stream) the reply; '' for rows
-- written by a core outside a cluster. With several cores, a core whose heartbeat in Redis
-- has gone is dead, and another one claims its rows (UPDATE ... WHERE owner = <dead>) and
-- continues each reply (docs/scale-out.md, "A reply outlives its core").
-- chunks: how many chunks the reply had streamed at its last checkpoint, so a continuation
-- numbers its chunks after the ones clients were sent.
ALTER TABLE pending_replies ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE pending_replies ADD COLUMN chunks BIGINT NOT NULL DEFAULT 0;
CREATE INDEX pending_replies_owner ON pending_replies (owner);
