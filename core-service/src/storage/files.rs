//! The `files` table: one record per uploaded file (the bytes are in the object store).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::FileRow;
use super::schema::files;
use super::{Db, Result};

#[derive(Debug, Clone, Copy)]
pub struct NewFile<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub mime: &'a str,
    pub size: i64,
    pub now: NaiveDateTime,
}

pub async fn insert_file(db: &Db, new: NewFile<'_>) -> Result<FileRow> {
    with_write!(db, |conn| {
        Ok(diesel::insert_into(files::table)
            .values((
                files::id.eq(new.id),
                files::owner_id.eq(new.owner_id),
                files::name.eq(new.name),
                files::mime.eq(new.mime),
                files::size.eq(new.size),
                files::created_at.eq(new.now),
            ))
            .returning(FileRow::as_returning())
            .get_result(conn)
            .await?)
    })
}

pub async fn get_file(db: &Db, id: &str) -> Result<Option<FileRow>> {
    with_conn!(db, |conn| {
        Ok(files::table
            .find(id)
            .select(FileRow::as_select())
            .first(conn)
            .await
            .optional()?)
    })
}

/// The records of `ids` that exist (in no particular order).
pub async fn get_files(db: &Db, ids: &[String]) -> Result<Vec<FileRow>> {
    with_conn!(db, |conn| {
        Ok(files::table
            .filter(files::id.eq_any(ids))
            .select(FileRow::as_select())
            .load(conn)
            .await?)
    })
}

/// Up to `limit` file records with ids after `after`, in id order (paging through every
/// file, for re-encryption).
pub async fn files_after(db: &Db, after: &str, limit: i64) -> Result<Vec<FileRow>> {
    with_conn!(db, |conn| {
        Ok(files::table
            .filter(files::id.gt(after))
            .order(files::id.asc())
            .limit(limit)
            .select(FileRow::as_select())
            .load(conn)
            .await?)
    })
}
