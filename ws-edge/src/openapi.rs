//! The edge's REST routes, in one table ([`rest_routes`]) that both the router registers them
//! from and the OpenAPI 3.1 document (`GET /api/openapi.json`) is built from, so no route can be
//! served undocumented. Each entry pairs a path's handlers with what each method takes and
//! answers; the bodies themselves are described in `docs/protocol.md`, which the document
//! links. (The socket protocol has its own document, `/api/asyncapi.json`.)

use std::sync::Arc;

use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value, json};

use crate::{EdgeState, admin, files, routes};

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the documents).
    Public,
    /// A user's bearer token (or `?token=` / `?auth=`).
    User,
    /// A token with the role `admin`.
    Admin,
    /// A token with the role `admin` or `service`, or the user themselves (context documents).
    UserOrService,
    /// The signed URL is the capability (`exp`, `sig`).
    SignedUrl,
    /// `metrics.token` when set.
    MetricsToken,
}

/// One method of a path.
pub struct Operation {
    pub method: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// The success status and what it carries.
    pub ok: (u16, &'static str, &'static str),
    /// Other statuses it answers.
    pub errors: &'static [u16],
}

/// Where a route is registered: with the body limit of every route, with the uploads' own
/// limit, or on the metrics listener's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Uploads,
    Metrics,
}

pub struct Route {
    pub path: &'static str,
    pub part: Part,
    pub operations: Vec<Operation>,
    pub handler: MethodRouter<Arc<EdgeState>>,
}

const JSON: &str = "application/json";

const fn op(
    method: &'static str,
    summary: &'static str,
    access: Access,
    ok: (u16, &'static str, &'static str),
) -> Operation {
    Operation {
        method,
        summary,
        access,
        query: &[],
        ok,
        errors: &[],
    }
}

const SESSION_FILTERS: &[(&str, &str)] = &[
    ("user", "an owner's user id"),
    ("status", "active or ended"),
    ("needsHelp", "true or false"),
    ("assisted", "true or false: an operator took part"),
    ("from", "RFC 3339 or a date: started at or after"),
    (
        "to",
        "RFC 3339 or a date: started before (a date: the end of that day)",
    ),
    ("sort", "lastActivity (default), started, duration, user"),
    ("order", "desc (default) or asc"),
    ("limit", "1..100, default 50"),
    ("cursor", "the previous page's nextCursor"),
];

