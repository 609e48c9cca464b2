//! [`LlmError`]: why a reply could not be produced or was cut short, and which of those a
//! retry may cure.

use std::time::Duration;

/// Why a reply could not be produced or was cut short.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// The request could not be sent or the connection broke (retryable before the first token).
    #[error("could not reach the model provider: {0}")]
    Connect(String),
    /// The provider answered with a non-2xx status.
    #[error("model provider answered {status}: {message}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The provider's stream could not be understood.
    #[error("unexpected data from the model provider: {0}")]
    Protocol(String),
    /// The provider reported an error inside the stream.
    #[error("the model provider reported an error: {0}")]
    Upstream(String),
    /// No text arrived within `first_token_timeout_ms` of sending the request.
    #[error("the model did not start answering in time")]
    FirstTokenTimeout,
    /// The stream went silent for `idle_timeout_ms`.
    #[error("the model stopped answering mid-reply")]
    IdleTimeout,
    /// The model id is not in the catalogue.
    #[error("unknown model \"{0}\"")]
    UnknownModel(String),
    /// Asked to continue a reply (it ends with the assistant's text so far), which this
    /// provider cannot do (Dify keeps the conversation itself).
    #[error("the provider cannot continue a reply")]
    CannotContinue,
}

impl LlmError {
    /// Whether another attempt may succeed: connect errors, 429, 5xx except 501, and a
    /// first-token timeout.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Connect(_) | LlmError::FirstTokenTimeout => true,
            LlmError::Status { status, .. } => {
                *status == 429 || (*status >= 500 && *status != 501 && *status < 600)
            }
            LlmError::Protocol(_)
            | LlmError::Upstream(_)
            | LlmError::IdleTimeout
            | LlmError::UnknownModel(_)
            | LlmError::CannotContinue => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Connect(_) => "connect",
            LlmError::Status { status: 429, .. } => "rate_limited",
            LlmError::Status { status, .. } if *status >= 500 => "server_error",
            LlmError::Status { .. } => "client_error",
            LlmError::Protocol(_) => "protocol",
            LlmError::Upstream(_) => "upstream",
            LlmError::FirstTokenTimeout => "first_token_timeout",
            LlmError::IdleTimeout => "idle_timeout",
            LlmError::UnknownModel(_) => "unknown_model",
            LlmError::CannotContinue => "cannot_continue",
        }
    }

    /// The HTTP status the provider answered, for logs.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            LlmError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
