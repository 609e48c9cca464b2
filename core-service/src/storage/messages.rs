//! The `messages` table: every chat message, numbered by the chat's sequence counter.
//!
//! `seq` comes from `chats.next_seq`, which [`super::events`] shares, so messages and durable
//! events form one gap-free, totally ordered stream per chat that reconnecting clients resume
//! from. Sends are idempotent per `(sender_id, client_message_id)`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::MessageRow;
use super::prepared::{BumpChat, CountMessage, UpsertUser};
use super::schema::{chat_files, chats, messages, pending_replies};
use super::usage::NewUsage;
use super::{Db, Result, StorageError, TxError, duration_ms, is_unique_violation};
use crate::types::{MessageStatus, Role};

#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub chat_id: &'a str,
    pub sender_id: &'a str,
    pub role: Role,
    pub agent_id: &'a str,
    pub content: &'a str,
    pub status: MessageStatus,
    /// The sender's idempotency key; `None` means never deduplicated.
    pub client_message_id: Option<&'a str>,
    /// serde_json text (an array).
    pub attachments_json: &'a str,
    /// The ids of the files `attachments_json` lists: recorded as the chat's (`chat_files`).
    pub file_ids: &'a [String],
    /// serde_json text (an object).
    pub metadata_json: &'a str,
    pub now: NaiveDateTime,
    /// How this message stands to the replies owed (`pending_replies`), changed in the same
    /// transaction.
    pub reply: ReplyLink<'a>,
}

/// What storing a message does to the replies owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyLink<'a> {
    /// Nothing.
    None,
    /// A reply to this message is owed to `requester`.
    Owed { requester: &'a str },
    /// This message is the reply owed to the message `trigger_id`.
    Answers { trigger_id: &'a str },
}

/// What [`insert_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The message was stored with a fresh seq.
    New(MessageRow),
    /// The sender already sent this client id: the earlier row, unchanged. Nothing was written.
    Duplicate(MessageRow),
}

impl Inserted {
    pub fn row(&self) -> &MessageRow {
        match self {
            Inserted::New(row) | Inserted::Duplicate(row) => row,
        }
    }

    pub fn into_row(self) -> MessageRow {
        match self {
            Inserted::New(row) | Inserted::Duplicate(row) => row,
        }
    }
}

/// Stores a message with the chat's next seq, or returns the earlier row if this sender
/// already used this `client_message_id` (in any chat).
///
/// One transaction: take the next seq from `chats.next_seq` (bumping it, `message_count` and
/// `last_activity_at`), then insert, numbered with the new `message_count` (`ordinal`). The `UPDATE ... RETURNING` comes first: on PostgreSQL
/// it locks the chat row until commit, on SQLite the transaction holds the write lock
/// (`BEGIN IMMEDIATE`), so concurrent sends to one chat get consecutive seqs and commit in seq
/// order. Two concurrent sends with the same client id both pass the cheap pre-check; the
/// loser hits the unique index, its transaction rolls back (the seq is returned with it), and
/// it answers `Duplicate` with the winner's row.
///
/// Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn insert_message(db: &Db, new: NewMessage<'_>) -> Result<Inserted> {
    insert_message_with(db, new, Along::default()).await
}

/// What else [`insert_message_with`] writes in the message's transaction, saving a commit
/// each on the turn's path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Along<'a> {
    /// The sender's display name: their user row is created or refreshed ([`super::upsert_user`]).
    pub sender_name: Option<&'a str>,
    /// The reply's token usage ([`super::insert_usage`]).
    pub usage: Option<NewUsage<'a>>,
}

