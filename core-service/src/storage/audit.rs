//! The `audit_events` table: who did what to a session and when (takeover, release, lease
//! expiry, help requested and resolved, end), shown to operators in the session's detail.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::AuditRow;
use super::schema::audit_events;
use super::{Db, Result};

/// Appends one entry. `id` must be unique and time-ordered (UUID v7).
pub async fn record_audit(
    db: &Db,
    id: &str,
    chat_id: &str,
    action: &str,
    actor: (&str, &str),
    now: NaiveDateTime,
) -> Result<()> {
    with_write!(db, |conn| {
        diesel::insert_into(audit_events::table)
            .values((
                audit_events::id.eq(id),
                audit_events::chat_id.eq(chat_id),
                audit_events::action.eq(action),
                audit_events::actor_id.eq(actor.0),
                audit_events::actor_name.eq(actor.1),
                audit_events::created_at.eq(now),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// A chat's trail, oldest first.
pub async fn audit_of_chat(db: &Db, chat_id: &str) -> Result<Vec<AuditRow>> {
    with_conn!(db, |conn| {
        Ok(audit_events::table
            .filter(audit_events::chat_id.eq(chat_id))
            .order((audit_events::created_at.asc(), audit_events::id.asc()))
            .select(AuditRow::as_select())
            .load(conn)
            .await?)
    })
}
