//! The protocol's numbers, written once: the bounds of `docs/protocol.md` that both the edge
//! (while decoding frames) and the core (while validating commands) enforce, the defaults of
//! the limits the core announces in `session`, and the error and close codes clients see.

/// Longest id a client may send (`messageId`, chat, user, model ids), in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Largest `message.context`, in bytes of compact JSON; larger is error 413.
pub const MAX_CONTEXT_BYTES: usize = 8192;
/// Largest user context document (REST and `SetUserContext`), in bytes of compact JSON;
/// larger is error 413.
pub const MAX_CONTEXT_DOCUMENT_BYTES: usize = 64 * 1024;
/// Most ids in one `read_receipt`.
pub const MAX_RECEIPT_IDS: usize = 100;
/// Largest page of `history` (and of the REST lists).
pub const MAX_PAGE: u32 = 100;
/// Page size when a client asks for none.
pub const DEFAULT_PAGE: u32 = 50;
/// Most chats in one `resume`.
pub const MAX_RESUME_CHATS: usize = 50;

/// Default longest message content, in characters (the core's `chat.max_message_chars`).
pub const MAX_MESSAGE_CHARS: u32 = 10_000;
/// Default largest WebSocket frame, in bytes (the core's `chat.max_frame_bytes`, announced as
/// `limits.maxFrameBytes`; the edge closes a socket that sends more with [`close::TOO_BIG`]).
pub const MAX_FRAME_BYTES: u32 = 65_536;
/// The most `chat.max_frame_bytes` may be set to. The edge configures its WebSocket codec with
/// this ceiling before the core has announced the socket's own limit, then checks every frame
/// against the announced one.
pub const FRAME_BYTES_CEILING: u32 = 1024 * 1024;
/// Default interval of WebSocket pings (the core's `chat.heartbeat_interval_ms`, announced as
/// `heartbeatIntervalMs`); a socket that answers none within two intervals is closed.
pub const HEARTBEAT_INTERVAL_MS: u64 = 30_000;

/// `error.code` values (the "Error codes" table of `docs/protocol.md`).
pub mod code {
    /// Invalid frame or field, binary frame, unknown model.
    pub const INVALID: u32 = 400;
    /// Authentication failed; the connection is closed with [`super::close::POLICY`].
    pub const UNAUTHENTICATED: u32 = 401;
    /// Forbidden: no access to the chat, admin-only frames.
    pub const FORBIDDEN: u32 = 403;
    /// No such chat or file.
    pub const NOT_FOUND: u32 = 404;
    /// Held by another operator, duplicate action.
    pub const CONFLICT: u32 = 409;
    /// Too large (`context` over [`super::MAX_CONTEXT_BYTES`], a long help reason).
    pub const TOO_LARGE: u32 = 413;
    /// Rate limited; `retryAfterMs` says when to try again.
    pub const RATE_LIMITED: u32 = 429;
    /// Internal error; details are logged, never sent.
    pub const INTERNAL: u32 = 500;
    /// The language model failed after retries.
    pub const LLM_FAILED: u32 = 502;
    /// Overloaded or shutting down.
    pub const UNAVAILABLE: u32 = 503;
}

/// WebSocket close codes (the "Close codes" table of `docs/protocol.md`).
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// Going away: the peer stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// Policy: authentication failed or expired, sustained abuse.
    pub const POLICY: u16 = 1008;
    /// A frame over `limits.maxFrameBytes`.
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Service restart: reconnect and `resume`.
    pub const RESTART: u16 = 1012;
    /// Try again later: a connection limit.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
