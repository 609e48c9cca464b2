//! One WebSocket <-> one gRPC `ChatService.Connect` stream. The bridge is the connection's
//! only owner: a `select!` loop over browser frames, core events, the heartbeat and shutdown.
//! It keeps no chat state; everything it forwards is translated by [`crate::frames`].
//!
//! The loop is generic over the socket (`Stream` + `Sink` of axum messages), so it is driven
//! by real sockets in production and end-to-end tests alike.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use chat_proto::pb::chat::{self as pb, server_event::Event as Out};
use futures::{Sink, SinkExt, Stream, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::EdgeState;
use crate::frames::{self, Limits};

/// Events buffered from the browser towards the core.
const TO_CORE_BUFFER: usize = 64;

/// WebSocket close codes of docs/protocol.md.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What the upgrade learned about the caller before the socket opened.
pub enum Admission {
    /// A valid token (checked at the edge; the core checks again).
    Token(String),
    /// No token, or one that failed validation.
    Refused,
    /// The edge is at its connection limit.
    Full,
}

/// Counts a live connection for the edge's limit and health figures while it lives.
struct Live(Arc<EdgeState>);

impl Live {
    fn new(state: Arc<EdgeState>) -> Self {
        let live = state.connections.load(std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("chat_edge_connections").set(live as f64);
        Self(state)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let before = self
            .0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("chat_edge_connections").set(before.saturating_sub(1) as f64);
    }
}

/// Serves one socket until either side ends it.
pub async fn serve<S>(state: Arc<EdgeState>, mut socket: S, admission: Admission)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin + Send,
{
    let _live = Live::new(state.clone());
    let token = match admission {
        Admission::Token(token) => token,
        Admission::Refused => {
            let frame = frames::error_frame(401, "Authentication failed", false, None, None);
            let _ = socket.send(Message::Text(frame.into())).await;
            return close_with(&mut socket, close::POLICY, "Authentication failed").await;
        }
        Admission::Full => {
            let frame = frames::error_frame(503, "Too many connections", true, None, None);
            let _ = socket.send(Message::Text(frame.into())).await;
            return close_with(&mut socket, close::TRY_AGAIN_LATER, "Too many connections").await;
        }
    };

    // Open the core stream; its first event is `session`.
    // Boxed: tokio allocates a channel's first 32-slot block up front, and an idle socket
    // should pay for pointers, not for 32 events.
    let (to_core, rx) = mpsc::channel::<Box<pb::ClientEvent>>(TO_CORE_BUFFER);
    let mut request = tonic::Request::new(ReceiverStream::new(rx).map(|ev| *ev));
    match format!("Bearer {token}").parse() {
        Ok(value) => {
            request.metadata_mut().insert("authorization", value);
        }
        Err(_) => {
            let frame = frames::error_frame(401, "Authentication failed", false, None, None);
            let _ = socket.send(Message::Text(frame.into())).await;
            return close_with(&mut socket, close::POLICY, "Authentication failed").await;
        }
    }
    let mut from_core = match state.upstream.chat().connect(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            let frame = frames::error_frame(401, "Authentication failed", false, None, None);
            let _ = socket.send(Message::Text(frame.into())).await;
            return close_with(&mut socket, close::POLICY, "Authentication failed").await;
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), "core refused or unreachable");
            let frame = frames::error_frame(
                503,
                "Service unavailable, try again later",
                true,
                None,
                None,
            );
            let _ = socket.send(Message::Text(frame.into())).await;
            return close_with(&mut socket, close::TRY_AGAIN_LATER, "Service unavailable").await;
        }
    };

    let limits = Limits::default();
    let mut gate = FrameGate::new(
        state.settings.limits.frames_per_minute,
        state.settings.limits.abuse_strikes,
    );
    let heartbeat = Duration::from_millis(state.settings.limits.heartbeat_interval_ms);
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut last_seen = Instant::now();

    let (code, reason) = loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break (close::RESTART, "Server restarting"),
            _ = ticker.tick() => {
                if last_seen.elapsed() > heartbeat * 2 {
                    break (close::GOING_AWAY, "Heartbeat timeout");
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            incoming = socket.next() => {
                last_seen = Instant::now();
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let frame = frames::error_frame(400, "Binary frames are not supported", false, None, None);
                        if socket.send(Message::Text(frame.into())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(err)) => {
                        if is_too_big(err) {
                            break (close::TOO_BIG, "Frame too large");
                        }
                        return;
                    }
                };
                if text.len() > state.settings.limits.max_frame_bytes {
                    break (close::TOO_BIG, "Frame too large");
                }
                match gate.check() {
                    Verdict::Pass => {}
                    Verdict::Limited(wait) => {
                        metrics::counter!("chat_edge_rejected_frames_total", "code" => "429").increment(1);
                        if socket.send(Message::Text(rate_limited(wait).into())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Verdict::Abuse => {
                        let frame = frames::error_frame(429, "Too many frames: closing", false, None, None);
                        let _ = socket.send(Message::Text(frame.into())).await;
                        break (close::POLICY, "Rate limit abuse");
                    }
                }
                metrics::counter!("chat_edge_frames_in_total").increment(1);
                match frames::decode_client_frame(text.as_str(), &limits) {
                    Ok(event) => {
                        if to_core.send(Box::new(event)).await.is_err() {
                            break (close::RESTART, "Server restarting");
                        }
                    }
                    Err(err) => {
                        metrics::counter!("chat_edge_rejected_frames_total", "code" => err.code.to_string()).increment(1);
                        if socket.send(Message::Text(err.into_frame().into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            event = from_core.next() => match event {
                Some(Ok(event)) => {
                    let closing = match &event.event {
                        Some(Out::Error(e)) => e.close_code,
                        _ => None,
                    };
                    metrics::counter!("chat_edge_frames_out_total").increment(1);
                    if socket.send(Message::Text(frames::encode_server_event(&event).into())).await.is_err() {
                        return;
                    }
                    if let Some(code) = closing {
                        let code = u16::try_from(code).unwrap_or(close::POLICY);
                        break (code, "Closed by server");
                    }
                }
                // The core ended the stream (restart, or this connection was too slow):
                // the client reconnects and resumes from its last seq.
                Some(Err(_)) | None => break (close::RESTART, "Reconnect and resume"),
            },
        }
    };
    close_with(&mut socket, code, reason).await;
}

/// The per-connection frame budget, and the line between a burst and abuse.
pub struct FrameGate<C: Clock + Clone = DefaultClock> {
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>,
    clock: C,
    strikes: u32,
    abuse_strikes: u32,
}

/// What to do with one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Refuse it with 429 and this wait.
    Limited(Duration),
    /// Refused too many times in a row: close with 1008.
    Abuse,
}

impl FrameGate<DefaultClock> {
    pub fn new(per_minute: u32, abuse_strikes: u32) -> Self {
        Self::with_clock(per_minute, abuse_strikes, DefaultClock::default())
    }
}

impl<C: Clock + Clone> FrameGate<C> {
    pub fn with_clock(per_minute: u32, abuse_strikes: u32, clock: C) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            strikes: 0,
            abuse_strikes,
        }
    }

    pub fn check(&mut self) -> Verdict {
        match self.limiter.check() {
            Ok(()) => {
                self.strikes = 0;
                Verdict::Pass
            }
            Err(not_until) => {
                self.strikes += 1;
                if self.strikes >= self.abuse_strikes {
                    Verdict::Abuse
                } else {
                    Verdict::Limited(not_until.wait_time_from(self.clock.now()))
                }
            }
        }
    }
}

fn rate_limited(wait: Duration) -> String {
    let event = pb::ServerEvent {
        event: Some(Out::Error(pb::Error {
            code: 429,
            message: "Rate limit exceeded".into(),
            retryable: true,
            retry_after_ms: Some(wait.as_millis().max(1) as i64),
            ..Default::default()
        })),
        ..Default::default()
    };
    frames::encode_server_event(&event)
}

/// Whether a read failed because the frame exceeded the configured size.
fn is_too_big(err: axum::Error) -> bool {
    let inner = err.into_inner();
    matches!(
        inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

async fn close_with<S>(socket: &mut S, code: u16, reason: &str)
where
    S: Sink<Message> + Unpin,
{
    metrics::counter!("chat_edge_closes_total", "code" => code.to_string()).increment(1);
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    let _ = socket.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_gate_refills_with_time_and_closes_on_sustained_abuse() {
        let clock = governor::clock::FakeRelativeClock::default();
        let mut gate = FrameGate::with_clock(6, 3, clock.clone());
        for _ in 0..6 {
            assert_eq!(gate.check(), Verdict::Pass);
        }
        assert_eq!(gate.check(), Verdict::Limited(Duration::from_secs(10)));
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            gate.check(),
            Verdict::Pass,
            "one frame per 10 s refills, and strikes reset"
        );
        assert!(matches!(gate.check(), Verdict::Limited(_)));
        assert!(matches!(gate.check(), Verdict::Limited(_)));
        assert_eq!(
            gate.check(),
            Verdict::Abuse,
            "the third refusal in a row is abuse"
        );
    }

    #[test]
    fn rate_limited_frames_carry_a_retry_time() {
        let frame: serde_json::Value =
            serde_json::from_str(&rate_limited(Duration::from_millis(1500))).unwrap_or_default();
        assert_eq!(frame["data"]["code"], 429);
        assert_eq!(frame["data"]["retryAfterMs"], 1500);
        assert_eq!(frame["data"]["retryable"], true);
    }
}
