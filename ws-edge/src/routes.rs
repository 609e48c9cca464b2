//! HTTP routes of the edge: the WebSocket upgrade (three paths), REST reads proxied to the
//! core with the caller's token, health probes and metrics. The page is [`crate::pages`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_proto::limits::{FRAME_BYTES_CEILING, MAX_CONTEXT_DOCUMENT_BYTES, MAX_PAGE};
use chat_proto::pb::chat::{self as pb, server_event::Event as Out};
use serde_json::{Value, json};

use crate::EdgeState;
use crate::bridge::{self, Admission, SocketOptions};
use crate::error::ApiError;
use crate::frames;
use crate::upstream::with_token;

/// Subprotocol the server selects when the client offers it.
const SUBPROTOCOL: &str = "chat.v1";
/// Memory per idle socket: chat frames are small, so tungstenite's 128 KiB default read
/// buffer would cost far more than the traffic needs. The read buffer is allocated whole for
/// every socket (a larger frame is read in several such pieces); the write buffer only grows
/// as frames are written.
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 4 * 1024;

/// `GET /ws`, `/chat`, `/api/v1/chat/ws`.
pub async fn websocket(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&state.settings.allowed_origins, &headers) {
        return (StatusCode::FORBIDDEN, "Origin not allowed").into_response();
    }
    let options = match SocketOptions::from_query(&query) {
        Ok(options) => options,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let admission = if state.connections.fetch_add(1, Ordering::Relaxed)
        >= state.settings.limits.max_connections
    {
        Admission::Full
    } else {
        let verified = socket_token(&headers, &query)
            .ok_or(chat_auth::AuthError::Missing)
            .and_then(|token| state.verifier.verify(&token).map(|_| token));
        match verified {
            Ok(token) => Admission::Token(token),
            // The reason only (no token, expired, bad signature, ...): never the token.
            Err(reason) => {
                tracing::info!(reason = %reason, "authentication failed");
                Admission::Refused
            }
        }
    };
    // The codec's hard ceiling: the socket's own limit arrives with the core's `session`, and
    // the bridge closes with 1009 above it.
    let max = FRAME_BYTES_CEILING as usize;
    let tracked = state.clone();
    upgrade
        .protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(move |_| {
            tracked.connections.fetch_sub(1, Ordering::Relaxed);
        })
        .on_upgrade(move |socket| {
            let tasks = state.tasks.clone();
            tasks.track_future(bridge::serve(state, socket, admission, options))
        })
}

/// A token from the query (`token`, or seed 003's `auth`), `Authorization: Bearer`, or a
/// `bearer.<jwt>` subprotocol.
fn socket_token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    if let Some(token) = query_token(query) {
        return Some(token.to_owned());
    }
    if let Some(token) = bearer_header(headers) {
        return Some(token.to_owned());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer.").map(str::to_string))
}

/// `?token=`, else seed 003's `?auth=`.
pub(crate) fn query_token(query: &HashMap<String, String>) -> Option<&str> {
    ["token", "auth"]
        .iter()
        .filter_map(|name| query.get(*name))
        .map(String::as_str)
        .find(|t| !t.is_empty())
}

fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    chat_auth::bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// Browsers send `Origin`; non-browser clients usually do not and are let through.
pub(crate) fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
    }
}

