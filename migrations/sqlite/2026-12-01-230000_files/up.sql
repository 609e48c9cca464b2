-- Uploaded files (sqlite flavour). Keep in step with the other flavour and with
-- core-service/src/storage/schema.rs.
--
-- The bytes live in the configured object store under the file's id; this is the record:
-- who uploaded it (only they may attach it), its sanitised name, the type read from its
-- content, and its size.
CREATE TABLE files (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL,
    name       TEXT NOT NULL,
    mime       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX files_owner ON files (owner_id);
