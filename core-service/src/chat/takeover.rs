//! An operator's takeover as one stream (AdminService `Takeover`): the stream's lifetime holds
//! the chat. It takes the chat over exactly as a socket's `takeover` frame does (same lock,
//! lease, announcements and audit), joins the operator to the chat's live events, sends the
//! operator's lines as role `admin`, renews the lease while it lives, and hands the chat back
//! when the operator releases or the stream ends. Losing the lease (e.g. after a long stall)
//! ends it too.

use std::sync::Arc;

use chat_auth::Principal;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::command::SendMessage;
use super::engine::{Engine, new_id};
use super::error::ChatError;
use super::event::{History, Operator, Outgoing};
use super::rooms::Conn;

/// What the operator sends on the stream after starting it.
#[derive(Debug, Clone)]
pub enum OperatorAction {
    /// A line to the chat's members: content and the operator's idempotency key.
    Message {
        content: String,
        client_message_id: String,
    },
    Release,
}

/// Why a takeover stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverEnd {
    /// The operator released the chat, or closed the stream.
    Released,
    /// The lease could not be renewed (another operator took over after it ran out).
    LeaseLost,
    /// The core is shutting down; the lease runs out by itself.
    ShuttingDown,
}

/// A running takeover: who holds it, the transcript at the start, the chat's live events, and
/// how it ended (sent once the events end).
pub struct Takeover {
    pub operator: Operator,
    pub transcript: History,
    pub events: mpsc::Receiver<Arc<Outgoing>>,
    pub ended: oneshot::Receiver<TakeoverEnd>,
}

/// The latest messages an operator sees when the takeover starts.
const TRANSCRIPT: i64 = 50;

impl Engine {
    /// Takes `chat_id` over for `who` (an admin) until `actions` ends or asks to release.
    /// Fails as the socket's `takeover` does: 403 for a non-admin, 404/403 for the chat, 409
    /// when another operator holds it, 503 while shutting down.
    pub async fn operator_stream<S>(
        self: &Arc<Self>,
        who: Principal,
        chat_id: &str,
        actions: S,
    ) -> Result<Takeover, ChatError>
    where
        S: Stream<Item = OperatorAction> + Send + Unpin + 'static,
    {
        if self.shutdown.is_cancelled() {
            return Err(ChatError::Unavailable("Shutting down".into()));
        }
        let (tx, events) = mpsc::channel(self.settings.outbound_buffer);
        let conn = Conn {
            id: new_id().into(),
            user_id: who.user_id.as_str().into(),
            tx,
            kill: self.shutdown.child_token(),
        };
        let registration = self.register(&who, &conn).await;
        self.takeover(&who, chat_id, &conn).await?;
        let chat_id = chat_id.trim().to_string();
        let transcript = self.history_of(&chat_id, None, TRANSCRIPT).await?;
        let (end_tx, ended) = oneshot::channel();
        let engine = self.clone();
        let operator = Operator {
            id: who.user_id.clone(),
            name: who.name.clone(),
        };
        let span = tracing::info_span!("takeover", chat = %chat_id, operator = %who.user_id);
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                let _registration = registration;
                let end = engine.hold(&who, &chat_id, &conn, actions).await;
                if end == TakeoverEnd::Released
                    && let Err(err) = engine.release(&who, &chat_id).await
                {
                    tracing::debug!(error = %err, "chat was no longer held at release");
                }
                let _ = end_tx.send(end);
            },
            span,
        ));
        Ok(Takeover {
            operator,
            transcript,
            events,
            ended,
        })
    }

    /// The takeover's loop: the operator's actions, lease renewal, shutdown.
    async fn hold<S>(
        self: &Arc<Self>,
        who: &Principal,
        chat_id: &str,
        conn: &Conn,
        mut actions: S,
    ) -> TakeoverEnd
    where
        S: Stream<Item = OperatorAction> + Send + Unpin,
    {
        let every = self.operator_lease().max(std::time::Duration::from_secs(1)) / 3;
        let mut renew = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = conn.kill.cancelled() => return TakeoverEnd::ShuttingDown,
                _ = renew.tick() => {
                    if !self.renew_operator(who, &[chat_id.to_string()]).await.is_empty() {
                        return TakeoverEnd::LeaseLost;
                    }
                }
                action = actions.next() => match action {
                    None | Some(OperatorAction::Release) => return TakeoverEnd::Released,
                    Some(OperatorAction::Message { content, client_message_id }) => {
                        let frame_id = Some(client_message_id.clone());
                        let message = SendMessage {
                            chat_id: Some(chat_id.to_string()),
                            content,
                            client_message_id,
                            ..SendMessage::default()
                        };
                        if let Err(err) = self.send_message(who, message, Some(conn)).await {
                            conn.push(Outgoing::error(err, frame_id));
                        }
                    }
                },
            }
        }
    }
}
