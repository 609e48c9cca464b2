//! `admin.v1.AdminService`: operator calls. Every call authenticates an admin (others get
//! PERMISSION_DENIED), converts protobuf <-> the domain's operator types
//! ([`crate::chat::monitor`], [`crate::chat::watch`], [`crate::chat::takeover`]) and calls the
//! engine; chat-level pieces (messages, histories, changes) reuse [`super::convert`].

use std::pin::Pin;
use std::sync::Arc;

use chat_proto::pb::admin as pb;
use chat_proto::pb::admin::admin_service_server::AdminService;
use chrono::{DateTime, NaiveDateTime};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::auth::authenticate_admin;
use crate::chat::command::HistoryQuery;
use crate::chat::monitor::{
    AdminSession, AuditEntry, HelpTicket, SessionFilter, SessionQuery, SessionSort, UsageGroup,
    UsageLine, UsageQuery,
};
use crate::chat::takeover::{OperatorAction, TakeoverEnd};
use crate::chat::watch::{ChangeKind, SessionChange};
use crate::chat::{ChatError, Engine};
use crate::types::ChatStatus;

pub struct AdminApi {
    engine: Arc<Engine>,
}

impl AdminApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::SessionChange, Status>> + Send>>;
type TakeoverStream = Pin<Box<dyn Stream<Item = Result<pb::TakeoverEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    type WatchSessionsStream = ChangeStream;
    type TakeoverStream = TakeoverStream;

    async fn list_sessions(
        &self,
        r: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let query = session_query(r.into_inner()).map_err(convert::status)?;
        let page = self
            .engine
            .admin_sessions(&who, &query)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page.sessions.iter().map(admin_session).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn get_session(
        &self,
        r: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::SessionDetail>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let req = r.into_inner();
        let query = HistoryQuery {
            chat_id: req.chat_id,
            before: req.before,
            limit: req.limit,
        };
        let detail = self
            .engine
            .admin_session(&who, &query)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::SessionDetail {
            session: Some(admin_session(&detail.session)),
            transcript: Some(convert::history(&detail.transcript)),
            audit: detail.audit.iter().map(audit_event).collect(),
            help_requests: detail.help_requests.iter().map(help_request).collect(),
        }))
    }

    async fn get_usage(
        &self,
        r: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let req = r.into_inner();
        let by = match pb::UsageGrouping::try_from(req.by) {
            Ok(pb::UsageGrouping::Unspecified | pb::UsageGrouping::User) => UsageGroup::User,
            Ok(pb::UsageGrouping::Model) => UsageGroup::Model,
            Ok(pb::UsageGrouping::Day) => UsageGroup::Day,
            Err(_) => {
                return Err(convert::status(ChatError::invalid(
                    "by",
                    "Unknown grouping",
                )));
            }
        };
        let query = UsageQuery {
            by,
            from: time(req.from.as_ref(), "from").map_err(convert::status)?,
            to: time(req.to.as_ref(), "to").map_err(convert::status)?,
        };
        let report = self
            .engine
            .usage(&who, &query)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::GetUsageResponse {
            rows: report.rows.iter().map(usage_row).collect(),
            total: Some(usage_row(&report.total)),
            currency: report.currency,
        }))
    }

    async fn list_help_requests(
        &self,
        r: Request<pb::ListHelpRequestsRequest>,
    ) -> Result<Response<pb::ListHelpRequestsResponse>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let req = r.into_inner();
        let queue = self
            .engine
            .help_queue(&who, req.include_resolved, req.limit)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ListHelpRequestsResponse {
            requests: queue.iter().map(help_request).collect(),
        }))
    }

    async fn resolve_help_request(
        &self,
        r: Request<pb::ResolveHelpRequestRequest>,
    ) -> Result<Response<pb::HelpRequest>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let ticket = self
            .engine
            .resolve_help_request(&who, &r.get_ref().id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(help_request(&ticket)))
    }

    /// Pushes every change as the engine makes it; ends with RESOURCE_EXHAUSTED for a watcher
    /// that fell too far behind, and quietly at shutdown.
    async fn watch_sessions(
        &self,
        r: Request<pb::WatchSessionsRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        authenticate_admin(self.engine.verifier(), r.metadata())?;
        let changes = self.engine.watch_sessions();
        let stopping = self.engine.stopping();
        let stream = futures::stream::unfold(Some(changes), move |state| {
            let stopping = stopping.clone();
            async move {
                let mut changes = state?;
                tokio::select! {
                    () = stopping.cancelled() => None,
                    next = changes.recv() => match next {
                        Ok(change) => Some((Ok(session_change(&change)), Some(changes))),
                        Err(RecvError::Lagged(missed)) => Some((
                            Err(Status::resource_exhausted(format!(
                                "watcher fell {missed} changes behind; list the sessions and watch again"
                            ))),
                            None,
                        )),
                        Err(RecvError::Closed) => None,
                    },
                }
            }
        });
        Ok(Response::new(stream.boxed()))
    }

    /// The first request must be `start`; the rest are the operator's lines and `release`.
    async fn takeover(
        &self,
        r: Request<Streaming<pb::TakeoverRequest>>,
    ) -> Result<Response<TakeoverStream>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let mut inbound = r.into_inner();
        let chat_id = match inbound.message().await? {
            Some(pb::TakeoverRequest {
                action: Some(pb::takeover_request::Action::Start(start)),
            }) => start.chat_id,
            _ => {
                return Err(convert::status(ChatError::invalid(
                    "start",
                    "The first request must be start",
                )));
            }
        };
        let actions = inbound.filter_map(|request| async move {
            use pb::takeover_request::Action;
            match request.ok()?.action? {
                Action::Message(m) => Some(OperatorAction::Message {
                    content: m.content,
                    client_message_id: m.message_id,
                }),
                Action::Release(_) => Some(OperatorAction::Release),
                // A second `start` is not an action; it is ignored.
                Action::Start(_) => None,
            }
        });
        let takeover = self
            .engine
            .operator_stream(who, &chat_id, Box::pin(actions))
            .await
            .map_err(convert::status)?;
        let started = pb::TakeoverEvent {
            event: Some(pb::takeover_event::Event::Started(pb::TakeoverStarted {
                operator: Some(convert::operator(&takeover.operator)),
                transcript: Some(convert::history(&takeover.transcript)),
            })),
        };
        let live = ReceiverStream::new(takeover.events).map(|out| {
            Ok(pb::TakeoverEvent {
                event: Some(pb::takeover_event::Event::Chat(convert::server_event(&out))),
            })
        });
        let ended = futures::stream::once(takeover.ended).filter_map(|end| async move {
            let reason = match end.ok()? {
                TakeoverEnd::Released => "released",
                TakeoverEnd::LeaseLost => "lease_lost",
                TakeoverEnd::ShuttingDown => return None,
            };
            Some(Ok(pb::TakeoverEvent {
                event: Some(pb::takeover_event::Event::Ended(pb::TakeoverEnded {
                    reason: reason.into(),
                })),
            }))
        });
        Ok(Response::new(
            futures::stream::once(async { Ok(started) })
                .chain(live)
                .chain(ended)
                .boxed(),
        ))
    }

    async fn release(
        &self,
        r: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        self.engine
            .release(&who, &r.get_ref().chat_id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ReleaseResponse {}))
    }

    async fn delete_session(
        &self,
        r: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let files = self
            .engine
            .delete_session(&who, &r.get_ref().chat_id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::DeleteSessionResponse {
            files_deleted: u32::try_from(files).unwrap_or(u32::MAX),
        }))
    }

    async fn delete_file(
        &self,
        r: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        self.engine
            .delete_file(&who, &r.get_ref().id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::DeleteFileResponse {}))
    }

    async fn reencrypt(
        &self,
        r: Request<pb::ReencryptRequest>,
    ) -> Result<Response<pb::ReencryptResponse>, Status> {
        let who = authenticate_admin(self.engine.verifier(), r.metadata())?;
        let done = self
            .engine
            .reencrypt(&who, i64::from(r.get_ref().batch_size))
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ReencryptResponse {
            key_id: done.key_id,
            parts: done
                .parts
                .into_iter()
                .map(|p| pb::ReencryptCount {
                    part: p.column.to_owned(),
                    scanned: p.scanned,
                    rewritten: p.rewritten,
                    failed: p.failed,
                })
                .collect(),
        }))
    }
}

