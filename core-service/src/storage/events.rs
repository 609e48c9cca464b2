//! The `chat_events` and `read_receipts` tables: durable non-message chat events (receipts,
//! chat updates, operator join/leave) and who has read which message.
//!
//! Durable events take their seq from the same `chats.next_seq` counter as messages, so
//! [`events_after`] can replay one ordered stream to a reconnecting client.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::{EventRow, MessageRow};
use super::schema::{chat_events, chats, messages, read_receipts, session_metrics};
use super::{Db, Result, StorageError, TxError, duration_ms};

/// Bound on ids per statement, well below SQLite's and PostgreSQL's bind-parameter limits.
const RECEIPT_CHUNK: usize = 500;

/// One entry of a chat's durable stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durable {
    Message(MessageRow),
    Event(EventRow),
}

impl Durable {
    pub fn seq(&self) -> i64 {
        match self {
            Durable::Message(row) => row.seq,
            Durable::Event(row) => row.seq,
        }
    }
}

/// Appends a durable event to the chat's stream and returns its seq. One transaction: take
/// the next seq exactly as [`super::messages::insert_message`] does (locking the chat row),
/// insert the event, bump `last_activity_at` (not `message_count`).
///
/// Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn append_event(
    db: &Db,
    chat_id: &str,
    kind: &str,
    payload: &[u8],
    now: NaiveDateTime,
) -> Result<i64> {
    let outcome = with_tx!(db, TxError, |conn| {
        let counter: Option<(i64, NaiveDateTime, Option<NaiveDateTime>)> =
            diesel::update(chats::table.find(chat_id))
                .set((
                    chats::next_seq.eq(chats::next_seq + 1),
                    chats::last_activity_at.eq(now),
                ))
                .returning((chats::next_seq, chats::started_at, chats::ended_at))
                .get_result(conn)
                .await
                .optional()?;
        let Some((next_seq, started_at, ended_at)) = counter else {
            return Err(TxError::ChatMissing);
        };
        // Activity moves an active session's duration (last activity minus start); an ended
        // one keeps end minus start.
        diesel::update(session_metrics::table.find(chat_id))
            .set(session_metrics::duration_ms.eq(duration_ms(started_at, ended_at.unwrap_or(now))))
            .execute(conn)
            .await?;
        let seq = next_seq - 1;
        // Sealed here, once the seq (part of its associated data) is known.
        let payload = match db
            .keyring()
            .seal_bytes(&Db::event_aad(chat_id, seq), payload)
        {
            Ok(payload) => payload,
            Err(err) => return Err(TxError::Crypto(err)),
        };
        diesel::insert_into(chat_events::table)
            .values((
                chat_events::chat_id.eq(chat_id),
                chat_events::seq.eq(seq),
                chat_events::kind.eq(kind),
                chat_events::payload.eq(&payload),
                chat_events::created_at.eq(now),
            ))
            .execute(conn)
            .await?;
        Ok(seq)
    });
    match outcome {
        Ok(seq) => Ok(seq),
        Err(TxError::ChatMissing) => Err(StorageError::NotFound),
        Err(TxError::Query(err)) => Err(err.into()),
        Err(TxError::Crypto(err)) => Err(err.into()),
    }
}

/// The chat's durable stream after `after_seq`: messages and events merged in seq order, at
/// most `limit` entries. Pass the last entry's seq as the next `after_seq`.
///
/// Never skips an entry a later call would return: it first reads `next_seq`, and every seq
/// below a committed `next_seq` belongs to a committed row (seqs are allocated under the chat
/// row lock, in the same transaction as their row), so bounding both reads by it yields a
/// gap-free prefix even while writers commit between the two reads.
///
/// Fails with [`StorageError::NotFound`] if the chat does not exist.
pub async fn events_after(
    db: &Db,
    chat_id: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Durable>> {
    let limit = limit.max(0);
    let (message_rows, event_rows) = with_conn!(db, |conn| {
        let next_seq: Option<i64> = chats::table
            .find(chat_id)
            .select(chats::next_seq)
            .first(conn)
            .await
            .optional()?;
        let Some(next_seq) = next_seq else {
            return Err(StorageError::NotFound);
        };
        let message_rows: Vec<MessageRow> = messages::table
            .filter(messages::chat_id.eq(chat_id))
            .filter(messages::seq.gt(after_seq))
            .filter(messages::seq.lt(next_seq))
            .order(messages::seq.asc())
            .limit(limit)
            .select(MessageRow::as_select())
            .load(conn)
            .await?;
        let event_rows: Vec<EventRow> = chat_events::table
            .filter(chat_events::chat_id.eq(chat_id))
            .filter(chat_events::seq.gt(after_seq))
            .filter(chat_events::seq.lt(next_seq))
            .order(chat_events::seq.asc())
            .limit(limit)
            .select(EventRow::as_select())
            .load(conn)
            .await?;
        (message_rows, event_rows)
    });

    // Merge two seq-ordered lists, keeping the first `limit`.
    let mut merged = Vec::with_capacity(message_rows.len() + event_rows.len());
    let mut message_rows = message_rows.into_iter().peekable();
    let mut event_rows = event_rows.into_iter().peekable();
    while (merged.len() as i64) < limit {
        let take_message = match (message_rows.peek(), event_rows.peek()) {
            (Some(message), Some(event)) => message.seq < event.seq,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_message {
            message_rows
                .next()
                .map(|row| db.open_message(row))
                .transpose()?
                .map(Durable::Message)
        } else {
            event_rows
                .next()
                .map(|mut row| {
                    row.payload = db
                        .keyring()
                        .open_bytes(&Db::event_aad(&row.chat_id, row.seq), &row.payload)?;
                    Ok::<_, StorageError>(row)
                })
                .transpose()?
                .map(Durable::Event)
        };
        merged.extend(next);
    }
    Ok(merged)
}

/// Records that `user_id` read `message_ids` in the chat. Ids that are not messages of this
/// chat are ignored; receipts already recorded are kept as they were (first read wins).
/// Returns the ids that are messages of this chat, in request order without repeats,
/// whether newly recorded or not.
pub async fn record_receipts(
    db: &Db,
    chat_id: &str,
    user_id: &str,
    message_ids: &[String],
    now: NaiveDateTime,
) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let wanted: Vec<&str> = message_ids
        .iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect();

    let mut valid = HashSet::new();
    for chunk in wanted.chunks(RECEIPT_CHUNK) {
        let found = with_tx!(db, StorageError, |conn| {
            let found: Vec<String> = messages::table
                .filter(messages::chat_id.eq(chat_id))
                .filter(messages::id.eq_any(chunk))
                .select(messages::id)
                .load(conn)
                .await?;
            // Row by row: diesel has no multi-row insert with ON CONFLICT for SQLite, and
            // receipts come a handful at a time.
            for message_id in &found {
                diesel::insert_into(read_receipts::table)
                    .values((
                        read_receipts::chat_id.eq(chat_id),
                        read_receipts::message_id.eq(message_id),
                        read_receipts::user_id.eq(user_id),
                        read_receipts::read_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            Ok(found)
        })?;
        valid.extend(found);
    }
    Ok(wanted
        .into_iter()
        .filter(|id| valid.contains(*id))
        .map(str::to_owned)
        .collect())
}