/// Every REST route of the edge, with its handlers.
pub fn rest_routes() -> Vec<Route> {
    use Access::*;
    vec![
        Route {
            path: "/healthz",
            part: Part::Main,
            operations: vec![op("get", "Alive", Public, (200, JSON, "{status: \"ok\"}"))],
            handler: get(routes::healthz),
        },
        Route {
            path: "/readyz",
            part: Part::Main,
            operations: vec![Operation {
                errors: &[503],
                ..op(
                    "get",
                    "Ready: a core (and its database) serving",
                    Public,
                    (200, JSON, "{status, core, cores}"),
                )
            }],
            handler: get(routes::readyz),
        },
        Route {
            path: "/ws/health",
            part: Part::Main,
            operations: vec![op(
                "get",
                "Connections, active chats, uptime",
                Public,
                (
                    200,
                    JSON,
                    "{status, connections, connectedClients, activeChats, maxConnections, uptime, ...}",
                ),
            )],
            handler: get(routes::ws_health),
        },
        Route {
            path: "/api/websocket/health",
            part: Part::Main,
            operations: vec![op(
                "get",
                "The same as /ws/health (seed 003's path)",
                Public,
                (200, JSON, "as /ws/health"),
            )],
            handler: get(routes::ws_health),
        },
        Route {
            path: "/metrics",
            part: Part::Metrics,
            operations: vec![Operation {
                errors: &[401],
                ..op(
                    "get",
                    "Prometheus metrics (on metrics.addr instead when it is set)",
                    MetricsToken,
                    (200, "text/plain", "the text exposition format"),
                )
            }],
            handler: get(routes::metrics),
        },
        Route {
            path: "/api/sessions",
            part: Part::Main,
            operations: vec![Operation {
                query: &[("limit", "1..100")],
                errors: &[401, 503],
                ..op(
                    "get",
                    "The caller's sessions, newest activity first",
                    User,
                    (
                        200,
                        JSON,
                        "{sessions: [{chatId, title, status, model, agentId, messageCount, adminAssisted, needsHelp, startedAt, lastActivityAt, endedAt}]}",
                    ),
                )
            }],
            handler: get(routes::sessions),
        },
        Route {
            path: "/api/sessions/{chat_id}/messages",
            part: Part::Main,
            operations: vec![Operation {
                query: &[
                    ("before", "a history cursor: older messages"),
                    ("limit", "1..100, default 50"),
                ],
                errors: &[400, 401, 403, 404],
                ..op(
                    "get",
                    "A page of a chat's history, oldest first",
                    User,
                    (200, JSON, "{chatId, messages, hasMore, cursor, lastSeq}"),
                )
            }],
            handler: get(routes::history),
        },
        Route {
            path: "/api/chat/history/{chat_id}",
            part: Part::Main,
            operations: vec![Operation {
                query: &[("before", "a history cursor"), ("limit", "1..100")],
                errors: &[400, 401, 403, 404],
                ..op(
                    "get",
                    "The same as /api/sessions/{chatId}/messages (seed 001's path)",
                    User,
                    (200, JSON, "as the history page"),
                )
            }],
            handler: get(routes::history),
        },
        Route {
            path: "/api/models",
            part: Part::Main,
            operations: vec![Operation {
                errors: &[401],
                ..op(
                    "get",
                    "The model catalogue and the agents",
                    User,
                    (
                        200,
                        JSON,
                        "{models: [{id, name}], defaultModel, agents: [{id, name}]}",
                    ),
                )
            }],
            handler: get(routes::models),
        },
        Route {
            path: "/api/users/{user_id}/context",
            part: Part::Main,
            operations: vec![
                Operation {
                    errors: &[401, 403, 404],
                    ..op(
                        "get",
                        "A user's context document",
                        UserOrService,
                        (
                            200,
                            JSON,
                            "the document's fields plus userId, lastUpdated, updatedBy",
                        ),
                    )
                },
                Operation {
                    errors: &[400, 401, 403, 413],
                    ..op(
                        "put",
                        "Replace a user's context document (admins and services)",
                        UserOrService,
                        (200, JSON, "the stored document"),
                    )
                },
            ],
            handler: get(routes::user_context).put(routes::set_user_context),
        },
        Route {
            path: "/api/chat/context/{user_id}",
            part: Part::Main,
            operations: vec![
                Operation {
                    errors: &[401, 403, 404],
                    ..op(
                        "get",
                        "A user's context document (seed 000's path)",
                        UserOrService,
                        (200, JSON, "as GET /api/users/{userId}/context"),
                    )
                },
                Operation {
                    errors: &[400, 401, 403, 413],
                    ..op(
                        "post",
                        "Replace a user's context document (seed 000's path)",
                        UserOrService,
                        (200, JSON, "the stored document"),
                    )
                },
            ],
            handler: get(routes::user_context).post(routes::set_user_context),
        },
        Route {
            path: "/api/uploads",
            part: Part::Uploads,
            operations: vec![Operation {
                errors: &[400, 401, 413, 429, 503],
                ..op(
                    "post",
                    "Upload a file (multipart/form-data, field file), checked by content",
                    User,
                    (201, JSON, "{id, name, mime, size, url}"),
                )
            }],
            handler: post(files::upload),
        },
        Route {
            path: "/files/{file_id}",
            part: Part::Main,
            operations: vec![Operation {
                query: &[
                    ("exp", "the URL's expiry, unix seconds"),
                    ("sig", "its HMAC-SHA256 signature"),
                ],
                errors: &[206, 404, 416],
                ..op(
                    "get",
                    "Download a file through its signed URL (one byte range allowed)",
                    SignedUrl,
                    (
                        200,
                        "application/octet-stream",
                        "the file, with its stored type",
                    ),
                )
            }],
            handler: get(files::download),
        },
        Route {
            path: "/api/admin/sessions",
            part: Part::Main,
            operations: vec![Operation {
                query: SESSION_FILTERS,
                errors: &[400, 401, 403],
                ..op(
                    "get",
                    "Every user's sessions, filtered, sorted, paged",
                    Admin,
                    (200, JSON, "{sessions: [session], nextCursor}"),
                )
            }],
            handler: get(admin::list_sessions),
        },
        Route {
            path: "/api/admin/sessions/{chat_id}",
            part: Part::Main,
            operations: vec![Operation {
                query: &[("before", "the transcript's cursor"), ("limit", "1..100")],
                errors: &[400, 401, 403, 404],
                ..op(
                    "get",
                    "One session: metrics, a transcript page, audit trail, help requests",
                    Admin,
                    (200, JSON, "{session, transcript, audit, helpRequests}"),
                )
            }],
            handler: get(admin::get_session),
        },
        Route {
            path: "/api/admin/usage",
            part: Part::Main,
            operations: vec![Operation {
                query: &[
                    ("by", "user (default), model, day"),
                    ("from", "RFC 3339 or a date"),
                    ("to", "RFC 3339 or a date"),
                ],
                errors: &[400, 401, 403],
                ..op(
                    "get",
                    "Token usage and cost",
                    Admin,
                    (200, JSON, "{by, rows, total, currency}"),
                )
            }],
            handler: get(admin::usage),
        },
        Route {
            path: "/api/admin/help-requests",
            part: Part::Main,
            operations: vec![Operation {
                query: &[("all", "true: resolved ones too"), ("limit", "1..100")],
                errors: &[400, 401, 403],
                ..op(
                    "get",
                    "The help queue, open requests first",
                    Admin,
                    (
                        200,
                        JSON,
                        "{requests: [{id, chatId, userId, reason, createdAt, resolvedAt, resolvedBy}]}",
                    ),
                )
            }],
            handler: get(admin::help_requests),
        },
        Route {
            path: "/api/admin/help-requests/{id}/resolve",
            part: Part::Main,
            operations: vec![Operation {
                errors: &[401, 403, 404, 409],
                ..op(
                    "post",
                    "Resolve a help request (clears the session's flag)",
                    Admin,
                    (200, JSON, "the resolved request"),
                )
            }],
            handler: post(admin::resolve_help_request),
        },
        Route {
            path: "/api/admin/feed",
            part: Part::Main,
            operations: vec![Operation {
                errors: &[401, 403],
                ..op(
                    "get",
                    "The live feed of session changes",
                    Admin,
                    (
                        200,
                        "text/event-stream",
                        "event: change (data: {chatId, kind, userId, at, changes, role}); event: reset ends it",
                    ),
                )
            }],
            handler: get(admin::feed),
        },
    ]
}

