//! The admin REST routes (`/api/admin/*`): the operators' reads for the admin page, answered by
//! the core's `AdminService` with the caller's own token. The edge turns query parameters into
//! the typed request (a parameter that cannot be read is a 400 naming it), refuses tokens
//! without the `admin` role with 403 before calling the core (the core checks again), and
//! renders the answers with [`json`]. [`query`] holds the filter vocabulary shared with `chatctl`.

pub mod json;
pub mod query;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chat_proto::pb::admin as pb;
use serde_json::Value;

use crate::EdgeState;
use crate::error::ApiError;
use crate::routes::rest_token;
use crate::upstream::with_token;
use query::Bound;

type Params = HashMap<String, String>;

/// `GET /api/admin/help-requests?all=&limit=`: the help queue, open requests first (oldest
/// first); `all=true` adds the resolved ones.
pub async fn help_requests(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let token = admin_token(&state, &headers, &params)?;
    let message = pb::ListHelpRequestsRequest {
        include_resolved: read(&params, "all", query::parse_bool)?.unwrap_or(false),
        limit: read(&params, "limit", limit)?,
    };
    let list = state
        .upstream
        .admin()
        .list_help_requests(request(&token, message)?)
        .await
        .map_err(core_error)?
        .into_inner();
    Ok(Json(json::help_requests(&list)))
}

/// `POST /api/admin/help-requests/{id}/resolve`: marks one resolved (clearing the session's
/// flag); the resolved request. Twice: 409.
pub async fn resolve_help_request(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let token = admin_token(&state, &headers, &params)?;
    let resolved = state
        .upstream
        .admin()
        .resolve_help_request(request(&token, pb::ResolveHelpRequestRequest { id })?)
        .await
        .map_err(core_error)?
        .into_inner();
    Ok(Json(json::help_request(&resolved)))
}

/// `GET /api/admin/feed`: the live feed of session changes as Server-Sent Events (`event:
/// change`, `data:` the object `chatctl watch --json` prints), for the admin page's
/// `EventSource` (which cannot send headers: `?token=` works). Comments keep idle proxies from
/// closing it; when the core drops a watcher that fell behind, `event: reset` is sent and the
/// stream ends (the page re-reads the list and reconnects).
pub async fn feed(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<
    axum::response::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive};
    use futures::StreamExt as _;
    let token = admin_token(&state, &headers, &params)?;
    let changes = state
        .upstream
        .admin()
        .watch_sessions(request(&token, pb::WatchSessionsRequest {})?)
        .await
        .map_err(core_error)?
        .into_inner();
    let events = changes
        .map(|change| match change {
            Ok(change) => (
                false,
                Event::default()
                    .event("change")
                    .data(json::session_change(&change).to_string()),
            ),
            Err(status) => (
                true,
                Event::default()
                    .event("reset")
                    .data(serde_json::json!({"message": status.message()}).to_string()),
            ),
        })
        .scan(false, |ended, (reset, event)| {
            // Nothing after a reset: the stream ends with it.
            if *ended {
                return futures::future::ready(None);
            }
            *ended = reset;
            futures::future::ready(Some(Ok(event)))
        });
    Ok(axum::response::Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `GET /api/admin/sessions?user=&status=&needsHelp=&assisted=&from=&to=&sort=&order=&limit=&cursor=`.
pub async fn list_sessions(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let token = admin_token(&state, &headers, &params)?;
    let message = pb::ListSessionsRequest {
        user_id: text(&params, "user"),
        status: text(&params, "status"),
        needs_help: read(&params, "needsHelp", query::parse_bool)?,
        admin_assisted: read(&params, "assisted", query::parse_bool)?,
        from: read(&params, "from", |raw| time(raw, Bound::From))?,
        to: read(&params, "to", |raw| time(raw, Bound::To))?,
        sort: read(&params, "sort", query::parse_sort)?.unwrap_or_default() as i32,
        order: read(&params, "order", query::parse_order)?.unwrap_or_default() as i32,
        limit: read(&params, "limit", limit)?,
        cursor: text(&params, "cursor"),
    };
    let page = state
        .upstream
        .admin()
        .list_sessions(request(&token, message)?)
        .await
        .map_err(core_error)?
        .into_inner();
    Ok(Json(json::session_page(&page)))
}

/// `GET /api/admin/sessions/{chatId}?before=&limit=`: metrics, a transcript page, the audit
/// trail and the session's help requests.
pub async fn get_session(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let token = admin_token(&state, &headers, &params)?;
    let message = pb::GetSessionRequest {
        chat_id,
        before: text(&params, "before"),
        limit: read(&params, "limit", limit)?,
    };
    let detail = state
        .upstream
        .admin()
        .get_session(request(&token, message)?)
        .await
        .map_err(core_error)?
        .into_inner();
    Ok(Json(json::session_detail(&detail)))
}

/// `GET /api/admin/usage?by=user|model|day&from=&to=`.
pub async fn usage(
    State(state): State<Arc<EdgeState>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let token = admin_token(&state, &headers, &params)?;
    let by = read(&params, "by", query::parse_grouping)?.unwrap_or(pb::UsageGrouping::User);
    let message = pb::GetUsageRequest {
        by: by as i32,
        from: read(&params, "from", |raw| time(raw, Bound::From))?,
        to: read(&params, "to", |raw| time(raw, Bound::To))?,
    };
    let usage = state
        .upstream
        .admin()
        .get_usage(request(&token, message)?)
        .await
        .map_err(core_error)?
        .into_inner();
    Ok(Json(json::usage(by, &usage)))
}

/// The caller's token, verified and carrying the `admin` role (401 / 403 otherwise).
fn admin_token(
    state: &EdgeState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, ApiError> {
    let token = rest_token(headers, params)?;
    let caller = state
        .verifier
        .verify(&token)
        .map_err(|_| ApiError::Unauthenticated)?;
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("Admin role required".to_owned()));
    }
    Ok(token)
}