fn session_query(req: pb::ListSessionsRequest) -> Result<SessionQuery, ChatError> {
    let status = match req.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(ChatStatus::parse(raw).ok_or_else(|| {
            ChatError::invalid("status", "status must be \"active\" or \"ended\"")
        })?),
    };
    let sort = match pb::SortField::try_from(req.sort) {
        Ok(pb::SortField::Unspecified | pb::SortField::LastActivity) => SessionSort::LastActivity,
        Ok(pb::SortField::Started) => SessionSort::Started,
        Ok(pb::SortField::Duration) => SessionSort::Duration,
        Ok(pb::SortField::User) => SessionSort::User,
        Err(_) => return Err(ChatError::invalid("sort", "Unknown sort field")),
    };
    let descending = match pb::SortOrder::try_from(req.order) {
        Ok(pb::SortOrder::Unspecified | pb::SortOrder::Descending) => true,
        Ok(pb::SortOrder::Ascending) => false,
        Err(_) => return Err(ChatError::invalid("order", "Unknown sort order")),
    };
    Ok(SessionQuery {
        filter: SessionFilter {
            owner_id: req.user_id.filter(|u| !u.trim().is_empty()),
            status,
            needs_help: req.needs_help,
            admin_assisted: req.admin_assisted,
            started_from: time(req.from.as_ref(), "from")?,
            started_before: time(req.to.as_ref(), "to")?,
        },
        sort,
        descending,
        limit: req.limit,
        cursor: req.cursor.filter(|c| !c.is_empty()),
    })
}

