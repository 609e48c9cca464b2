//! The one error type of chat operations. Each variant names what the client sees: a protocol
//! error code (docs/protocol.md), whether retrying can help, and, for the few that end a
//! connection, the WebSocket close code. The gRPC adapter turns it into an `error` event on a
//! stream or a `tonic::Status` on a unary call, and logs internal causes there, once; the
//! client only ever sees "Internal error" for those.

use chat_proto::limits::{close, code};

use crate::storage::StorageError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatError {
    /// 400: a field is missing or invalid.
    #[error("{message}")]
    Invalid {
        message: String,
        field: Option<&'static str>,
    },
    /// 401, and the connection closes (1008): no valid token.
    #[error("Authentication failed")]
    Unauthenticated,
    /// 401, and the connection closes (1008): the token ran out without an in-band refresh.
    #[error("Token expired")]
    TokenExpired,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413: content or a field is larger than allowed.
    #[error("{message}")]
    TooLarge {
        message: String,
        field: Option<&'static str>,
    },
    /// 429 with the time until the next try may succeed.
    #[error("Rate limit exceeded")]
    RateLimited { retry_after_ms: i64 },
    /// 429, and the connection closes (1013): the user has too many connections.
    #[error("Too many connections for this user")]
    TooManyConnections,
    /// 502: the language model failed after every retry and fallback.
    #[error("The language model failed to answer")]
    ModelFailed,
    /// 503: shutting down or overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the cause is logged, never shown to the client.
    #[error("internal: {0}")]
    Internal(String),
}

impl ChatError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            field: Some(field),
        }
    }

    pub fn no_chat() -> Self {
        Self::NotFound("Chat not found".into())
    }

    pub fn access_denied() -> Self {
        Self::Forbidden("Access denied to chat".into())
    }

    /// The protocol code of docs/protocol.md.
    pub fn code(&self) -> u32 {
        match self {
            Self::Invalid { .. } => code::INVALID,
            Self::Unauthenticated | Self::TokenExpired => code::UNAUTHENTICATED,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::Conflict(_) => code::CONFLICT,
            Self::TooLarge { .. } => code::TOO_LARGE,
            Self::RateLimited { .. } | Self::TooManyConnections => code::RATE_LIMITED,
            Self::Internal(_) => code::INTERNAL,
            Self::ModelFailed => code::LLM_FAILED,
            Self::Unavailable(_) => code::UNAVAILABLE,
        }
    }

    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        matches!(
            self.code(),
            code::RATE_LIMITED | code::INTERNAL | code::LLM_FAILED | code::UNAVAILABLE
        )
    }

    /// The WebSocket close code that must follow this error, for the errors that end a
    /// connection.
    pub fn close_code(&self) -> Option<u32> {
        match self {
            Self::Unauthenticated | Self::TokenExpired => Some(u32::from(close::POLICY)),
            Self::TooManyConnections => Some(u32::from(close::TRY_AGAIN_LATER)),
            _ => None,
        }
    }

    /// The field a 400 or 413 blames.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { field, .. } | Self::TooLarge { field, .. } => *field,
            _ => None,
        }
    }

    /// What the client is told: the message, except for internal errors.
    pub fn client_message(&self) -> String {
        match self {
            Self::Internal(_) => "Internal error".to_string(),
            other => other.to_string(),
        }
    }
}

impl From<StorageError> for ChatError {
    /// A database that cannot be reached or used right now is 503 (retryable: the client
    /// resends and nothing was stored); anything else is an internal error.
    fn from(err: StorageError) -> Self {
        if err.is_unavailable() {
            Self::Unavailable("The database is unavailable; try again shortly".into())
        } else {
            Self::Internal(format!("storage: {err}"))
        }
    }
}
