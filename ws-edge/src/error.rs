//! REST errors: one enum, rendered in one place as `{"error": {"code", "message", "field"?}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Authentication failed")]
    Unauthenticated,
    #[error("{0}")]
    BadRequest(String),
    /// A 400 that names the offending parameter in `error.field`.
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// 409: the state forbids it (a help request resolved already, a session held by another).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("Core unavailable")]
    Unavailable,
    /// 429: a per-user rate of the core.
    #[error("{0}")]
    RateLimited(String),
    /// 503 with the core's reason (a file store or virus scanner outage).
    #[error("{0}")]
    TryLater(String),
    #[error("Internal error")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) | Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable | Self::TryLater(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::Unauthenticated => Self::Unauthenticated,
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Self::BadRequest(status.message().to_string())
            }
            Code::PermissionDenied => Self::Forbidden(status.message().to_string()),
            Code::NotFound => Self::NotFound(status.message().to_string()),
            Code::AlreadyExists | Code::Aborted => Self::Conflict(status.message().to_string()),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unavailable,
            Code::ResourceExhausted => Self::RateLimited(status.message().to_string()),
            _ => {
                tracing::error!(code = ?status.code(), "core call failed");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body =
            serde_json::json!({"error": {"code": status.as_u16(), "message": self.to_string()}});
        if let Self::Invalid { field, .. } = &self {
            body["error"]["field"] = field.clone().into();
        }
        (status, Json(body)).into_response()
    }
}
