//! One WebSocket <-> one gRPC `ChatService.Connect` stream. The bridge is the connection's
//! only owner: a `select!` loop over browser frames, core events, the heartbeat and shutdown.
//! It keeps no chat state; everything it forwards is translated by [`crate::frames`].
//!
//! The loop is generic over the socket (`Stream` + `Sink` of axum messages), so it is driven
//! by real sockets in production and end-to-end tests alike. Frames to the browser go through
//! the socket's [`crate::outbox`] (bounded, with a send deadline); the loop never waits on the
//! socket's write side.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::Message;
use chat_proto::limits::{self, close, code};
use chat_proto::pb::chat::{self as pb, server_event::Event as Out};
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, Stream, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::{Instant, Interval};

use crate::EdgeState;
use crate::frames::{self, Limits};
use crate::outbox::{Ended, Outbox, QueueLimits};
use crate::upstream::{self, Refused};

/// Events buffered from the browser towards the core.
const TO_CORE_BUFFER: usize = 64;

/// What the upgrade learned about the caller before the socket opened.
pub enum Admission {
    /// A valid token (checked at the edge; the core checks again).
    Token(String),
    /// No token, or one that failed validation.
    Refused,
    /// The edge is at its connection limit.
    Full,
}

/// What the client asked for in the upgrade's query, besides its token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `?batch=<ms>`: frames coalesced into seed 001's `batch` frames, at most one per window.
    pub batch: Option<Duration>,
}

impl SocketOptions {
    /// The shortest and longest batch windows, in milliseconds.
    pub const BATCH_MS: std::ops::RangeInclusive<u64> = 10..=1000;

    /// From the upgrade's query; the error says what `batch` must be.
    pub fn from_query(
        query: &std::collections::HashMap<String, String>,
    ) -> Result<Self, &'static str> {
        let batch = match query.get("batch") {
            None => None,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(ms) if Self::BATCH_MS.contains(&ms) => Some(Duration::from_millis(ms)),
                _ => return Err("batch must be a number of milliseconds from 10 to 1000"),
            },
        };
        Ok(Self { batch })
    }
}

/// Counts a live connection for the edge's limit and health figures while it lives.
pub(crate) struct Live(Arc<EdgeState>);

impl Live {
    pub(crate) fn new(state: Arc<EdgeState>) -> Self {
        let live = state.connections.load(Ordering::Relaxed);
        metrics::gauge!("chat_edge_connections").set(live as f64);
        Self(state)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let before = self.0.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("chat_edge_connections").set(before.saturating_sub(1) as f64);
    }
}

/// The limits of one socket, as the core announced them in its `session` event (the first
/// event of every stream, sent again after an `auth`). The core's settings are the only
/// source: the edge has no frame size or heartbeat of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketLimits {
    /// Larger text or binary frames close the socket with 1009; at most
    /// [`limits::FRAME_BYTES_CEILING`], which the WebSocket codec enforces before the
    /// announcement arrives.
    pub max_frame_bytes: usize,
    /// Ping interval; a peer silent for two intervals is dropped with 1001.
    pub heartbeat: Duration,
}

impl SocketLimits {
    /// What `session` announces; the protocol's defaults stand in for a value a broken core
    /// left unset (0), so a socket never runs unbounded or pings in a busy loop.
    pub fn announced(session: &pb::Session) -> Self {
        let frame = session
            .limits
            .map(|l| l.max_frame_bytes)
            .filter(|bytes| *bytes > 0)
            .unwrap_or(limits::MAX_FRAME_BYTES)
            .min(limits::FRAME_BYTES_CEILING);
        let heartbeat = u64::try_from(session.heartbeat_interval_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .unwrap_or(limits::HEARTBEAT_INTERVAL_MS);
        Self {
            max_frame_bytes: frame as usize,
            heartbeat: Duration::from_millis(heartbeat),
        }
    }

    fn ticker(&self) -> Interval {
        tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat)
    }
}

/// Why a socket is closed when it cannot take its frames: 1013 (try again later) rather than
/// 1008, because a slow network is not a policy violation and the page reconnects and resumes
/// on 1013, while 1008 tells it to stop (authentication).
const SLOW: (u16, &str) = (close::TRY_AGAIN_LATER, "Too slow: frames were not read");

/// Serves one socket until either side ends it.
///
/// Not an `async fn` itself: the arguments of one are kept in its state for its whole life,
/// and the socket is 368 bytes; split first, its halves are a pointer each.
pub fn serve<S>(
    state: Arc<EdgeState>,
    socket: S,
    admission: Admission,
    options: SocketOptions,
) -> impl Future<Output = ()> + Send + 'static
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin + Send + 'static,
{
    let (sink, socket) = socket.split();
    run(state, sink, socket, admission, options)
}