/// A protobuf timestamp as stored time; out of range is a 400 naming `field`.
fn time(
    t: Option<&prost_types::Timestamp>,
    field: &'static str,
) -> Result<Option<NaiveDateTime>, ChatError> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .map(|d| d.naive_utc())
            .ok_or_else(|| ChatError::invalid(field, format!("{field} is not a valid time")))
    })
    .transpose()
}

fn admin_session(s: &AdminSession) -> pb::AdminSession {
    let m = &s.metrics;
    pb::AdminSession {
        summary: Some(convert::session_summary(&s.summary)),
        owner_id: s.owner_id.clone(),
        owner_name: s.owner_name.clone(),
        metrics: Some(pb::SessionMetrics {
            started_at: Some(convert::timestamp(m.started_at)),
            ended_at: m.ended_at.map(convert::timestamp),
            last_activity_at: Some(convert::timestamp(m.last_activity_at)),
            duration_ms: m.duration_ms,
            user_messages: m.user_messages,
            assistant_messages: m.assistant_messages,
            admin_messages: m.admin_messages,
            avg_ttft_ms: m.avg_ttft_ms,
            max_ttft_ms: m.max_ttft_ms,
            avg_response_ms: m.avg_response_ms,
            max_response_ms: m.max_response_ms,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            models: m.models.clone(),
            needs_help: m.needs_help,
            admin_assisted: m.admin_assisted,
        }),
        operator: s.operator.as_ref().map(convert::operator),
    }
}

fn audit_event(a: &AuditEntry) -> pb::AuditEvent {
    pb::AuditEvent {
        action: a.action.clone(),
        actor_id: a.actor_id.clone(),
        actor_name: a.actor_name.clone(),
        at: Some(convert::timestamp(a.at)),
    }
}

fn help_request(t: &HelpTicket) -> pb::HelpRequest {
    pb::HelpRequest {
        id: t.id.clone(),
        chat_id: t.chat_id.clone(),
        user_id: t.user_id.clone(),
        reason: t.reason.clone(),
        created_at: Some(convert::timestamp(t.created_at)),
        resolved_at: t.resolved_at.map(convert::timestamp),
        resolved_by: t.resolved_by.clone(),
    }
}

fn usage_row(l: &UsageLine) -> pb::UsageRow {
    pb::UsageRow {
        key: l.key.clone(),
        replies: l.replies,
        prompt_tokens: l.prompt_tokens,
        completion_tokens: l.completion_tokens,
        estimated_replies: l.estimated_replies,
        cost: l.cost,
    }
}

fn session_change(c: &SessionChange) -> pb::SessionChange {
    let kind = match c.kind {
        ChangeKind::Created => pb::ChangeKind::Created,
        ChangeKind::Message => pb::ChangeKind::Message,
        ChangeKind::NeedsHelp => pb::ChangeKind::NeedsHelp,
        ChangeKind::HelpResolved => pb::ChangeKind::HelpResolved,
        ChangeKind::OperatorJoined => pb::ChangeKind::OperatorJoined,
        ChangeKind::OperatorLeft => pb::ChangeKind::OperatorLeft,
        ChangeKind::Ended => pb::ChangeKind::Ended,
        ChangeKind::Updated => pb::ChangeKind::Updated,
        ChangeKind::Deleted => pb::ChangeKind::Deleted,
    };
    pb::SessionChange {
        chat_id: c.chat_id.clone(),
        kind: kind as i32,
        user_id: c.user_id.clone(),
        at: Some(convert::timestamp(c.at)),
        changes: Some(convert::changes(&c.changes)),
        role: c.role.map(|r| convert::role(r) as i32),
    }
}
