//! Deleting what retention or an admin removes: whole chats (everything of theirs goes with
//! them through `ON DELETE CASCADE`), the files only those chats held, and uploads never
//! attached. The functions return the ids of the file records deleted, so the caller removes
//! their bytes from the object store once the records are gone.

use chrono::NaiveDateTime;
use diesel::dsl::{exists, not};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::FileRow;
use super::schema::{chat_files, chats, files};
use super::{Db, Result, StorageError};

/// The ids of chats with no activity since `before`, oldest first, at most `limit`.
pub async fn chats_inactive_since(
    db: &Db,
    before: NaiveDateTime,
    limit: i64,
) -> Result<Vec<String>> {
    with_conn!(db, |conn| {
        Ok(chats::table
            .filter(chats::last_activity_at.lt(before))
            .order((chats::last_activity_at.asc(), chats::id.asc()))
            .limit(limit)
            .select(chats::id)
            .load(conn)
            .await?)
    })
}

/// Deletes a chat with everything of it, and the records of the files no other chat holds.
/// Returns those files' ids; [`StorageError::NotFound`] when there is no such chat.
pub async fn delete_chat(db: &Db, chat_id: &str) -> Result<Vec<String>> {
    let (here, chat_id) = (db.clone(), chat_id.to_owned());
    db.off_runtime(async move { delete_chat_here(&here, &chat_id).await })
        .await
}

/// [`delete_chat`] on the calling thread.
async fn delete_chat_here(db: &Db, chat_id: &str) -> Result<Vec<String>> {
    with_tx!(db, StorageError, |conn| {
        let (mine, theirs) = diesel::alias!(chat_files as mine, chat_files as theirs);
        let only_here: Vec<String> = mine
            .filter(mine.field(chat_files::chat_id).eq(chat_id))
            .filter(not(exists(
                theirs
                    .filter(
                        theirs
                            .field(chat_files::file_id)
                            .eq(mine.field(chat_files::file_id)),
                    )
                    .filter(theirs.field(chat_files::chat_id).ne(chat_id)),
            )))
            .select(mine.field(chat_files::file_id))
            .load(conn)
            .await?;
        let deleted = diesel::delete(chats::table.find(chat_id))
            .execute(conn)
            .await?;
        if deleted == 0 {
            return Err(StorageError::NotFound);
        }
        diesel::delete(files::table.filter(files::id.eq_any(&only_here)))
            .execute(conn)
            .await?;
        Ok(only_here)
    })
}

/// Deletes a file's record (and its place in chats); the record, when there was one.
pub async fn delete_file(db: &Db, file_id: &str) -> Result<Option<FileRow>> {
    with_write!(db, |conn| {
        Ok(diesel::delete(files::table.find(file_id))
            .returning(FileRow::as_returning())
            .get_result(conn)
            .await
            .optional()?)
    })
}

/// Deletes the records of uploads made before `before` that no chat holds, at most `limit`;
/// returns their ids.
pub async fn delete_unattached_files(
    db: &Db,
    before: NaiveDateTime,
    limit: i64,
) -> Result<Vec<String>> {
    with_write!(db, |conn| {
        let unattached = files::table
            .filter(files::created_at.lt(before))
            .filter(not(exists(
                chat_files::table.filter(chat_files::file_id.eq(files::id)),
            )))
            .order(files::created_at.asc())
            .limit(limit)
            .select(files::id);
        let ids: Vec<String> = unattached.load(conn).await?;
        // Deleted only while still unattached: a message may attach one meanwhile.
        Ok(diesel::delete(
            files::table
                .filter(files::id.eq_any(&ids))
                .filter(not(exists(
                    chat_files::table.filter(chat_files::file_id.eq(files::id)),
                ))),
        )
        .returning(files::id)
        .get_results(conn)
        .await?)
    })
}
