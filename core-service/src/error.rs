//! The one error type of chat operations. Each variant says what the client sees: a protocol
//! error code (docs/protocol.md) on the stream, a gRPC status on unary calls. Internal causes
//! are logged once, here, and the client sees only "Internal error".

use chat_proto::pb::chat as pb;

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// 400: a field is missing or invalid.
    #[error("{message}")]
    Invalid {
        message: String,
        field: Option<&'static str>,
    },
    /// 401: no valid token.
    #[error("Authentication failed")]
    Unauthenticated,
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
    /// 429.
    #[error("Rate limit exceeded")]
    RateLimited { retry_after_ms: i64 },
    /// 503: shutting down or overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// 500: never shown to the client beyond "Internal error".
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
            Self::Invalid { .. } => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::TooLarge { .. } => 413,
            Self::RateLimited { .. } => 429,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }

    /// The `error` event for a stream. `message_id` is the client frame it answers.
    pub fn into_event(self, message_id: Option<String>) -> pb::ServerEvent {
        metrics::counter!("chat_core_errors_total", "code" => self.code().to_string()).increment(1);
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %cause, "internal error");
        }
        let code = self.code();
        let (field, retry_after_ms) = match &self {
            Self::Invalid { field, .. } | Self::TooLarge { field, .. } => {
                (field.map(String::from), None)
            }
            Self::RateLimited { retry_after_ms } => (None, Some(*retry_after_ms)),
            _ => (None, None),
        };
        let message = match &self {
            Self::Internal(_) => "Internal error".to_string(),
            other => other.to_string(),
        };
        let close_code = matches!(self, Self::Unauthenticated).then_some(1008);
        crate::chat::event(pb::server_event::Event::Error(pb::Error {
            code,
            message,
            retryable: matches!(code, 429 | 500 | 503),
            retry_after_ms,
            message_id: message_id.filter(|m| !m.is_empty()),
            field,
            close_code,
        }))
    }
}

impl From<StorageError> for ChatError {
    fn from(err: StorageError) -> Self {
        Self::Internal(format!("storage: {err}"))
    }
}

impl From<ChatError> for tonic::Status {
    fn from(err: ChatError) -> Self {
        use tonic::Code;
        metrics::counter!("chat_core_errors_total", "code" => err.code().to_string()).increment(1);
        let code = match &err {
            ChatError::Invalid { .. } | ChatError::TooLarge { .. } => Code::InvalidArgument,
            ChatError::Unauthenticated => Code::Unauthenticated,
            ChatError::Forbidden(_) => Code::PermissionDenied,
            ChatError::NotFound(_) => Code::NotFound,
            ChatError::Conflict(_) => Code::AlreadyExists,
            ChatError::RateLimited { .. } => Code::ResourceExhausted,
            ChatError::Unavailable(_) => Code::Unavailable,
            ChatError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                return tonic::Status::internal("Internal error");
            }
        };
        let mut status = tonic::Status::new(code, err.to_string());
        if let ChatError::Invalid { field: Some(f), .. }
        | ChatError::TooLarge { field: Some(f), .. } = &err
            && let Ok(v) = f.parse()
        {
            status.metadata_mut().insert("x-field", v);
        }
        status
    }
}
