//! Re-encryption on an admin's request (`AdminService.Reencrypt`, `chatctl encryption
//! reencrypt`): after a key rotation (a new key first in `CHAT_ENCRYPTION__KEYS`, the old
//! ones after it), every sealed text column and every stored file not under the current key
//! is rewritten under it, on the live system; then the old keys can be dropped. See
//! [`crate::storage::reencrypt`] and [`crate::files::Files::reencrypt`] for how each part
//! stays safe beside running chats and resumes when run again.

use chat_auth::Principal;

use super::engine::Engine;
use super::error::ChatError;
use super::operator::require_admin;
use crate::storage::{self, ColumnCounts};

/// Rows read per batch when the caller does not say.
pub const DEFAULT_BATCH: i64 = 500;

/// What one re-encryption pass did: the key everything is under now, and per part (each text
/// column, then `files`) how many were looked at, rewritten, and could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reencrypted {
    pub key_id: String,
    pub parts: Vec<ColumnCounts>,
}

impl Engine {
    /// An admin re-encrypts everything under the current key. Fails with `Conflict` when
    /// encryption is off (nothing to re-encrypt to).
    pub async fn reencrypt(&self, who: &Principal, batch: i64) -> Result<Reencrypted, ChatError> {
        require_admin(who)?;
        let Some(key_id) = self.db.keyring().current_id().map(str::to_owned) else {
            return Err(ChatError::Conflict(
                "Encryption at rest is off on this core (CHAT_ENCRYPTION__KEYS is not set)".into(),
            ));
        };
        let batch = if batch > 0 { batch } else { DEFAULT_BATCH };
        tracing::info!(admin = %who.user_id, key = %key_id, "re-encryption started");
        let mut parts = storage::reencrypt_columns(&self.db, batch).await?;
        if let Ok(files) = self.files() {
            let counts = files.reencrypt(&self.db, batch).await?;
            parts.push(ColumnCounts {
                column: "files",
                scanned: counts.scanned,
                rewritten: counts.rewritten,
                failed: counts.failed,
            });
        }
        for part in &parts {
            tracing::info!(
                part = part.column,
                scanned = part.scanned,
                rewritten = part.rewritten,
                failed = part.failed,
                "re-encrypted"
            );
        }
        Ok(Reencrypted { key_id, parts })
    }
}