async fn run<S>(
    state: Arc<EdgeState>,
    sink: SplitSink<S, Message>,
    mut socket: SplitStream<S>,
    admission: Admission,
    options: SocketOptions,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin + Send + 'static,
{
    let _live = Live::new(state.clone());
    let limits = &state.settings.limits;
    let mut outbox = Outbox::start(
        sink,
        QueueLimits {
            frames: limits.send_queue_frames,
            bytes: limits.send_queue_bytes,
            send_timeout: limits.send_timeout(),
            batch: options.batch,
        },
        state.queued.clone(),
    );
    let grace = limits.send_timeout();
    let token = match admission {
        Admission::Token(token) => token,
        Admission::Refused => return Box::pin(UNAUTHENTICATED.send(outbox, grace)).await,
        Admission::Full => {
            return Box::pin(TOO_MANY_CONNECTIONS.send(outbox, grace)).await;
        }
    };

    // Open the core stream, on the best core; its first event is `session`. Boxed, as are the
    // closing paths: this task lives as long as its socket, idle or not, and holds the state of
    // its largest await for all that time.
    let upstream::Connected {
        to_core,
        mut from_core,
        guard,
    } = match Box::pin(state.upstream.connect(&token, TO_CORE_BUFFER)).await {
        Ok(connected) => connected,
        // One boxed await: the connect's result is then kept in this task's state only while
        // the refusal is written, not beside the loop's state for the socket's whole life.
        Err(refused) => return Box::pin(refuse(outbox, refused, grace)).await,
    };

    let mut gate = FrameGate::new(limits.frames_per_minute, limits.abuse_strikes);
    // Until the core's `session` arrives the socket is neither read nor pinged: its limits
    // are not known yet (`announced` is false and `socket_limits` a placeholder).
    let mut announced = false;
    let mut socket_limits = SocketLimits::announced(&pb::Session::default());
    let mut ticker = socket_limits.ticker();
    let mut last_seen = Instant::now();
    let mut log = SocketLog::default();

    // Every frame to the browser is queued, never written here: a socket whose queue has no
    // room within `limits.send_timeout_ms`, or that does not take a frame within it, is closed
    // with 1013.
    //
    // Each wake-up is decided inside the `select!` without awaiting and acted on after it: a
    // branch that awaited would keep the `select!`'s output (a whole `ServerEvent`, or the
    // socket's frame) in this task's state, which every socket holds for as long as it lives.
    let (close_code, reason) = loop {
        let step = tokio::select! {
            () = state.shutdown.cancelled() => Step::Close(close::RESTART, "Server restarting"),
            ended = outbox.stopped() => match ended {
                Ended::Stalled => Step::Close(SLOW.0, SLOW.1),
                Ended::Broken | Ended::Flushed => Step::Gone(None, "connection lost"),
            },
            _ = ticker.tick(), if announced => {
                if last_seen.elapsed() > socket_limits.heartbeat * 2 {
                    Step::Close(close::GOING_AWAY, "Heartbeat timeout")
                } else {
                    Step::Ping
                }
            }
            incoming = socket.next(), if announced => {
                last_seen = Instant::now();
                from_client(incoming, socket_limits.max_frame_bytes, &mut gate, &log)
            }
            event = from_core.next() => match event {
                Some(Ok(event)) => {
                    if let Some(Out::Session(session)) = &event.event {
                        let now = SocketLimits::announced(session);
                        if !announced || now.heartbeat != socket_limits.heartbeat {
                            ticker = now.ticker();
                        }
                        if !announced {
                            // The socket is listened to only from now on.
                            last_seen = Instant::now();
                            announced = true;
                            log.connected(session);
                        }
                        socket_limits = now;
                    }
                    let closing = match &event.event {
                        Some(Out::Error(e)) => e.close_code,
                        _ => None,
                    };
                    metrics::counter!("chat_edge_frames_out_total").increment(1);
                    let frame = frames::encode_server_event(&event);
                    match closing {
                        None => Step::Send(frame),
                        Some(requested) => Step::SendThenClose(
                            frame,
                            u16::try_from(requested).unwrap_or(close::POLICY),
                            "Closed by server",
                        ),
                    }
                }
                // The core ended the stream (restart, or this connection was too slow):
                // the client reconnects and resumes from its last seq, on a serving core.
                Some(Err(_)) => {
                    guard.failed();
                    Step::Close(close::RESTART, "Reconnect and resume")
                }
                None => Step::Close(close::RESTART, "Reconnect and resume"),
            },
        };
        match step {
            Step::Continue => {}
            Step::Close(code, reason) => break (code, reason),
            Step::Gone(code, reason) => return log.closed(code, reason),
            Step::Ping => {
                if outbox
                    .push(Message::Ping(Default::default()))
                    .await
                    .is_err()
                {
                    break SLOW;
                }
            }
            Step::Send(frame) => {
                if outbox.text(frame).await.is_err() {
                    break SLOW;
                }
            }
            Step::SendThenClose(frame, code, reason) => {
                if outbox.text(frame).await.is_err() {
                    break SLOW;
                }
                break (code, reason);
            }
            Step::TryThenClose(frame, code, reason) => {
                let _ = outbox.text(frame).await;
                break (code, reason);
            }
            Step::ToCore(event) => {
                if to_core.send(event).await.is_err() {
                    break (close::RESTART, "Server restarting");
                }
            }
        }
    };
    // Dropping the core stream here tells the core this connection is gone.
    drop(from_core);
    drop(to_core);
    drop(guard);
    let grace = if (close_code, reason) == SLOW {
        metrics::counter!("chat_edge_slow_sockets_closed_total").increment(1);
        tracing::debug!("closing a socket that does not read its frames");
        Duration::ZERO
    } else {
        grace
    };
    log.closed(Some(close_code), reason);
    close_with(outbox, close_code, reason, grace).await;
}

/// What one wake-up of a socket's loop does next (see [`serve`]).
enum Step {
    Continue,
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
    /// The socket is gone (or closed by its client, with the code it sent): nothing to send.
    Gone(Option<u16>, &'static str),
    Ping,
    Send(String),
    /// Send the frame, then close (the core asked to close with it).
    SendThenClose(String, u16, &'static str),
    /// Send the frame if there is room, and close either way.
    TryThenClose(String, u16, &'static str),
    ToCore(Box<pb::ClientEvent>),
}

/// What a frame from the browser (or its socket ending) calls for: checked against the
/// socket's frame size and rate, and decoded for the core.
fn from_client(
    incoming: Option<Result<Message, axum::Error>>,
    max_frame_bytes: usize,
    gate: &mut FrameGate,
    log: &SocketLog,
) -> Step {
    let text = match incoming {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Binary(bytes))) => {
            if bytes.len() > max_frame_bytes {
                return Step::Close(close::TOO_BIG, "Frame too large");
            }
            let frame = frames::error_frame(
                code::INVALID,
                "Binary frames are not supported",
                false,
                None,
                None,
            );
            return Step::Send(frame);
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Step::Continue,
        Some(Ok(Message::Close(frame))) => {
            return Step::Gone(frame.map(|f| f.code), "closed by client");
        }
        None => return Step::Gone(None, "connection lost"),
        Some(Err(err)) => {
            if is_too_big(err) {
                return Step::Close(close::TOO_BIG, "Frame too large");
            }
            return Step::Gone(None, "connection lost");
        }
    };
    if text.len() > max_frame_bytes {
        return Step::Close(close::TOO_BIG, "Frame too large");
    }
    match gate.check() {
        Verdict::Pass => {}
        Verdict::Limited(wait) => {
            if gate.strikes() == 1 {
                // Once per run of refusals, not once per frame.
                tracing::info!(user = %log.user, conn = %log.conn, limit = "frames", retry_after_ms = wait.as_millis() as u64, "rate limit hit");
            }
            metrics::counter!("chat_edge_rejected_frames_total", "code" => code::RATE_LIMITED.to_string()).increment(1);
            return Step::Send(rate_limited(wait));
        }
        Verdict::Abuse => {
            let frame = frames::error_frame(
                code::RATE_LIMITED,
                "Too many frames: closing",
                false,
                None,
                None,
            );
            return Step::TryThenClose(frame, close::POLICY, "Rate limit abuse");
        }
    }
    metrics::counter!("chat_edge_frames_in_total").increment(1);
    match frames::decode_client_frame(text.as_str(), &Limits::PROTOCOL) {
        Ok(event) => Step::ToCore(Box::new(event)),
        Err(err) => {
            metrics::counter!("chat_edge_rejected_frames_total", "code" => err.code.to_string())
                .increment(1);
            Step::Send(err.into_frame())
        }
    }
}

/// The operator's view of one socket: a line when the core accepts it, and one when it closes
/// with the close code and how long it lived. Ids only, never a token or a frame.
#[derive(Default)]
struct SocketLog {
    user: String,
    conn: String,
    opened: Option<Instant>,
}

impl SocketLog {
    fn connected(&mut self, session: &pb::Session) {
        self.user.clone_from(&session.user_id);
        self.conn.clone_from(&session.connection_id);
        self.opened = Some(Instant::now());
        tracing::info!(user = %self.user, conn = %self.conn, "socket connected");
    }

    /// `code`: the close code sent or received (`None`: the connection was lost).
    fn closed(&self, code: Option<u16>, reason: &str) {
        if let Some(opened) = self.opened {
            tracing::info!(
                user = %self.user,
                conn = %self.conn,
                close_code = code,
                reason,
                duration_ms = opened.elapsed().as_millis() as u64,
                "socket closed"
            );
        }
    }
}

/// The core refused the socket or could not be reached: say so, then close.
async fn refuse(outbox: Outbox, refused: Refused, grace: Duration) {
    let refusal = match refused {
        Refused::Unauthenticated => UNAUTHENTICATED,
        Refused::Unavailable(code) => {
            tracing::warn!(?code, "core refused or unreachable");
            UNAVAILABLE
        }
    };
    refusal.send(outbox, grace).await;
}

/// Error 401 "Authentication failed", then close 1008.
const UNAUTHENTICATED: Refusal = Refusal {
    code: code::UNAUTHENTICATED,
    message: "Authentication failed",
    retryable: false,
    close: close::POLICY,
    reason: "Authentication failed",
};

/// Error 503, then close 1013: the core refused or could not be reached.
const UNAVAILABLE: Refusal = Refusal {
    code: code::UNAVAILABLE,
    message: "Service unavailable, try again later",
    retryable: true,
    close: close::TRY_AGAIN_LATER,
    reason: "Service unavailable",
};

/// Error 503, then close 1013: the edge is at `limits.max_connections`.
const TOO_MANY_CONNECTIONS: Refusal = Refusal {
    code: code::UNAVAILABLE,
    message: "Too many connections",
    retryable: true,
    close: close::TRY_AGAIN_LATER,
    reason: "Too many connections",
};

/// A socket turned away: the error frame it is sent, then the close.
struct Refusal {
    code: u32,
    message: &'static str,
    retryable: bool,
    close: u16,
    /// The close frame's reason.
    reason: &'static str,
}

impl Refusal {
    /// The error frame (if there is room for it), then the close frame (within `grace`).
    async fn send(self, outbox: Outbox, grace: Duration) {
        let frame = frames::error_frame(self.code, self.message, self.retryable, None, None);
        let _ = outbox.text(frame).await;
        close_with(outbox, self.close, self.reason, grace).await;
    }
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

    /// Frames refused in a row so far.
    pub fn strikes(&self) -> u32 {
        self.strikes
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
            code: code::RATE_LIMITED,
            message: "Rate limit exceeded".into(),
            retryable: true,
            retry_after_ms: Some(wait.as_millis().max(1) as i64),
            ..Default::default()
        })),
        ..Default::default()
    };
    frames::encode_server_event(&event)
}

