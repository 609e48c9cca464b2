//! The `users` table: who has been seen (JWT subjects), under which name, and whether they
//! are online right now. Rows are created on first contact by [`upsert_user`]; nothing here
//! deletes them.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::UserRow;
use super::schema::users;
use super::{Db, Result, StorageError};

/// Inserts the user, or updates the display name and `last_active_at` of an existing one
/// (`created_at` and `online` are left alone on update). One statement, so concurrent calls
/// for the same id are safe.
pub async fn upsert_user(db: &Db, id: &str, display_name: &str, now: NaiveDateTime) -> Result<()> {
    with_conn!(db, |conn| {
        diesel::insert_into(users::table)
            .values((
                users::id.eq(id),
                users::display_name.eq(display_name),
                users::created_at.eq(now),
                users::last_active_at.eq(now),
                users::online.eq(false),
            ))
            .on_conflict(users::id)
            .do_update()
            .set((
                users::display_name.eq(display_name),
                users::last_active_at.eq(now),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Sets the presence flag and bumps `last_active_at`. Fails with [`StorageError::NotFound`]
/// for a user never passed to [`upsert_user`].
pub async fn set_online(db: &Db, id: &str, online: bool, now: NaiveDateTime) -> Result<()> {
    let updated = with_conn!(db, |conn| {
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
