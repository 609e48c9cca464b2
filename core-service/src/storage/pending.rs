//! The `pending_replies` table: replies owed. A row is written with the user message that
//! needs a reply and removed with that reply, each in the same transaction as the message
//! (see [`super::messages::ReplyLink`]), so no crash can leave an acknowledged message without
//! either its reply or a row saying it is owed. While a reply streams its row is checkpointed
//! with the reply's id and text so far; what a restart finds is recovered by
//! `Engine::recover_replies`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::PendingReplyRow;
use super::schema::pending_replies;
use super::{Db, Result};

/// The reply to `trigger_id` has started (`reply_id` is the id its chunks carry, on `model`)
/// and has streamed `partial` so far. A no-op once the reply is stored.
pub async fn checkpoint_reply(
    db: &Db,
    trigger_id: &str,
    reply_id: &str,
    model: &str,
    partial: &str,
    now: NaiveDateTime,
) -> Result<()> {
    let partial = db.seal(super::sealed::PENDING_PARTIAL, trigger_id, partial)?;
    let partial = partial.as_str();
    with_conn!(db, |conn| {
        diesel::update(pending_replies::table.find(trigger_id))
            .set((
                pending_replies::reply_id.eq(reply_id),
                pending_replies::model.eq(model),
                pending_replies::partial.eq(partial),
                pending_replies::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// No reply is owed to `trigger_id` after all (an operator took the chat over before it
/// started).
pub async fn forget_pending_reply(db: &Db, trigger_id: &str) -> Result<()> {
    with_conn!(db, |conn| {
        diesel::delete(pending_replies::table.find(trigger_id))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Every reply owed, oldest first.
pub async fn pending_replies(db: &Db) -> Result<Vec<PendingReplyRow>> {
    let rows: Vec<PendingReplyRow> = with_conn!(db, |conn| {
        pending_replies::table
            .order((
                pending_replies::created_at.asc(),
                pending_replies::trigger_id.asc(),
            ))
            .select(PendingReplyRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter()
        .map(|mut row| {
            row.partial = db.open(
                super::sealed::PENDING_PARTIAL,
                &row.trigger_id,
                &row.partial,
            )?;
            Ok(row)
        })
        .collect()
}
