//! The `users` table: who has been seen (JWT subjects), under which name, and whether they
//! are online right now. Rows are created on first contact by [`upsert_user`]; nothing here
//! deletes them. Beside it, `user_contexts`: each user's context document.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::UserRow;
use super::prepared::UpsertUser;
use super::schema::{user_contexts, users};
use super::{Db, Result, StorageError};

/// Inserts the user, or updates the display name and `last_active_at` of an existing one
/// (`created_at` and `online` are left alone on update). One statement, so concurrent calls
/// for the same id are safe.
pub async fn upsert_user(db: &Db, id: &str, display_name: &str, now: NaiveDateTime) -> Result<()> {
    with_write!(db, |conn| {
        UpsertUser {
            id,
            display_name,
            now,
        }
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// Sets the presence flag and bumps `last_active_at`. Fails with [`StorageError::NotFound`]
/// for a user never passed to [`upsert_user`].
pub async fn set_online(db: &Db, id: &str, online: bool, now: NaiveDateTime) -> Result<()> {
    let updated = with_write!(db, |conn| {
        diesel::update(users::table.find(id))
            .set((users::online.eq(online), users::last_active_at.eq(now)))
            .execute(conn)
            .await?
    });
    if updated == 0 {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

/// The user's row, if it exists.
pub async fn get_user(db: &Db, id: &str) -> Result<Option<UserRow>> {
    with_conn!(db, |conn| {
        Ok(users::table
            .find(id)
            .select(UserRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// A user's context document as stored: serde_json text of an object.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = user_contexts)]
pub struct UserContextRow {
    pub user_id: String,
    pub document: String,
    pub updated_by: String,
    pub updated_at: NaiveDateTime,
}

/// Stores `document` as the user's context, replacing any earlier one. One statement.
pub async fn set_user_context(
    db: &Db,
    user_id: &str,
    document: &str,
    updated_by: &str,
    now: NaiveDateTime,
) -> Result<()> {
    let document = db.seal(super::sealed::CONTEXT_DOCUMENT, user_id, document)?;
    let document = document.as_str();
    with_write!(db, |conn| {
        diesel::insert_into(user_contexts::table)
            .values((
                user_contexts::user_id.eq(user_id),
                user_contexts::document.eq(document),
                user_contexts::updated_by.eq(updated_by),
                user_contexts::updated_at.eq(now),
            ))
            .on_conflict(user_contexts::user_id)
            .do_update()
            .set((
                user_contexts::document.eq(document),
                user_contexts::updated_by.eq(updated_by),
                user_contexts::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// The user's context document, if one was set.
pub async fn get_user_context(db: &Db, user_id: &str) -> Result<Option<UserContextRow>> {
    let row: Option<UserContextRow> = with_conn!(db, |conn| {
        user_contexts::table
            .find(user_id)
            .select(UserContextRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(|mut row| {
        row.document = db.open(super::sealed::CONTEXT_DOCUMENT, &row.user_id, &row.document)?;
        Ok(row)
    })
    .transpose()
}
