//! The `chats` and `chat_members` tables: a chat's settings and lifecycle, and who may see it.
//!
//! A chat is created together with its owner's membership ([`create_chat`]); the chat row
//! also carries the per-chat sequence counter (`next_seq`) that [`super::messages`] and
//! [`super::events`] draw from, which is why those modules write to `chats` too. Beside them,
//! `provider_conversations`: the ids stateful providers (Dify) gave a chat's conversation.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel_async::RunQueryDsl;

use super::models::ChatRow;
use super::schema::{
    chat_keys, chat_members, chat_settings, chats, provider_conversations, session_metrics,
};
use super::{Db, Result, StorageError, duration_ms};
use crate::types::ChatStatus;

/// Role of the chat's creator in `chat_members`.
pub const ROLE_OWNER: &str = "owner";
/// Role of everyone added later through [`add_member`].
pub const ROLE_MEMBER: &str = "member";

#[derive(Debug, Clone, Copy)]
pub struct NewChat<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub title: &'a str,
    pub agent_id: &'a str,
    pub model: &'a str,
    /// The owner's own name for the chat (seed 003's `connectionId`), unique per owner.
    pub client_key: Option<&'a str>,
    pub now: NaiveDateTime,
}

/// The chat `owner_id` named `client_key` when creating it, if any.
pub async fn find_keyed_chat(db: &Db, owner_id: &str, client_key: &str) -> Result<Option<ChatRow>> {
    let found: Option<ChatRow> = with_conn!(db, |conn| {
        chat_keys::table
            .inner_join(chats::table)
            .filter(chat_keys::owner_id.eq(owner_id))
            .filter(chat_keys::client_key.eq(client_key))
            .select(ChatRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    db.open_chat_opt(found)
}

/// Creates an active chat and makes its owner a member (role `owner`), in one transaction.
/// Fails with [`StorageError::Query`] (unique violation) if the id is taken.
pub async fn create_chat(db: &Db, new: NewChat<'_>) -> Result<ChatRow> {
    let title = db.seal(super::sealed::CHAT_TITLE, new.id, new.title)?;
    let title = title.as_str();
    let new = &new;
    let mut chat: ChatRow = with_tx!(db, StorageError, |conn| {
        let chat = diesel::insert_into(chats::table)
            .values((
                chats::id.eq(new.id),
                chats::owner_id.eq(new.owner_id),
                chats::title.eq(title),
                chats::agent_id.eq(new.agent_id),
                chats::model.eq(new.model),
                chats::status.eq(ChatStatus::Active.as_str()),
                chats::started_at.eq(new.now),
                chats::last_activity_at.eq(new.now),
            ))
            .returning(ChatRow::as_returning())
            .get_result(conn)
            .await?;
        diesel::insert_into(chat_members::table)
            .values((
                chat_members::chat_id.eq(new.id),
                chat_members::user_id.eq(new.owner_id),
                chat_members::role.eq(ROLE_OWNER),
                chat_members::joined_at.eq(new.now),
            ))
            .execute(conn)
            .await?;
        diesel::insert_into(session_metrics::table)
            .values(session_metrics::chat_id.eq(new.id))
            .execute(conn)
            .await?;
        if let Some(key) = new.client_key {
            // A second chat for one owner and key violates the primary key: the caller finds
            // the first.
            diesel::insert_into(chat_keys::table)
                .values((
                    chat_keys::owner_id.eq(new.owner_id),
                    chat_keys::client_key.eq(key),
                    chat_keys::chat_id.eq(new.id),
                ))
                .execute(conn)
                .await?;
        }
        Ok(chat)
    })?;
    new.title.clone_into(&mut chat.title);
    Ok(chat)
}

pub async fn get_chat(db: &Db, id: &str) -> Result<Option<ChatRow>> {
    let found: Option<ChatRow> = with_conn!(db, |conn| {
        chats::table
            .find(id)
            .select(ChatRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    db.open_chat_opt(found)
}

/// The chat `id` and whether `user_id` is one of its members, in one query.
pub async fn get_chat_as(db: &Db, id: &str, user_id: &str) -> Result<Option<(ChatRow, bool)>> {
    let found: Option<(ChatRow, bool)> = with_conn!(db, |conn| {
        chats::table
            .left_join(
                chat_members::table.on(chat_members::chat_id
                    .eq(chats::id)
                    .and(chat_members::user_id.eq(user_id))),
            )
            .filter(chats::id.eq(id))
            .select((
                ChatRow::as_select(),
                chat_members::user_id.nullable().is_not_null(),
            ))
            .first(conn)
            .await
            .optional()?
    });
    found
        .map(|(chat, member)| Ok((db.open_chat(chat)?, member)))
        .transpose()
}

pub async fn is_member(db: &Db, chat_id: &str, user_id: &str) -> Result<bool> {
    with_conn!(db, |conn| {
        Ok(diesel::select(diesel::dsl::exists(
            chat_members::table.find((chat_id, user_id)),
        ))
        .get_result::<bool>(conn)
        .await?)
    })
}

/// Adds `user_id` to the chat with role `member`. Returns false if they already were a member
/// (their role is kept). Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn add_member(db: &Db, chat_id: &str, user_id: &str, now: NaiveDateTime) -> Result<bool> {
    let inserted = with_write!(db, |conn| {
        diesel::insert_into(chat_members::table)
            .values((
                chat_members::chat_id.eq(chat_id),
                chat_members::user_id.eq(user_id),
                chat_members::role.eq(ROLE_MEMBER),
                chat_members::joined_at.eq(now),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await
    });
    match inserted {
        Ok(rows) => Ok(rows > 0),
        Err(diesel::result::Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => {
            Err(StorageError::NotFound)
        }
        Err(err) => Err(err.into()),
    }
}

/// Removes the membership; returns false if there was none.
pub async fn remove_member(db: &Db, chat_id: &str, user_id: &str) -> Result<bool> {
    with_write!(db, |conn| {
        let rows = diesel::delete(chat_members::table.find((chat_id, user_id)))
            .execute(conn)
            .await?;
        Ok(rows > 0)
    })
}

/// Members of the chat, in the order they joined.
pub async fn member_ids(db: &Db, chat_id: &str) -> Result<Vec<String>> {
    with_conn!(db, |conn| {
        Ok(chat_members::table
            .filter(chat_members::chat_id.eq(chat_id))
            .order((chat_members::joined_at.asc(), chat_members::user_id.asc()))
            .select(chat_members::user_id)
            .load(conn)
            .await?)
    })
}

/// Chats the user is a member of (owned or joined), most recently active first, at most
/// `limit`.
pub async fn list_user_chats(db: &Db, user_id: &str, limit: i64) -> Result<Vec<ChatRow>> {
    let found: Vec<ChatRow> = with_conn!(db, |conn| {
        chats::table
            .inner_join(chat_members::table)
            .filter(chat_members::user_id.eq(user_id))
            .order((chats::last_activity_at.desc(), chats::id.desc()))
            .limit(limit.max(0))
            .select(ChatRow::as_select())
            .load(conn)
            .await?
    });
    db.open_chats(found)
}

/// The id of the most recently active chat the user owns that has not ended, if any.
pub async fn latest_active_chat(db: &Db, user_id: &str) -> Result<Option<String>> {
    with_conn!(db, |conn| {
        Ok(chats::table
            .filter(chats::owner_id.eq(user_id))
            .filter(chats::status.eq(ChatStatus::Active.as_str()))
            .order((chats::last_activity_at.desc(), chats::id.desc()))
            .select(chats::id)
            .first(conn)
            .await
            .optional()?)
    })
}

/// Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn set_title(db: &Db, id: &str, title: &str) -> Result<()> {
    let title = db.seal(super::sealed::CHAT_TITLE, id, title)?;
    let title = title.as_str();
    let rows = with_write!(db, |conn| {
        diesel::update(chats::table.find(id))
            .set(chats::title.eq(title))
            .execute(conn)
            .await?
    });
    found(rows)
}

/// Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn set_model(db: &Db, id: &str, model: &str) -> Result<()> {
    let rows = with_write!(db, |conn| {
        diesel::update(chats::table.find(id))
            .set(chats::model.eq(model))
            .execute(conn)
            .await?
    });
    found(rows)
}

/// Marks the chat ended at `now` and records its duration. Ending an already ended chat keeps
/// the first `ended_at`. Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn end_chat(db: &Db, id: &str, now: NaiveDateTime) -> Result<()> {
    with_tx!(db, StorageError, |conn| {
        let ended: Option<(NaiveDateTime, Option<NaiveDateTime>)> =
            diesel::update(chats::table.find(id))
                .set((
                    chats::status.eq(ChatStatus::Ended.as_str()),
                    chats::ended_at.eq(coalesce(chats::ended_at, now)),
                ))
                .returning((chats::started_at, chats::ended_at))
                .get_result(conn)
                .await
                .optional()?;
        let Some((started_at, ended_at)) = ended else {
            return Err(StorageError::NotFound);
        };
        diesel::update(session_metrics::table.find(id))
            .set(session_metrics::duration_ms.eq(duration_ms(started_at, ended_at.unwrap_or(now))))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Makes an ended chat active again (its owner continued it). Returns whether it was ended.
pub async fn reopen_chat(db: &Db, id: &str) -> Result<bool> {
    let rows = with_write!(db, |conn| {
        diesel::update(
            chats::table
                .find(id)
                .filter(chats::status.eq(ChatStatus::Ended.as_str())),
        )
        .set((
            chats::status.eq(ChatStatus::Active.as_str()),
            chats::ended_at.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)
        .await?
    });
    Ok(rows == 1)
}

/// Whether the chat asked for spoken replies (`chat_settings`; no row: no).
pub async fn spoken_replies(db: &Db, chat_id: &str) -> Result<bool> {
    with_conn!(db, |conn| {
        Ok(chat_settings::table
            .find(chat_id)
            .select(chat_settings::spoken_replies)
            .first(conn)
            .await
            .optional()?
            .unwrap_or(false))
    })
}

/// Sets whether the chat's replies are spoken.
pub async fn set_spoken_replies(db: &Db, chat_id: &str, spoken: bool) -> Result<()> {
    with_write!(db, |conn| {
        diesel::insert_into(chat_settings::table)
            .values((
                chat_settings::chat_id.eq(chat_id),
                chat_settings::spoken_replies.eq(spoken),
            ))
            .on_conflict(chat_settings::chat_id)
            .do_update()
            .set(chat_settings::spoken_replies.eq(spoken))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Active chats with no activity since `before` (candidates for the idle timeout).
pub async fn idle_chats(db: &Db, before: NaiveDateTime, limit: i64) -> Result<Vec<ChatRow>> {
    let found: Vec<ChatRow> = with_conn!(db, |conn| {
        chats::table
            .filter(chats::status.eq(ChatStatus::Active.as_str()))
            .filter(chats::last_activity_at.lt(before))
            .order(chats::last_activity_at.asc())
            .limit(limit)
            .select(ChatRow::as_select())
            .load(conn)
            .await?
    });
    db.open_chats(found)
}

/// The owner's active chats other than `except`.
pub async fn other_active_chats(db: &Db, owner_id: &str, except: &str) -> Result<Vec<ChatRow>> {
    let found: Vec<ChatRow> = with_conn!(db, |conn| {
        chats::table
            .filter(chats::owner_id.eq(owner_id))
            .filter(chats::status.eq(ChatStatus::Active.as_str()))
            .filter(chats::id.ne(except))
            .select(ChatRow::as_select())
            .load(conn)
            .await?
    });
    db.open_chats(found)
}

/// Sets or clears the chat's "a human is needed" flag. Returns whether it changed.
/// Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn set_needs_help(db: &Db, id: &str, needs_help: bool) -> Result<bool> {
    let rows = with_write!(db, |conn| {
        diesel::update(
            chats::table
                .find(id)
                .filter(chats::needs_help.ne(needs_help)),
        )
        .set(chats::needs_help.eq(needs_help))
        .execute(conn)
        .await?
    });
    if rows == 0 {
        get_chat(db, id).await?.ok_or(StorageError::NotFound)?;
    }
    Ok(rows > 0)
}

/// Takes the chat's operator lock for `operator_id` until `lease_until`, atomically: only when
/// nobody holds it, the same operator holds it, or the holder's lease ran out before `now`.
/// Marks the chat admin-assisted. Returns false when another operator holds a live lease or
/// the chat does not exist.
pub async fn acquire_operator(
    db: &Db,
    chat_id: &str,
    operator_id: &str,
    operator_name: &str,
    lease_until: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<bool> {
    let rows = with_write!(db, |conn| {
        diesel::update(
            chats::table.find(chat_id).filter(
                chats::operator_id
                    .is_null()
                    .or(chats::operator_id.eq(operator_id))
                    .or(chats::operator_lease_until.lt(now)),
            ),
        )
        .set((
            chats::operator_id.eq(operator_id),
            chats::operator_name.eq(operator_name),
            chats::operator_lease_until.eq(lease_until),
            chats::admin_assisted.eq(true),
        ))
        .execute(conn)
        .await?
    });
    Ok(rows == 1)
}

/// Extends the lease of the operator who holds the chat. Returns false if they no longer do.
pub async fn renew_operator(
    db: &Db,
    chat_id: &str,
    operator_id: &str,
    lease_until: NaiveDateTime,
) -> Result<bool> {
    let rows = with_write!(db, |conn| {
        diesel::update(
            chats::table
                .find(chat_id)
                .filter(chats::operator_id.eq(operator_id)),
        )
        .set(chats::operator_lease_until.eq(lease_until))
        .execute(conn)
        .await?
    });
    Ok(rows == 1)
}

/// Clears the operator lock if `operator_id` holds it and, when `expired_before` is given,
/// only if the lease ran out before that time (so a lease renewed meanwhile is kept).
/// Returns whether it was released.
pub async fn release_operator(
    db: &Db,
    chat_id: &str,
    operator_id: &str,
    expired_before: Option<NaiveDateTime>,
) -> Result<bool> {
    let rows = with_write!(db, |conn| {
        let target = chats::table
            .find(chat_id)
            .filter(chats::operator_id.eq(operator_id));
        let reset = (
            chats::operator_id.eq(None::<String>),
            chats::operator_name.eq(None::<String>),
            chats::operator_lease_until.eq(None::<NaiveDateTime>),
        );
        match expired_before {
            Some(t) => {
                diesel::update(target.filter(chats::operator_lease_until.lt(t)))
                    .set(reset)
                    .execute(conn)
                    .await?
            }
            None => diesel::update(target).set(reset).execute(conn).await?,
        }
    });
    Ok(rows == 1)
}

/// Chats whose operator lease ran out before `now` (the operator vanished).
pub async fn expired_operator_leases(db: &Db, now: NaiveDateTime) -> Result<Vec<ChatRow>> {
    let found: Vec<ChatRow> = with_conn!(db, |conn| {
        chats::table
            .filter(chats::operator_id.is_not_null())
            .filter(chats::operator_lease_until.lt(now))
            .select(ChatRow::as_select())
            .load(conn)
            .await?
    });
    db.open_chats(found)
}

diesel::define_sql_function! {
    /// SQL `COALESCE` for a nullable timestamp, the same on both backends.
    fn coalesce(
        x: diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
        y: diesel::sql_types::Timestamp,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Timestamp>;
}

fn found(rows: usize) -> Result<()> {
    if rows == 0 {
        Err(StorageError::NotFound)
    } else {
        Ok(())
    }
}

/// The conversation ids providers gave this chat, by provider name.
pub async fn conversations_of(
    db: &Db,
    chat_id: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let rows: Vec<(String, String)> = with_conn!(db, |conn| {
        provider_conversations::table
            .filter(provider_conversations::chat_id.eq(chat_id))
            .select((
                provider_conversations::provider,
                provider_conversations::conversation_id,
            ))
            .load(conn)
            .await?
    });
    Ok(rows.into_iter().collect())
}

/// Records the id `provider` gave this chat's conversation, replacing an earlier one.
pub async fn set_conversation(
    db: &Db,
    chat_id: &str,
    provider: &str,
    conversation_id: &str,
    now: NaiveDateTime,
) -> Result<()> {
    with_write!(db, |conn| {
        diesel::insert_into(provider_conversations::table)
            .values((
                provider_conversations::chat_id.eq(chat_id),
                provider_conversations::provider.eq(provider),
                provider_conversations::conversation_id.eq(conversation_id),
                provider_conversations::updated_at.eq(now),
            ))
            .on_conflict((
                provider_conversations::chat_id,
                provider_conversations::provider,
            ))
            .do_update()
            .set((
                provider_conversations::conversation_id.eq(conversation_id),
                provider_conversations::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
}