/// The paths the edge serves itself beside the table: the pages' files, the documents, the
/// socket. Listed in the document for completeness, without handlers here.
const OTHER_PATHS: &[(&str, &str, &str)] = &[
    (
        "/pages.json",
        "What the pages are configured with",
        "{tokenUrl}",
    ),
    ("/api/openapi.json", "This document", "OpenAPI 3.1"),
    ("/api/asyncapi.json", "The socket protocol", "AsyncAPI 3.0"),
];

/// The OpenAPI 3.1 document of `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let mut item = Map::new();
        for operation in &route.operations {
            item.insert(
                operation.method.to_owned(),
                operation_json(route.path, operation),
            );
        }
        paths.insert(route.path.to_owned(), Value::Object(item));
    }
    for (path, summary, what) in OTHER_PATHS {
        paths.insert(
            (*path).to_owned(),
            json!({"get": {
                "summary": summary,
                "security": [],
                "responses": {"200": {"description": what, "content": {JSON: {"schema": {"type": "object"}}}}},
            }}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "chat-edge REST",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The edge's HTTP routes beside the WebSocket. Bodies, errors and examples: docs/protocol.md (\"REST beside the socket\", \"Files\", \"Operators: admin REST\"); errors are {error: {code, message, field?}}. The socket itself: /api/asyncapi.json.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "integer"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                        },
                    }},
                },
            },
        },
    })
}

fn operation_json(path: &str, operation: &Operation) -> Value {
    let mut parameters: Vec<Value> = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    parameters.extend(operation.query.iter().map(|(name, description)| {
        json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
    }));
    let (status, content_type, description) = operation.ok;
    let mut responses = Map::new();
    responses.insert(
        status.to_string(),
        json!({"description": description, "content": {content_type: {"schema": {"type": if content_type == JSON { "object" } else { "string" }}}}}),
    );
    for code in operation.errors {
        let described = if *code == 206 {
            json!({"description": "a byte range of the file"})
        } else {
            json!({"description": "see docs/protocol.md", "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}})
        };
        responses.insert(code.to_string(), described);
    }
    let security = match operation.access {
        Access::Public | Access::SignedUrl => json!([]),
        Access::MetricsToken => json!([{}, {"bearer": []}]),
        Access::User | Access::Admin | Access::UserOrService => {
            json!([{"bearer": []}, {"queryToken": []}])
        }
    };
    let who = match operation.access {
        Access::Public => "anyone",
        Access::User => "a user's token",
        Access::Admin => "a token with the role admin",
        Access::UserOrService => "the user themselves, an admin or a service (role service)",
        Access::SignedUrl => "the signed URL",
        Access::MetricsToken => "metrics.token when set",
    };
    json!({
        "summary": operation.summary,
        "description": format!("Who: {who}."),
        "parameters": parameters,
        "security": security,
        "responses": responses,
    })
}