/// [`insert_message`], writing `along` in the same transaction. A duplicate client id is
/// found by the unique index (the transaction rolls back, nothing of `along` is kept), so a
/// first send costs no lookup.
pub async fn insert_message_with(
    db: &Db,
    new: NewMessage<'_>,
    along: Along<'_>,
) -> Result<Inserted> {
    let content = db.seal(super::sealed::MESSAGE_CONTENT, new.id, new.content)?;
    let content = content.as_str();
    let new = &new;
    let owner = db.owner();
    let along = &along;
    let outcome = with_tx!(db, TxError, |conn| {
        if let Some(name) = along.sender_name {
            UpsertUser {
                id: new.sender_id,
                display_name: name,
                now: new.now,
            }
            .execute(conn)
            .await?;
        }
        let counter: Option<(i64, i64, NaiveDateTime, Option<NaiveDateTime>)> = BumpChat {
            chat_id: new.chat_id,
            now: new.now,
        }
        .get_result(conn)
        .await
        .optional()?;
        let Some((next_seq, ordinal, started_at, ended_at)) = counter else {
            return Err(TxError::ChatMissing);
        };
        // An active session's duration runs to its last activity; an ended one's to its end.
        CountMessage {
            chat_id: new.chat_id,
            counts: match new.role {
                Role::User => [1, 0, 0],
                Role::Assistant => [0, 1, 0],
                Role::Admin => [0, 0, 1],
                Role::System => [0, 0, 0],
            },
            duration_ms: duration_ms(started_at, ended_at.unwrap_or(new.now)),
        }
        .execute(conn)
        .await?;
        let row = diesel::insert_into(messages::table)
            .values((
                messages::id.eq(new.id),
                messages::chat_id.eq(new.chat_id),
                messages::seq.eq(next_seq - 1),
                messages::sender_id.eq(new.sender_id),
                messages::role.eq(new.role.as_str()),
                messages::agent_id.eq(new.agent_id),
                messages::content.eq(content),
                messages::status.eq(new.status.as_str()),
                messages::client_message_id.eq(new.client_message_id),
                messages::attachments.eq(new.attachments_json),
                messages::metadata.eq(new.metadata_json),
                messages::created_at.eq(new.now),
                messages::ordinal.eq(ordinal),
            ))
            .returning(MessageRow::as_returning())
            .get_result(conn)
            .await?;
        for file_id in new.file_ids {
            diesel::insert_into(chat_files::table)
                .values((
                    chat_files::chat_id.eq(new.chat_id),
                    chat_files::file_id.eq(file_id),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
        }
        match new.reply {
            ReplyLink::None => {}
            ReplyLink::Owed { requester } => {
                diesel::insert_into(pending_replies::table)
                    .values((
                        pending_replies::trigger_id.eq(new.id),
                        pending_replies::chat_id.eq(new.chat_id),
                        pending_replies::requester_id.eq(requester),
                        pending_replies::owner.eq(owner),
                        pending_replies::created_at.eq(new.now),
                        pending_replies::updated_at.eq(new.now),
                    ))
                    .execute(conn)
                    .await?;
            }
            ReplyLink::Answers { trigger_id } => {
                diesel::delete(pending_replies::table.find(trigger_id))
                    .execute(conn)
                    .await?;
            }
        }
        if let Some(usage) = &along.usage {
            record_usage!(conn, usage);
        }
        Ok(row)
    });

    match outcome {
        Ok(mut row) => {
            new.content.clone_into(&mut row.content);
            Ok(Inserted::New(row))
        }
        Err(TxError::ChatMissing) => Err(StorageError::NotFound),
        Err(TxError::Crypto(err)) => Err(err.into()),
        Err(TxError::Query(err)) => {
            // Lost the race against a concurrent send with the same client id. A unique
            // violation on the message id itself (a caller bug) finds no row here and is
            // reported as the query error it is.
            if is_unique_violation(&err)
                && let Some(client_id) = new.client_message_id
                && let Some(row) = find_by_client_id(db, new.sender_id, client_id).await?
            {
                return Ok(Inserted::Duplicate(row));
            }
            Err(err.into())
        }
    }
}

/// The message `sender_id` sent with this idempotency key, in any chat, if any.
pub async fn find_by_client_id(
    db: &Db,
    sender_id: &str,
    client_id: &str,
) -> Result<Option<MessageRow>> {
    let row: Option<MessageRow> = with_conn!(db, |conn| {
        messages::table
            .filter(messages::sender_id.eq(sender_id))
            .filter(messages::client_message_id.eq(client_id))
            .select(MessageRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(|row| db.open_message(row)).transpose()
}

pub async fn get_message(db: &Db, id: &str) -> Result<Option<MessageRow>> {
    let row: Option<MessageRow> = with_conn!(db, |conn| {
        messages::table
            .find(id)
            .select(MessageRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(|row| db.open_message(row)).transpose()
}

/// A page of the chat's messages for scrolling back: the newest `limit` messages with
/// `seq < before` (`None`: the newest overall), returned oldest first, and whether older
/// messages exist. Pass the first row's seq as the next `before`.
pub async fn history(
    db: &Db,
    chat_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<MessageRow>, bool)> {
    let limit = limit.max(0);
    let before = before.unwrap_or(i64::MAX);
    // One extra row tells whether there is more.
    let mut rows: Vec<MessageRow> = with_conn!(db, |conn| {
        messages::table
            .filter(messages::chat_id.eq(chat_id))
            .filter(messages::seq.lt(before))
            .order(messages::seq.desc())
            .limit(limit.saturating_add(1))
            .select(MessageRow::as_select())
            .load(conn)
            .await?
    });
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    rows.reverse();
    let rows = rows
        .into_iter()
        .map(|row| db.open_message(row))
        .collect::<Result<Vec<_>>>()?;
    Ok((rows, has_more))
}

/// The highest seq handed out in the chat (messages and durable events alike); 0 for a new
/// chat. Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn last_seq(db: &Db, chat_id: &str) -> Result<i64> {
    let next_seq: Option<i64> = with_conn!(db, |conn| {
        chats::table
            .find(chat_id)
            .select(chats::next_seq)
            .first(conn)
            .await
            .optional()?
    });
    next_seq.map(|next| next - 1).ok_or(StorageError::NotFound)
}
