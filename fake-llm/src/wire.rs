//! The two providers' streaming wire formats, as the real APIs send them.
//!
//! - OpenAI Chat Completions: `data: {chunk}` events, a role-only first chunk, one chunk per
//!   piece in `choices[0].delta.content`, a finish chunk, a usage chunk with empty `choices`,
//!   then `data: [DONE]`.
//! - Anthropic Messages: `message_start` (input tokens), `content_block_start`, `ping`, one
//!   `content_block_delta`/`text_delta` per piece, `content_block_stop`, `message_delta`
//!   (output tokens), `message_stop`.
//!
//! - Dify chat-messages: `data: {"event": "message", "answer", "conversation_id", ..}` per
//!   piece, then `message_end` with `metadata.usage`.
//!
//! Errors are each provider's JSON error body.

use serde_json::{Value, json};

use crate::script::{Body, FakeScript};

/// Which upstream API an endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
    Dify,
}

/// `data: {data}` as one SSE frame.
pub fn sse_data(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// `event: {name}` and `data: {data}` as one SSE frame.
pub fn sse_event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// One reply as SSE frames: the preamble, one frame per piece, the closing frames.
pub(crate) struct Frames {
    pub(crate) before: Vec<String>,
    pub(crate) pieces: Vec<String>,
    pub(crate) after: Vec<String>,
}

/// The frames of `script`'s reply in `api`'s format; `model` is echoed as the real APIs do.
pub(crate) fn frames(api: Api, script: &FakeScript, model: &str) -> Frames {
    match &script.body {
        Body::Frames(frames) => Frames {
            before: Vec::new(),
            pieces: frames.clone(),
            after: Vec::new(),
        },
        Body::Pieces(pieces) => match api {
            Api::OpenAi => openai_frames(pieces, script.usage, model),
            Api::Anthropic => anthropic_frames(pieces, script.usage, model),
            Api::Dify => dify_frames(pieces, script.usage, model),
        },
    }
}

fn openai_frames(pieces: &[String], (prompt, completion): (u32, u32), model: &str) -> Frames {
    let chunk = |choices: Value, usage: Value| {
        sse_data(
            &json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "system_fingerprint": null,
                "choices": choices,
                "usage": usage,
            })
            .to_string(),
        )
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    Frames {
        before: vec![chunk(
            choice(json!({"role": "assistant", "content": ""}), Value::Null),
            Value::Null,
        )],
        pieces: pieces
            .iter()
            .map(|text| chunk(choice(json!({"content": text}), Value::Null), Value::Null))
            .collect(),
        after: vec![
            chunk(choice(json!({}), json!("stop")), Value::Null),
            chunk(
                json!([]),
                json!({"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion}),
            ),
            sse_data("[DONE]"),
        ],
    }
}

fn anthropic_frames(pieces: &[String], (prompt, completion): (u32, u32), model: &str) -> Frames {
    let event = |name: &str, data: Value| sse_event(name, &data.to_string());
    Frames {
        before: vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": prompt, "output_tokens": 1},
                }}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ],
        pieces: pieces
            .iter()
            .map(|text| {
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": text}}),
                )
            })
            .collect(),
        after: vec![
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            event(
                "message_delta",
                json!({"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": completion}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ],
    }
}

/// `conversation` is the id the frames carry.
fn dify_frames(pieces: &[String], (prompt, completion): (u32, u32), conversation: &str) -> Frames {
    let data = |value: Value| sse_data(&value.to_string());
    Frames {
        before: vec![data(json!({"event": "ping"}))],
        pieces: pieces
            .iter()
            .map(|text| {
                data(
                    json!({"event": "message", "task_id": "task-fake", "id": "msg-fake",
                            "message_id": "msg-fake", "conversation_id": conversation,
                            "answer": text, "created_at": 1_700_000_000}),
                )
            })
            .collect(),
        after: vec![data(json!({
            "event": "message_end", "task_id": "task-fake", "id": "msg-fake",
            "message_id": "msg-fake", "conversation_id": conversation,
            "metadata": {"usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                   "total_tokens": prompt + completion}},
        }))],
    }
}

/// The body a failing `status` carries in `api`'s error format.
pub(crate) fn error_body(api: Api, status: u16, message: &str) -> Value {
    match api {
        Api::OpenAi => {
            let kind = match status {
                429 => "rate_limit_error",
                400..=499 => "invalid_request_error",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "code": null}})
        }
        Api::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::Dify => {
            let code = match status {
                400 => "invalid_param",
                401 => "unauthorized",
                404 => "not_found",
                429 => "too_many_requests",
                _ => "internal_server_error",
            };
            json!({"status": status, "code": code, "message": message})
        }
    }
}
