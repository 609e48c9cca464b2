//! The `help_requests` table: the operators' help queue. A request is open until an operator
//! resolves it (or takes the session over); the chat's `needs_help` flag mirrors whether it
//! has an open request.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::HelpRequestRow;
use super::schema::help_requests;
use super::{Db, Result};

#[derive(Debug, Clone, Copy)]
pub struct NewHelpRequest<'a> {
    pub id: &'a str,
    pub chat_id: &'a str,
    pub user_id: &'a str,
    pub reason: Option<&'a str>,
    pub now: NaiveDateTime,
}

pub async fn insert_help_request(db: &Db, new: NewHelpRequest<'_>) -> Result<HelpRequestRow> {
    let reason = new
        .reason
        .map(|reason| db.seal(super::sealed::HELP_REASON, new.id, reason))
        .transpose()?;
    let row: HelpRequestRow = with_write!(db, |conn| {
        diesel::insert_into(help_requests::table)
            .values((
                help_requests::id.eq(new.id),
                help_requests::chat_id.eq(new.chat_id),
                help_requests::user_id.eq(new.user_id),
                help_requests::reason.eq(reason.as_deref()),
                help_requests::created_at.eq(new.now),
            ))
            .returning(HelpRequestRow::as_returning())
            .get_result(conn)
            .await?
    });
    db.open_help(row)
}

/// The queue: open requests oldest first, then (when asked) resolved ones newest first.
pub async fn list_help_requests(
    db: &Db,
    include_resolved: bool,
    limit: i64,
) -> Result<Vec<HelpRequestRow>> {
    let rows: Vec<HelpRequestRow> = with_conn!(db, |conn| {
        let mut rows: Vec<HelpRequestRow> = help_requests::table
            .filter(help_requests::resolved_at.is_null())
            .order((help_requests::created_at.asc(), help_requests::id.asc()))
            .limit(limit)
            .select(HelpRequestRow::as_select())
            .load(conn)
            .await?;
        let room = limit - rows.len() as i64;
        if include_resolved && room > 0 {
            let resolved: Vec<HelpRequestRow> = help_requests::table
                .filter(help_requests::resolved_at.is_not_null())
                .order((help_requests::resolved_at.desc(), help_requests::id.desc()))
                .limit(room)
                .select(HelpRequestRow::as_select())
                .load(conn)
                .await?;
            rows.extend(resolved);
        }
        rows
    });
    rows.into_iter().map(|row| db.open_help(row)).collect()
}

/// A chat's requests, oldest first.
pub async fn help_requests_of_chat(db: &Db, chat_id: &str) -> Result<Vec<HelpRequestRow>> {
    let rows: Vec<HelpRequestRow> = with_conn!(db, |conn| {
        help_requests::table
            .filter(help_requests::chat_id.eq(chat_id))
            .order((help_requests::created_at.asc(), help_requests::id.asc()))
            .select(HelpRequestRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().map(|row| db.open_help(row)).collect()
}

/// Resolves an open request. `Ok(None)` when it does not exist or was already resolved (tell
/// the two apart with a lookup if needed).
pub async fn resolve_help_request(
    db: &Db,
    id: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<Option<HelpRequestRow>> {
    let row: Option<HelpRequestRow> = with_write!(db, |conn| {
        diesel::update(
            help_requests::table
                .find(id)
                .filter(help_requests::resolved_at.is_null()),
        )
        .set((
            help_requests::resolved_at.eq(now),
            help_requests::resolved_by.eq(by),
        ))
        .returning(HelpRequestRow::as_returning())
        .get_result(conn)
        .await
        .optional()?
    });
    row.map(|row| db.open_help(row)).transpose()
}

/// Resolves every open request of a chat (an operator took it over). Returns how many.
pub async fn resolve_open_help_requests(
    db: &Db,
    chat_id: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<usize> {
    with_write!(db, |conn| {
        Ok(diesel::update(
            help_requests::table
                .filter(help_requests::chat_id.eq(chat_id))
                .filter(help_requests::resolved_at.is_null()),
        )
        .set((
            help_requests::resolved_at.eq(now),
            help_requests::resolved_by.eq(by),
        ))
        .execute(conn)
        .await?)
    })
}

/// One request by id.
pub async fn get_help_request(db: &Db, id: &str) -> Result<Option<HelpRequestRow>> {
    let row: Option<HelpRequestRow> = with_conn!(db, |conn| {
        help_requests::table
            .find(id)
            .select(HelpRequestRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(|row| db.open_help(row)).transpose()
}
