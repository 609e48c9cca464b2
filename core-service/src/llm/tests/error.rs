//! Which errors count as transient, and their labels.

use crate::llm::LlmError;

#[test]
fn retryable_errors_are_the_transient_ones() {
    let status = |status| LlmError::Status {
        status,
        retry_after: None,
        message: String::new(),
    };
    for err in [
        LlmError::Connect("x".into()),
        status(429),
        status(500),
        status(503),
        status(529),
        LlmError::FirstTokenTimeout,
    ] {
        assert!(err.is_retryable(), "{err:?}");
    }
    for err in [
        status(400),
        status(401),
        status(404),
        status(501),
        LlmError::Upstream("x".into()),
        LlmError::IdleTimeout,
        LlmError::Protocol("x".into()),
    ] {
        assert!(!err.is_retryable(), "{err:?}");
    }
    assert_eq!(status(429).kind(), "rate_limited");
    assert_eq!(status(503).kind(), "server_error");
}