/// Whether a read failed because the frame exceeded the codec's ceiling.
fn is_too_big(err: axum::Error) -> bool {
    let inner = err.into_inner();
    matches!(
        inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

/// Counts the close, then sends the close frame after what is queued (see [`Outbox::close`]).
/// The close runs boxed, so its state is not part of every socket's task.
async fn close_with(outbox: Outbox, code: u16, reason: &str, grace: Duration) {
    metrics::counter!("chat_edge_closes_total", "code" => code.to_string()).increment(1);
    Box::pin(outbox.close(code, reason, grace)).await;
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
    fn a_socket_takes_its_limits_from_the_session_the_core_announced() {
        let session = |frame: u32, heartbeat: i64| pb::Session {
            heartbeat_interval_ms: heartbeat,
            limits: Some(pb::Limits {
                max_message_chars: 10,
                max_frame_bytes: frame,
            }),
            ..Default::default()
        };
        assert_eq!(
            SocketLimits::announced(&session(2048, 1500)),
            SocketLimits {
                max_frame_bytes: 2048,
                heartbeat: Duration::from_millis(1500),
            }
        );
        let defaults = SocketLimits {
            max_frame_bytes: limits::MAX_FRAME_BYTES as usize,
            heartbeat: Duration::from_millis(limits::HEARTBEAT_INTERVAL_MS),
        };
        assert_eq!(
            SocketLimits::announced(&session(0, 0)),
            defaults,
            "unset values fall back"
        );
        assert_eq!(SocketLimits::announced(&pb::Session::default()), defaults);
        assert_eq!(
            SocketLimits::announced(&session(u32::MAX, -5)).max_frame_bytes,
            limits::FRAME_BYTES_CEILING as usize,
            "never above the codec's ceiling"
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

    /// The size of a future `f` returns, without making one.
    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every socket holds its task's whole state for as long as it lives: the largest of its
    /// awaits. The loop's wake-ups await nothing inside the `select!`, so no `ServerEvent` or
    /// client frame is kept in it, the socket is split before the task starts, and every
    /// refusal is one boxed await (3,240 bytes before, 1,256 after).
    #[test]
    fn a_socket_task_stays_small() {
        let bytes = future_size(serve::<axum::extract::ws::WebSocket>);
        assert!(bytes <= 1300, "a socket's task holds {bytes} bytes");
    }
}