/// The caller's token for a REST call (header or `?token=`), forwarded to the core.
pub(crate) fn rest_token(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<String, ApiError> {
    bearer_header(headers)
        .filter(|t| !t.is_empty())
        .or_else(|| query_token(query))
        .map(str::to_owned)
        .ok_or(ApiError::Unauthenticated)
}

fn authorized<T>(
    state: &EdgeState,
    token: &str,
    message: T,
) -> Result<tonic::Request<T>, ApiError> {
    state
        .verifier
        .verify(token)
        .map_err(|_| ApiError::Unauthenticated)?;
    with_token(message, token).ok_or(ApiError::Unauthenticated)
}

fn parse_limit(query: &HashMap<String, String>) -> Result<Option<u32>, ApiError> {
    query
        .get("limit")
        .map(|l| {
            l.parse::<u32>().map_err(|_| {
                ApiError::BadRequest(format!("limit must be a number from 1 to {MAX_PAGE}"))
            })
        })
        .transpose()
}

/// `GET /api/sessions`: the caller's sessions, newest activity first.
pub async fn sessions(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let token = rest_token(&headers, &query)?;
    let request = authorized(
        &state,
        &token,
        pb::ListSessionsRequest {
            limit: parse_limit(&query)?,
        },
    )?;
    let response = state
        .upstream
        .chat()
        .list_sessions(request)
        .await?
        .into_inner();
    let sessions: Vec<Value> = response.sessions.iter().map(session_json).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

/// `GET /api/sessions/{chatId}/messages` and `GET /api/chat/history/{chatId}`.
pub async fn history(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let token = rest_token(&headers, &query)?;
    let message = pb::GetHistoryRequest {
        chat_id,
        before: query.get("before").cloned().filter(|b| !b.is_empty()),
        limit: parse_limit(&query)?,
    };
    let request = authorized(&state, &token, message)?;
    let history = state
        .upstream
        .chat()
        .get_history(request)
        .await?
        .into_inner();
    Ok(Json(frames::event_data(&Out::History(history))))
}

/// `PUT /api/users/{userId}/context` and seed 000's `POST /api/chat/context/{userId}`: the body
/// (a JSON object: tasks, groups, preferences, any fields) becomes the user's context document.
/// Seed 000's `userId` and `lastUpdated` fields, when present, are the record's, not the
/// document's. Admins and the `service` role only.
pub async fn set_user_context(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let token = rest_token(&headers, &query)?;
    let Ok(Value::Object(mut document)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::BadRequest(
            "The body must be a JSON object (the user's context document)".into(),
        ));
    };
    document.remove("userId");
    document.remove("lastUpdated");
    let size = Value::Object(document.clone()).to_string().len();
    if size > MAX_CONTEXT_DOCUMENT_BYTES {
        return Err(ApiError::TooLarge(format!(
            "The context document is {size} bytes, at most {MAX_CONTEXT_DOCUMENT_BYTES}"
        )));
    }
    let message = pb::SetUserContextRequest {
        user_id,
        document: Some(chat_proto::json::struct_from_json(&document)),
    };
    let request = authorized(&state, &token, message)?;
    let stored = state
        .upstream
        .chat()
        .set_user_context(request)
        .await?
        .into_inner();
    Ok(Json(user_context_json(&stored)))
}

/// `GET /api/users/{userId}/context` and `GET /api/chat/context/{userId}`: the document, for
/// the user, admins and the `service` role; 404 when none was set.
pub async fn user_context(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let token = rest_token(&headers, &query)?;
    let request = authorized(&state, &token, pb::GetUserContextRequest { user_id })?;
    let stored = state
        .upstream
        .chat()
        .get_user_context(request)
        .await?
        .into_inner();
    Ok(Json(user_context_json(&stored)))
}

/// Seed 000's context model: the document's fields, then `userId`, `lastUpdated` (RFC 3339)
/// and `updatedBy`.
fn user_context_json(c: &pb::UserContext) -> Value {
    let mut out = c
        .document
        .as_ref()
        .map(chat_proto::json::struct_to_json)
        .unwrap_or_default();
    out.insert("userId".into(), c.user_id.clone().into());
    out.insert(
        "lastUpdated".into(),
        c.updated_at
            .as_ref()
            .map_or(Value::Null, |t| frames::rfc3339_string(t).into()),
    );
    out.insert("updatedBy".into(), c.updated_by.clone().into());
    Value::Object(out)
}

/// `GET /api/models`.
pub async fn models(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let token = rest_token(&headers, &query)?;
    let request = authorized(&state, &token, pb::ListModelsRequest {})?;
    let r = state
        .upstream
        .chat()
        .list_models(request)
        .await?
        .into_inner();
    Ok(Json(json!({
        "models": r.models.iter().map(|m| frames::named(&m.id, &m.name)).collect::<Vec<_>>(),
        "defaultModel": r.default_model,
        "agents": r.agents.iter().map(|a| frames::named(&a.id, &a.name)).collect::<Vec<_>>(),
    })))
}

pub(crate) fn session_json(s: &pb::SessionSummary) -> Value {
    json!({
        "chatId": s.chat_id,
        "title": s.title,
        "status": s.status,
        "model": s.model,
        "agentId": s.agent_id,
        "messageCount": s.message_count,
        "adminAssisted": s.admin_assisted,
        "needsHelp": s.needs_help,
        "startedAt": s.started_at.as_ref().map(frames::rfc3339_string),
        "lastActivityAt": s.last_activity_at.as_ref().map(frames::rfc3339_string),
        "endedAt": s.ended_at.as_ref().map(frames::rfc3339_string),
    })
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: at least one core answers and reports itself (and its database) serving.
/// Every core is asked now, which also refreshes what the edge knows of them.
pub async fn readyz(State(state): State<Arc<EdgeState>>) -> Response {
    let (serving, total) = state.upstream.probe_all().await;
    if serving > 0 && !state.shutdown.is_cancelled() {
        (
            StatusCode::OK,
            Json(json!({
                "status": "ready",
                "core": "serving",
                "cores": {"serving": serving, "total": total},
            })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable"})),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text exposition; with `metrics.token` set, only for
/// `Authorization: Bearer <token>`.
pub async fn metrics(State(state): State<Arc<EdgeState>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.settings.metrics.token {
        use secrecy::ExposeSecret;
        let given = bearer_header(&headers).unwrap_or_default();
        if !same_secret(given.as_bytes(), expected.expose_secret().as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "metrics token required",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        chat_runtime::render_metrics(),
    )
        .into_response()
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// `GET /ws/health` and `/api/websocket/health`: this edge's figures, and the cores' count of
/// chats with a joined member (`activeChats`: summed over the cores that answer within a
/// second, so a chat with members on two cores counts twice; `null` when none answers). Seed 001 reads `connections`, `activeChats` and `uptime`; seed 003 reads `status`,
/// `connectedClients` and `uptime`; all are here, beside the edge's own figures.
pub async fn ws_health(State(state): State<Arc<EdgeState>>) -> Json<Value> {
    let cores = state.upstream.cores();
    let counts = futures::future::join_all(cores.iter().map(|core| async move {
        let mut chat = core.chat();
        let stats = chat.get_stats(pb::GetStatsRequest {});
        match tokio::time::timeout(std::time::Duration::from_secs(1), stats).await {
            Ok(Ok(stats)) => Some(stats.into_inner().active_chats),
            _ => None,
        }
    }))
    .await;
    let active_chats = counts
        .into_iter()
        .flatten()
        .reduce(|a, b| a.saturating_add(b))
        .map_or(Value::Null, Value::from);
    let connections = state.connections.load(Ordering::Relaxed);
    let uptime = state.started.elapsed().as_secs();
    Json(json!({
        "status": if state.shutdown.is_cancelled() { "shutting_down" } else { "ok" },
        "connections": connections,
        "connectedClients": connections,
        "activeChats": active_chats,
        "maxConnections": state.settings.limits.max_connections,
        "httpConnections": state.http_connections.load(Ordering::Relaxed),
        "maxHttpConnections": state.settings.limits.max_http_connections,
        "queuedFrames": state.queued.frames.load(Ordering::Relaxed),
        "queuedBytes": state.queued.bytes.load(Ordering::Relaxed),
        "uptime": uptime,
        "uptimeSeconds": uptime,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_query_header_or_subprotocol() {
        let mut q = HashMap::new();
        let mut h = HeaderMap::new();
        assert_eq!(socket_token(&h, &q), None);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "chat.v1, bearer.abc.def"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(socket_token(&h, &q).as_deref(), Some("abc.def"));
        h.insert(
            header::AUTHORIZATION,
            "Bearer hdr".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(socket_token(&h, &q).as_deref(), Some("hdr"));
        q.insert("auth".to_string(), "seed".to_string());
        assert_eq!(socket_token(&h, &q).as_deref(), Some("seed"));
        q.insert("token".to_string(), "qry".to_string());
        assert_eq!(socket_token(&h, &q).as_deref(), Some("qry"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }

    #[test]
    fn origins_are_checked_only_when_configured() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            "https://evil.example"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(origin_allowed(&[], &h));
        assert!(!origin_allowed(&["https://app.example".into()], &h));
        assert!(origin_allowed(&["https://evil.example".into()], &h));
    }
}
