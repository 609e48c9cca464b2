//! The audio endpoints of the OpenAI API. `POST /v1/audio/transcriptions` (a multipart form:
//! `file`, `model`, `response_format`) answers `{"text": ...}` with the script's transcript;
//! `POST /v1/audio/speech` (JSON: `model`, `input`, `voice`, `response_format`) answers the
//! script's audio. Both are recorded like the chat endpoints; a transcription is recorded as
//! JSON describing the upload (`model`, `response_format`, `file: {name, type, size,
//! seconds}`, `seconds` for a WAV file), so tests can check the audio arrived whole. Scripted
//! faults apply to them too.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use crate::wire::Api;
use crate::{Fault, Shared, failure, lock};

/// Records a request; the answer of the scripted fault for it, if any.
fn record(shared: &Shared, uri: &Uri, headers: HeaderMap, body: Value) -> Option<Response> {
    let index = shared.record(uri, headers, body);
    let fault = lock(&shared.script).faults.get(index).cloned();
    fault.and_then(fault_response)
}

fn fault_response(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Status {
            status,
            retry_after_secs,
            message,
        } => Some(failure(Api::OpenAi, status, retry_after_secs, &message)),
        Fault::Cut => None,
    }
}

pub(crate) async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut fields = serde_json::Map::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let mime = field.content_type().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    return bad_request("the form broke off");
                };
                let value = match file_name {
                    Some(file_name) => json!({
                        "name": file_name,
                        "type": mime,
                        "size": bytes.len(),
                        "seconds": wav_seconds(&bytes),
                    }),
                    None => Value::from(String::from_utf8_lossy(&bytes).into_owned()),
                };
                fields.insert(name, value);
            }
            Ok(None) => break,
            Err(_) => return bad_request("not a multipart form"),
        }
    }
    let has_file = fields.get("file").is_some_and(Value::is_object);
    let has_model = fields.get("model").is_some_and(Value::is_string);
    if let Some(response) = record(&shared, &uri, headers, Value::Object(fields)) {
        return response;
    }
    if !has_file || !has_model {
        return bad_request("file and model are required");
    }
    let text = lock(&shared.script).transcript.clone();
    axum::Json(json!({ "text": text })).into_response()
}

pub(crate) async fn speech(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let input_ok = body
        .get("input")
        .and_then(Value::as_str)
        .is_some_and(|i| !i.is_empty());
    let format = body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("mp3")
        .to_owned();
    if let Some(response) = record(&shared, &uri, headers, body) {
        return response;
    }
    if !input_ok {
        return bad_request("input is required");
    }
    // The fake speaks WAV only (the script's audio is a WAV file).
    if format != "wav" {
        return bad_request("the fake speaks response_format \"wav\" only");
    }
    let audio = lock(&shared.script).speech.clone();
    ([(header::CONTENT_TYPE, "audio/wav")], audio).into_response()
}

fn bad_request(message: &str) -> Response {
    failure(Api::OpenAi, StatusCode::BAD_REQUEST.as_u16(), None, message)
}

/// The length of a PCM WAV file, from its byte rate and its `data` chunk; `None` for anything
/// else.
pub fn wav_seconds(bytes: &[u8]) -> Option<f64> {
    if bytes.len() < 44 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let byte_rate = u32::from_le_bytes(bytes[28..32].try_into().ok()?);
    let at = bytes.windows(4).position(|w| w == b"data")?;
    let size = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?);
    (byte_rate > 0).then(|| f64::from(size) / f64::from(byte_rate))
}
