//! Files at the edge: `POST /api/uploads` streams a multipart `file` field to the core's
//! `UploadFile` in chunks as it arrives, and `GET /files/{id}?exp=&sig=` streams a signed URL's
//! bytes back from `ReadFile` (whole, or one `Range`). Neither buffers a file; the core checks
//! the type, the size, the owner and the signature.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_proto::pb::chat as pb;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::EdgeState;
use crate::error::ApiError;
use crate::routes::rest_token;
use crate::upstream::with_token;

/// Chunks queued towards the core while it stores the previous ones.
const UPLOAD_BUFFER: usize = 8;

/// `POST /api/uploads`: multipart with a field `file` (its file name and `Content-Type` are the
/// declared name and type). `201 {id, name, mime, size, url}`.
pub async fn upload(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let token = rest_token(&headers, &query)?;
    state
        .verifier
        .verify(&token)
        .map_err(|_| ApiError::Unauthenticated)?;
    let mut field = loop {
        match multipart.next_field().await.map_err(form_error)? {
            Some(field) if field.name() == Some("file") => break field,
            Some(_) => continue,
            None => {
                return Err(ApiError::Invalid {
                    field: "file".into(),
                    message: "The form has no field named file".into(),
                });
            }
        }
    };
    let start = pb::UploadStart {
        name: field.file_name().unwrap_or("file").to_owned(),
        mime: field.content_type().unwrap_or_default().to_owned(),
    };
    let (tx, rx) = mpsc::channel(UPLOAD_BUFFER);
    let chunk = |part| pb::UploadChunk { part: Some(part) };
    // The receiver is right here: the first send always fits.
    let _ = tx.send(chunk(pb::upload_chunk::Part::Start(start))).await;
    let request = with_token(ReceiverStream::new(rx), &token).ok_or(ApiError::Unauthenticated)?;
    let mut chat = state.upstream.chat();
    let call = chat.upload_file(request);
    let pump = async move {
        loop {
            match field.chunk().await {
                Ok(Some(bytes)) => {
                    if tx
                        .send(chunk(pb::upload_chunk::Part::Data(bytes.to_vec())))
                        .await
                        .is_err()
                    {
                        // The core answered already (a refusal): its answer says why.
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(err) => return Err(form_error(err)),
            }
        }
    };
    let (answer, pumped) = tokio::join!(call, pump);
    let file = match (answer, pumped) {
        (Ok(file), Ok(())) => file.into_inner(),
        // The request body failed (too large, cut off): the core saw an incomplete file.
        (_, Err(err)) => return Err(err),
        (Err(status), Ok(())) => return Err(upload_error(status)),
    };
    Ok((StatusCode::CREATED, Json(file_json(&file))).into_response())
}

fn form_error(err: axum::extract::multipart::MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge("The upload is larger than allowed".into())
    } else {
        ApiError::BadRequest(format!("The form cannot be read: {}", err.body_text()))
    }
}

/// The core's refusal, with 413 for a file over the size limit.
fn upload_error(status: tonic::Status) -> ApiError {
    if status
        .metadata()
        .get("x-code")
        .and_then(|v| v.to_str().ok())
        == Some("413")
    {
        return ApiError::TooLarge(status.message().to_owned());
    }
    if status
        .metadata()
        .get("x-code")
        .and_then(|v| v.to_str().ok())
        == Some("503")
    {
        return ApiError::TryLater(status.message().to_owned());
    }
    if status.code() == tonic::Code::InvalidArgument {
        return ApiError::Invalid {
            field: "file".into(),
            message: status.message().to_owned(),
        };
    }
    status.into()
}

/// `GET /files/{id}?exp=&sig=`: the file, or `Range: bytes=start-[end]` of it (206). Images,
/// audio and PDF are shown inline, anything else downloads; never sniffed.
pub async fn download(
    State(state): State<Arc<EdgeState>>,
    Path(file_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("File not found".into());
    let exp = query
        .get("exp")
        .and_then(|e| e.parse::<i64>().ok())
        .ok_or_else(not_found)?;
    let sig = query.get("sig").cloned().ok_or_else(not_found)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .and_then(parse_range);
    let request = pb::ReadFileRequest {
        file_id,
        exp,
        sig,
        range_start: range.map(|(start, _)| start),
        range_end: range.and_then(|(_, end)| end),
    };
    let mut stream = match state.upstream.chat().read_file(request).await {
        Ok(response) => response.into_inner(),
        Err(status)
            if status.code() == tonic::Code::InvalidArgument
                && status
                    .metadata()
                    .get("x-field")
                    .and_then(|v| v.to_str().ok())
                    == Some("range") =>
        {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                status.message().to_owned(),
            )
                .into_response());
        }
        Err(status) => return Err(status.into()),
    };
    let head = match stream.next().await {
        Some(Ok(pb::FileChunk {
            part: Some(pb::file_chunk::Part::Head(head)),
        })) => head,
        Some(Err(status)) => return Err(status.into()),
        _ => return Err(ApiError::Internal),
    };
    let file = head.file.unwrap_or_default();
    let length = if file.size == 0 {
        0
    } else {
        head.end - head.start + 1
    };
    let body = Body::from_stream(stream.filter_map(|chunk| async move {
        match chunk {
            Ok(pb::FileChunk {
                part: Some(pb::file_chunk::Part::Data(bytes)),
            }) => Some(Ok(axum::body::Bytes::from(bytes))),
            Ok(_) => None,
            Err(status) => Some(Err(std::io::Error::other(status.message().to_owned()))),
        }
    }));
    let mut response = Response::new(body);
    *response.status_mut() = if head.partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    let mime = if file.mime.starts_with("text/") {
        format!("{}; charset=utf-8", file.mime)
    } else {
        file.mime.clone()
    };
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    // A download never runs as a page of the edge's origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    let disposition = if inline(&file.mime) {
        "inline"
    } else {
        "attachment"
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{disposition}; filename*=UTF-8''{}",
        chat_runtime::percent_encode(&file.name)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if head.partial
        && let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", head.start, head.end, file.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

fn inline(mime: &str) -> bool {
    mime.starts_with("image/") || mime.starts_with("audio/") || mime == "application/pdf"
}

/// `bytes=start-` or `bytes=start-end` (one range; anything else is served whole).
fn parse_range(raw: &str) -> Option<(u64, Option<u64>)> {
    let spec = raw.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        end => Some(end.parse().ok()?),
    };
    Some((start, end))
}

/// The upload's answer: `{id, name, mime, size, url}`.
fn file_json(file: &pb::FileInfo) -> Value {
    json!({"id": file.id, "name": file.name, "mime": file.mime, "size": file.size, "url": file.url})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_is_read_and_anything_else_ignored() {
        assert_eq!(parse_range("bytes=0-99"), Some((0, Some(99))));
        assert_eq!(parse_range("bytes=100-"), Some((100, None)));
        assert_eq!(parse_range("bytes=-100"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=x-1"), None);
    }

    #[test]
    fn file_names_are_encoded_for_content_disposition() {
        assert_eq!(chat_runtime::percent_encode("a b.pdf"), "a%20b.pdf");
        assert_eq!(chat_runtime::percent_encode("é\";x"), "%C3%A9%22%3Bx");
    }
}
