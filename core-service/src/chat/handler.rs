//! One connection: the [`Handler`] owns the connection's identity and outbox, reads client
//! commands one at a time and hands each to the [`Engine`] method that performs it. Live
//! events of joined chats reach the same outbox through [`Rooms`](super::rooms::Rooms).
//!
//! The loop ends when the client's stream ends (the peer left), when the connection is
//! cancelled (too slow, shutting down) or when its token expires without an in-band refresh.
//! Ending drops the connection's [`Registration`](super::engine::Registration), which
//! unregisters it and so drops every sender of the outbox, ending the response stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_auth::Principal;
use futures::{Stream, StreamExt};

use super::command::{Command, Inbound};
use super::engine::Engine;
use super::error::ChatError;
use super::event::{Event, Outgoing};
use super::rooms::Conn;
use super::validate::MAX_ID_CHARS;

pub struct Handler {
    engine: Arc<Engine>,
    who: Principal,
    conn: Conn,
    /// Chats this (operator) connection holds; their leases are renewed while it lives.
    held: HashSet<String>,
}

impl Handler {
    pub fn new(engine: Arc<Engine>, who: Principal, conn: Conn) -> Self {
        Self {
            engine,
            who,
            conn,
            held: HashSet::new(),
        }
    }

    /// Runs until the peer leaves, the connection is cancelled or its token expires.
    ///
    /// An `async` block rather than an `async fn`: an `async fn` taking `mut self` keeps the
    /// argument and its moved copy in its state, and every idle connection holds that state.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would keep `self` twice (above)"
    )]
    pub fn run<S>(mut self, mut inbound: S) -> impl Future<Output = ()> + Send
    where
        S: Stream<Item = Inbound> + Unpin + Send,
    {
        async move {
            // The start and each command run as boxed futures: the task's own state is then
            // only what an idle connection waits on (a few hundred bytes), not the largest
            // command's state machine (7 KiB), which every idle socket would otherwise hold.
            let _registration = match Box::pin(self.engine.open(&self.who, &self.conn)).await {
                Ok((registration, session)) => {
                    self.conn.push(session);
                    registration
                }
                Err(err) => {
                    self.conn.push(Outgoing::error(err, None));
                    return;
                }
            };
            // Renew held leases well before they run out.
            let renew_every = self.engine.operator_lease().max(Duration::from_secs(1)) / 3;
            let mut renew = tokio::time::interval(renew_every);
            loop {
                let expires_in = token_remaining(self.who.expires_at);
                // Decided inside the `select!`, acted on after it: awaiting inside a branch
                // would keep the `select!`'s output (a whole frame) in the task's state.
                let wake = tokio::select! {
                    () = self.conn.kill.cancelled() => Wake::End,
                    _ = renew.tick(), if !self.held.is_empty() => Wake::Renew,
                    () = tokio::time::sleep(expires_in) => {
                        self.conn.push(Outgoing::error(ChatError::TokenExpired, None));
                        Wake::End
                    }
                    frame = inbound.next() => frame.map_or(Wake::End, Wake::Frame),
                };
                match wake {
                    Wake::End => break,
                    Wake::Renew => {
                        let held: Vec<String> = self.held.iter().cloned().collect();
                        for lost in Box::pin(self.engine.renew_operator(&self.who, &held)).await {
                            self.held.remove(&lost);
                        }
                    }
                    Wake::Frame(frame) => {
                        if !Box::pin(self.dispatch(frame)).await {
                            break;
                        }
                    }
                }
            }
            tracing::debug!(conn = %self.conn.id, "connection closed");
        }
    }

    /// Performs one client command. Returns false when the connection must end.
    async fn dispatch(&mut self, frame: Inbound) -> bool {
        // The id an error answers: the frame's (or, for a message, the message's own); an
        // invalid one is not echoed back.
        let echoable = |id: &str| {
            Some(id.to_string()).filter(|m| !m.is_empty() && m.chars().count() <= MAX_ID_CHARS)
        };
        let frame_id = match &frame.command {
            Ok(Command::Send(msg)) => echoable(&msg.client_message_id),
            _ => echoable(&frame.frame_id),
        };
        let command = match frame.command {
            Ok(command) => command,
            Err(err) => {
                self.conn.push(Outgoing::error(err, frame_id));
                return true;
            }
        };
        let (engine, who, conn) = (&self.engine, &self.who, &self.conn);
        let result = match command {
            Command::Send(msg) => engine.send_message(who, msg, Some(conn)).await.map(|_| ()),
            Command::Ping { timestamp } => {
                conn.push(Outgoing::now(Event::Pong { timestamp }));
                Ok(())
            }
            Command::History(query) => engine.history(who, &query).await.map(|history| {
                conn.push(Outgoing::now(Event::History(history)));
            }),
            Command::Stop { chat_id } => engine.stop(who, &chat_id).await,
            Command::Chat(action) => engine.chat_action(who, action, conn).await,
            Command::Typing { chat_id, is_typing } => {
                engine.typing(who, &chat_id, is_typing, conn).await
            }
            Command::ReadReceipt {
                chat_id,
                message_ids,
            } => engine.read_receipt(who, &chat_id, &message_ids).await,
            Command::Presence(status) => engine.set_presence(who, status, conn).await,
            Command::Resume(chats) => engine.resume(who, &chats, conn).await,
            Command::HelpRequest { chat_id, reason } => {
                engine.help_request(who, &chat_id, reason.as_deref()).await
            }
            Command::Takeover { chat_id } => {
                let result = engine.takeover(who, &chat_id, conn).await;
                if result.is_ok() {
                    self.held.insert(chat_id.trim().to_string());
                }
                result
            }
            Command::Release { chat_id } => {
                let result = engine.release(who, &chat_id).await;
                self.held.remove(chat_id.trim());
                result
            }
            Command::Auth { token } => return self.reauthenticate(&token, frame_id).await,
        };
        if let Err(err) = result {
            self.conn.push(Outgoing::error(err, frame_id));
        }
        true
    }

    /// In-band token refresh. A bad token, or one for another user, ends the connection.
    async fn reauthenticate(&mut self, token: &str, frame_id: Option<String>) -> bool {
        match self.engine.verifier().verify(token) {
            Ok(who) if who.user_id == self.who.user_id => {
                self.who = who;
                let session = self.engine.session_event(&self.who, &self.conn.id).await;
                self.conn
                    .push(session.unwrap_or_else(|err| Outgoing::error(err, frame_id)));
                true
            }
            _ => {
                self.conn
                    .push(Outgoing::error(ChatError::Unauthenticated, frame_id));
                false
            }
        }
    }
}

/// What woke a connection's loop.
enum Wake {
    End,
    Renew,
    Frame(Inbound),
}

/// Time until a token's `exp` (zero when passed).
fn token_remaining(expires_at: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Duration::from_secs(expires_at.saturating_sub(now))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chat::testing;

    /// Every idle connection holds its task's whole state: the task must stay small (it was
    /// 7,200 bytes in a debug build before its commands were boxed, 904 after, 728 since
    /// nothing is awaited inside its `select!` and `self` is not kept twice).
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = Arc::new(testing::engine(&dir, Default::default(), 0).await);
        let (conn, _rx) = testing::conn(&engine, "alice");
        let handler = Handler::new(engine.clone(), testing::user("alice"), conn);
        let run = handler.run(futures::stream::empty::<Inbound>());
        let bytes = std::mem::size_of_val(&run);
        assert!(bytes <= 768, "a connection's task holds {bytes} bytes");
    }
}