fn request<T>(token: &str, message: T) -> Result<tonic::Request<T>, ApiError> {
    with_token(message, token).ok_or(ApiError::Unauthenticated)
}

/// A non-empty text parameter.
fn text(params: &Params, name: &str) -> Option<String> {
    params.get(name).filter(|v| !v.is_empty()).cloned()
}

/// A parameter read by `parse`: absent or empty is `None`; unreadable is a 400 naming it.
fn read<T>(
    params: &Params,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|raw| {
            parse(raw).map_err(|problem| ApiError::Invalid {
                field: name.to_owned(),
                message: format!("{name} {problem}"),
            })
        })
        .transpose()
}

fn time(raw: &str, bound: Bound) -> Result<prost_types::Timestamp, String> {
    query::parse_time(raw, bound).map(query::timestamp)
}

fn limit(raw: &str) -> Result<u32, String> {
    raw.trim().parse::<u32>().map_err(|_| {
        format!(
            "must be a number from 1 to {}",
            chat_proto::limits::MAX_PAGE
        )
    })
}

/// A core error; INVALID_ARGUMENT names the request field in `x-field` metadata, which is
/// renamed to the query parameter the caller wrote.
fn core_error(status: tonic::Status) -> ApiError {
    let field = status
        .metadata()
        .get("x-field")
        .and_then(|v| v.to_str().ok())
        .map(parameter_name);
    match (status.code(), field) {
        (tonic::Code::InvalidArgument, Some(field)) => ApiError::Invalid {
            field: field.to_owned(),
            message: status.message().to_owned(),
        },
        _ => ApiError::from(status),
    }
}

/// `admin.v1` field names (bare, or as the socket protocol's `data.` path) -> the query
/// parameters of these routes.
fn parameter_name(field: &str) -> &str {
    match field.strip_prefix("data.").unwrap_or(field) {
        "user_id" | "userId" => "user",
        "needs_help" => "needsHelp",
        "admin_assisted" | "adminAssisted" => "assisted",
        "chat_id" => "chatId",
        other => other,
    }
}

#[cfg(test)]
mod tests;
