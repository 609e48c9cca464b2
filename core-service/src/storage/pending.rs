//! The `pending_replies` table: replies owed. A row is written with the user message that
//! needs a reply and removed with that reply, each in the same transaction as the message
//! (see [`super::messages::ReplyLink`]), so no crash can leave an acknowledged message without
//! either its reply or a row saying it is owed. While a reply streams its row is checkpointed
//! with the reply's id and text so far; what a restart finds is recovered by
//! `Engine::recover_replies`. Each row names the core that owes it (`owner`): with several
//! cores, the rows of a core that died are claimed by another (`chat/failover.rs`), and a
//! core that finds its row claimed stops writing it.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::PendingReplyRow;
use super::prepared::CheckpointReply;
use super::schema::{messages, pending_replies};
use super::{Db, Result};

/// The reply to `trigger_id` has started (`reply_id` is the id its chunks carry, on `model`)
/// and has streamed `partial` so far, in `chunks` chunks. Written only while this core
/// (`Db::owner`) owns the row.
pub async fn checkpoint_reply(
    db: &Db,
    trigger_id: &str,
    reply_id: &str,
    model: &str,
    partial: &str,
    chunks: i64,
    now: NaiveDateTime,
) -> Result<Checkpointed> {
    let partial = db.seal(super::sealed::PENDING_PARTIAL, trigger_id, partial)?;
    let partial = partial.as_str();
    let owner = db.owner();
    let written = with_write!(db, |conn| {
        CheckpointReply {
            trigger_id,
            owner,
            reply_id,
            model,
            partial,
            chunks,
            now,
        }
        .execute(conn)
        .await?
    });
    if written == 1 {
        return Ok(Checkpointed::Written);
    }
    let claimed: i64 = with_conn!(db, |conn| {
        pending_replies::table
            .find(trigger_id)
            .count()
            .get_result(conn)
            .await?
    });
    Ok(if claimed > 0 {
        Checkpointed::Claimed
    } else {
        Checkpointed::Gone
    })
}

/// What became of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpointed {
    Written,
    /// No reply is owed any more (it is stored, or its chat or message was deleted).
    Gone,
    /// Another core owns the row now: it took the reply over (this core was thought dead).
    Claimed,
}

/// Claims for this core (`Db::owner`) the reply owed to `trigger_id` while `from` (a core
/// found dead) still owns it. Answers false when someone else claimed it first, or it is
/// stored: only one core ever continues a reply.
pub async fn claim_pending_reply(db: &Db, trigger_id: &str, from: &str) -> Result<bool> {
    let owner = db.owner();
    let claimed = with_write!(db, |conn| {
        diesel::update(
            pending_replies::table
                .find(trigger_id)
                .filter(pending_replies::owner.eq(from)),
        )
        .set(pending_replies::owner.eq(owner))
        .execute(conn)
        .await?
    });
    Ok(claimed == 1)
}

/// Every reply owed by a core neither this one (`Db::owner`) nor one of `alive`, by chat in
/// `seq` order: the replies of cores that died (usually none).
pub async fn pending_replies_of_dead(db: &Db, alive: &[&str]) -> Result<Vec<PendingReplyRow>> {
    load_pending(db, Some(alive)).await
}

/// No reply is owed to `trigger_id` after all (an operator took the chat over before it
/// started).
pub async fn forget_pending_reply(db: &Db, trigger_id: &str) -> Result<()> {
    with_write!(db, |conn| {
        diesel::delete(pending_replies::table.find(trigger_id))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Every reply owed, by chat, each chat's in the order its messages were stored.
pub async fn pending_replies(db: &Db) -> Result<Vec<PendingReplyRow>> {
    load_pending(db, None).await
}

/// The replies owed, by chat in `seq` order: all, or (`dead_only`: the live cores) those of dead cores.
async fn load_pending(db: &Db, dead_only: Option<&[&str]>) -> Result<Vec<PendingReplyRow>> {
    let owner = db.owner();
    let rows: Vec<PendingReplyRow> = with_conn!(db, |conn| {
        let mut query = pending_replies::table
            .inner_join(messages::table.on(messages::id.eq(pending_replies::trigger_id)))
            .into_boxed();
        if let Some(alive) = dead_only {
            query = query
                .filter(pending_replies::owner.ne(owner))
                .filter(pending_replies::owner.ne_all(alive));
        }
        query
            // Within a chat, in the order the messages were stored: the replies must be
            // given their places in line in that order (`chat/reply_order.rs`). Timestamps
            // can tie, and ids need not follow `seq`.
            .order((pending_replies::chat_id.asc(), messages::seq.asc()))
            .select(PendingReplyRow::as_select())
            .load(conn)
            .await?
    });
    open_partials(db, rows)
}

fn open_partials(db: &Db, rows: Vec<PendingReplyRow>) -> Result<Vec<PendingReplyRow>> {
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
