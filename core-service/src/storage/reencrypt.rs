//! Re-encryption of the sealed text columns ([`super::sealed`]) under the keyring's current
//! key: every value that is plaintext or sealed under an older key is opened and sealed
//! again. For a live system: rows are read in pages by primary key and each is rewritten
//! with a compare-and-set on its old stored value, so a row that changed meanwhile (already
//! under the current key, since every write uses it) is left as it is. Running it again is
//! safe and resumes where it stopped: rows under the current key are skipped.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{chat_events, chats, help_requests, messages, pending_replies, user_contexts};
use super::{Db, Result, sealed};

/// What one column's pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnCounts {
    /// The column (`messages.content`).
    pub column: &'static str,
    /// Rows looked at.
    pub scanned: u64,
    /// Rows rewritten under the current key.
    pub rewritten: u64,
    /// Rows that could not be opened (a key missing from the keyring, a row that does not
    /// authenticate); left as they are.
    pub failed: u64,
}

/// Rewrites one column, page by page. `$id` is the primary key, `$col` the sealed column;
/// `$value` selects it as `Text` (a nullable column: non-null rows, assumed not null).
macro_rules! reencrypt_column {
    ($db:expr, $batch:expr, $name:expr, $table:ident, $id:ident, $col:ident, $value:expr, $only:expr) => {{
        let db: &Db = $db;
        let keyring = db.keyring().clone();
        let mut counts = ColumnCounts {
            column: $name,
            ..ColumnCounts::default()
        };
        let mut after = String::new();
        loop {
            let after_ref = after.as_str();
            let rows: Vec<(String, String)> = with_conn!(db, |conn| {
                $table::table
                    .filter($table::$id.gt(after_ref))
                    .filter($only)
                    .order($table::$id.asc())
                    .limit($batch)
                    .select(($table::$id, $value))
                    .load(conn)
                    .await?
            });
            let Some((last, _)) = rows.last() else { break };
            after = last.clone();
            for (id, stored) in rows {
                counts.scanned += 1;
                if !keyring.text_is_stale(&stored) {
                    continue;
                }
                let fresh = match db
                    .open($name, &id, &stored)
                    .and_then(|plain| db.seal($name, &id, &plain))
                {
                    Ok(fresh) => fresh,
                    Err(err) => {
                        tracing::warn!(column = $name, row = %id, error = %err, "cannot re-encrypt a row");
                        counts.failed += 1;
                        continue;
                    }
                };
                let (id, stored, fresh) = (id.as_str(), stored.as_str(), fresh.as_str());
                let updated = with_write!(db, |conn| {
                    diesel::update(
                        $table::table
                            .filter($table::$id.eq(id))
                            .filter($table::$col.eq(stored)),
                    )
                    .set($table::$col.eq(fresh))
                    .execute(conn)
                    .await?
                });
                counts.rewritten += updated as u64;
            }
        }
        Ok::<ColumnCounts, super::StorageError>(counts)
    }};
}

/// Rewrites every sealed text column under the current key, `batch` rows per read. A no-op
/// when encryption is off. Fails only when the database does; rows that cannot be opened
/// are counted in [`ColumnCounts::failed`] and logged by id.
/// It reads every sealed row, so it runs off the runtime ([`Db::off_runtime`]).
pub async fn reencrypt_columns(db: &Db, batch: i64) -> Result<Vec<ColumnCounts>> {
    let here = db.clone();
    db.off_runtime(async move { reencrypt_here(&here, batch).await })
        .await
}

/// [`reencrypt_columns`] on the calling thread.
async fn reencrypt_here(db: &Db, batch: i64) -> Result<Vec<ColumnCounts>> {
    if !db.keyring().is_on() {
        return Ok(Vec::new());
    }
    let batch = batch.clamp(1, 10_000);
    Ok(vec![
        reencrypt_column!(
            db,
            batch,
            sealed::MESSAGE_CONTENT,
            messages,
            id,
            content,
            messages::content,
            messages::id.ne("")
        )?,
        reencrypt_column!(
            db,
            batch,
            sealed::PENDING_PARTIAL,
            pending_replies,
            trigger_id,
            partial,
            pending_replies::partial,
            pending_replies::trigger_id.ne("")
        )?,
        reencrypt_column!(
            db,
            batch,
            sealed::CONTEXT_DOCUMENT,
            user_contexts,
            user_id,
            document,
            user_contexts::document,
            user_contexts::user_id.ne("")
        )?,
        reencrypt_column!(
            db,
            batch,
            sealed::HELP_REASON,
            help_requests,
            id,
            reason,
            help_requests::reason.assume_not_null(),
            help_requests::reason.is_not_null()
        )?,
        reencrypt_column!(
            db,
            batch,
            sealed::CHAT_TITLE,
            chats,
            id,
            title,
            chats::title,
            chats::id.ne("")
        )?,
        reencrypt_events(db, batch).await?,
    ])
}

/// [`reencrypt_columns`] for `chat_events.payload`, whose key is `(chat_id, seq)`.
async fn reencrypt_events(db: &Db, batch: i64) -> Result<ColumnCounts> {
    let keyring = db.keyring().clone();
    let mut counts = ColumnCounts {
        column: sealed::EVENT_PAYLOAD,
        ..ColumnCounts::default()
    };
    let (mut after_chat, mut after_seq) = (String::new(), i64::MAX);
    loop {
        let (chat, seq) = (after_chat.as_str(), after_seq);
        let rows: Vec<(String, i64, Vec<u8>)> = with_conn!(db, |conn| {
            chat_events::table
                .filter(
                    chat_events::chat_id
                        .gt(chat)
                        .or(chat_events::chat_id.eq(chat).and(chat_events::seq.gt(seq))),
                )
                .order((chat_events::chat_id.asc(), chat_events::seq.asc()))
                .limit(batch)
                .select((chat_events::chat_id, chat_events::seq, chat_events::payload))
                .load(conn)
                .await?
        });
        let Some((last_chat, last_seq, _)) = rows.last() else {
            break;
        };
        (after_chat, after_seq) = (last_chat.clone(), *last_seq);
        for (chat_id, seq, stored) in rows {
            counts.scanned += 1;
            if !keyring.bytes_are_stale(&stored) {
                continue;
            }
            let aad = Db::event_aad(&chat_id, seq);
            let fresh = match keyring
                .open_bytes(&aad, &stored)
                .and_then(|plain| keyring.seal_bytes(&aad, &plain))
            {
                Ok(fresh) => fresh,
                Err(err) => {
                    tracing::warn!(column = sealed::EVENT_PAYLOAD, chat = %chat_id, seq, error = %err, "cannot re-encrypt a row");
                    counts.failed += 1;
                    continue;
                }
            };
            let (chat_id, stored, fresh) = (chat_id.as_str(), stored.as_slice(), fresh.as_slice());
            let updated = with_write!(db, |conn| {
                diesel::update(
                    chat_events::table
                        .filter(chat_events::chat_id.eq(chat_id))
                        .filter(chat_events::seq.eq(seq))
                        .filter(chat_events::payload.eq(stored)),
                )
                .set(chat_events::payload.eq(fresh))
                .execute(conn)
                .await?
            });
            counts.rewritten += updated as u64;
        }
    }
    Ok(counts)
}
