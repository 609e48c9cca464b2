//! The operators' gRPC API (`admin.v1.AdminService`) against the real core: who may call it,
//! the session list (every filter, sort and cursor paging checked against the database), a
//! session's detail with metrics, audit and help requests, usage and cost, the help queue, the
//! live feed in order, the takeover stream, and discovery by reflection.

use chat_core::storage;
use chat_proto::pb::admin::{self as pb, admin_service_client::AdminServiceClient};
use chat_proto::pb::chat as chat_pb;
use chat_tests::{Backend, Stack, StackOptions, WAIT, Ws, spawn_stack};
use futures::StreamExt;
use serde_json::json;
use tonic::transport::Channel;

async fn admin(stack: &Stack) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(stack.grpc().await)
}

fn as_user<T>(stack: &Stack, user: &str, roles: &[&str], msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    let bearer = format!("Bearer {}", stack.token(user, roles));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().expect("metadata"));
    request
}

fn as_admin<T>(stack: &Stack, msg: T) -> tonic::Request<T> {
    as_user(stack, "root", &["admin"], msg)
}

/// A finished turn in a new chat of `ws`'s user; returns the chat id.
async fn turn(ws: &mut Ws, content: &str, id: &str) -> String {
    ws.send_message(None, content, id).await;
    let chat = ws.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    ws.recv_reply().await;
    chat
}

fn stack_options(backend: Backend) -> StackOptions {
    StackOptions::default().backend(backend).core(|c| {
        // Several sessions per user in these tests.
        c.chat.single_active_session = false;
        c.llm.models[0].pricing = Some(chat_core::llm::Pricing {
            prompt_per_million: 1.0,
            completion_per_million: 2.0,
        });
    })
}

#[tokio::test]
async fn only_admins_may_call_it() {
    let stack = spawn_stack(stack_options(Backend::Sqlite)).await;
    let mut client = admin(&stack).await;
    let denied = client
        .list_sessions(as_user(
            &stack,
            "alice",
            &[],
            pb::ListSessionsRequest::default(),
        ))
        .await
        .expect_err("a user");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let usage = client
        .get_usage(as_user(
            &stack,
            "alice",
            &[],
            pb::GetUsageRequest::default(),
        ))
        .await
        .expect_err("a user");
    assert_eq!(usage.code(), tonic::Code::PermissionDenied);
    let anonymous = client
        .list_help_requests(tonic::Request::new(pb::ListHelpRequestsRequest::default()))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let watch = client
        .watch_sessions(as_user(&stack, "alice", &[], pb::WatchSessionsRequest {}))
        .await
        .expect_err("a user");
    assert_eq!(watch.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn the_session_list_filters_sorts_and_pages_as_the_database_holds_on_sqlite() {
    the_session_list_filters_sorts_and_pages(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_session_list_filters_sorts_and_pages_as_the_database_holds_on_postgres() {
    the_session_list_filters_sorts_and_pages(Backend::Postgres).await;
}

async fn the_session_list_filters_sorts_and_pages(backend: Backend) {
    let stack = spawn_stack(stack_options(backend)).await;
    let (mut alice, _) = stack.connect("alice").await;
    let (mut bob, _) = stack.connect("bob").await;
    let a1 = turn(&mut alice, "first of alice", "a1").await;
    let b1 = turn(&mut bob, "first of bob", "b1").await;
    let a2 = turn(&mut alice, "second of alice", "a2").await;
    alice
        .send(json!({"type": "help_request", "data": {"chatId": a2}}))
        .await;
    alice.recv_type("chat_update").await;
    bob.send(json!({"type": "chat_update", "data": {"action": "end", "chatId": b1}}))
        .await;
    bob.recv_type("chat_update").await;

    let mut client = admin(&stack).await;
    let list = |req: pb::ListSessionsRequest| {
        let mut client = client.clone();
        let request = as_admin(&stack, req);
        async move {
            let page = client
                .list_sessions(request)
                .await
                .expect("list")
                .into_inner();
            let ids: Vec<String> = page
                .sessions
                .iter()
                .map(|s| s.summary.as_ref().expect("summary").chat_id.clone())
                .collect();
            (ids, page)
        }
    };
    // Newest activity first by default.
    let (ids, page) = list(pb::ListSessionsRequest::default()).await;
    let mut by_activity: Vec<_> = Vec::new();
    for id in [&a1, &b1, &a2] {
        let row = storage::get_chat(&stack.db, id)
            .await
            .expect("get")
            .expect("chat");
        by_activity.push((row.last_activity_at, row.id));
    }
    by_activity.sort();
    by_activity.reverse();
    assert_eq!(
        ids,
        by_activity
            .into_iter()
            .map(|(_, id)| id)
            .collect::<Vec<_>>()
    );
    assert_eq!(page.next_cursor, None);
    let first = &page.sessions[0];
    assert!(first.metrics.is_some() && !first.owner_name.is_empty());

    // Each filter.
    let filtered = [
        (
            pb::ListSessionsRequest {
                user_id: Some("alice".into()),
                ..Default::default()
            },
            vec![&a2, &a1],
        ),
        (
            pb::ListSessionsRequest {
                status: Some("ended".into()),
                ..Default::default()
            },
            vec![&b1],
        ),
        (
            pb::ListSessionsRequest {
                needs_help: Some(true),
                ..Default::default()
            },
            vec![&a2],
        ),
        (
            pb::ListSessionsRequest {
                admin_assisted: Some(true),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (req, want) in filtered {
        let (mut ids, _) = list(req.clone()).await;
        ids.sort();
        let mut want: Vec<String> = want.into_iter().cloned().collect();
        want.sort();
        assert_eq!(ids, want, "{req:?}");
    }
    let a2_row = storage::get_chat(&stack.db, &a2)
        .await
        .expect("get")
        .expect("chat");
    let from = chat_core::grpc::convert::timestamp(a2_row.started_at);
    let (ids, _) = list(pb::ListSessionsRequest {
        from: Some(from),
        ..Default::default()
    })
    .await;
    assert_eq!(ids, vec![a2.clone()], "started at or after a2's start");
    let (ids, _) = list(pb::ListSessionsRequest {
        to: Some(from),
        ..Default::default()
    })
    .await;
    assert!(
        !ids.contains(&a2) && ids.len() == 2,
        "started before a2: {ids:?}"
    );

    // Sorts: started ascending is creation order; user ascending puts alice first.
    let (ids, _) = list(pb::ListSessionsRequest {
        sort: pb::SortField::Started as i32,
        order: pb::SortOrder::Ascending as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(ids, vec![a1.clone(), b1.clone(), a2.clone()]);
    let (ids, page) = list(pb::ListSessionsRequest {
        sort: pb::SortField::User as i32,
        order: pb::SortOrder::Ascending as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(
        page.sessions
            .iter()
            .map(|s| s.owner_id.as_str())
            .collect::<Vec<_>>(),
        vec!["alice", "alice", "bob"]
    );
    assert_eq!(ids.len(), 3);
    let (_, page) = list(pb::ListSessionsRequest {
        sort: pb::SortField::Duration as i32,
        ..Default::default()
    })
    .await;
    let durations: Vec<i64> = page
        .sessions
        .iter()
        .map(|s| s.metrics.as_ref().expect("metrics").duration_ms)
        .collect();
    let mut sorted = durations.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(durations, sorted, "longest first");

    // Cursor paging: one at a time visits every session exactly once, in order.
    for (sort, order) in [
        (pb::SortField::LastActivity, pb::SortOrder::Descending),
        (pb::SortField::Started, pb::SortOrder::Ascending),
        (pb::SortField::Duration, pb::SortOrder::Descending),
        (pb::SortField::User, pb::SortOrder::Descending),
    ] {
        let (all, _) = list(pb::ListSessionsRequest {
            sort: sort as i32,
            order: order as i32,
            ..Default::default()
        })
        .await;
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let (ids, page) = list(pb::ListSessionsRequest {
                sort: sort as i32,
                order: order as i32,
                limit: Some(1),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await;
            paged.extend(ids);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(paged.len() <= 3, "paging ends");
        }
        assert_eq!(paged, all, "{sort:?} {order:?}");
    }

    let bad = client
        .list_sessions(as_admin(
            &stack,
            pb::ListSessionsRequest {
                status: Some("sleeping".into()),
                ..Default::default()
            },
        ))
        .await
        .expect_err("bad status");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        bad.metadata().get("x-field").and_then(|v| v.to_str().ok()),
        Some("status")
    );
    let bad = client
        .list_sessions(as_admin(
            &stack,
            pb::ListSessionsRequest {
                cursor: Some("t.not-a-number.x".into()),
                ..Default::default()
            },
        ))
        .await
        .expect_err("bad cursor");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_session_detail_has_metrics_transcript_audit_and_help_requests() {
    let stack = spawn_stack(stack_options(Backend::Sqlite)).await;
    let (mut alice, _) = stack.connect("alice").await;
    let chat = turn(&mut alice, "hello there", "a1").await;
    alice.send_message(Some(&chat), "and again", "a2").await;
    alice.recv_reply().await;
    alice
        .send(json!({"type": "help_request", "data": {"chatId": chat, "reason": "stuck"}}))
        .await;
    alice.recv_type("chat_update").await;
    let (mut op, _) = stack.connect_with_roles("root", &["admin"]).await;
    op.send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    op.recv_type("operator_joined").await;
    op.send(json!({"type": "release", "data": {"chatId": chat}}))
        .await;
    op.recv_type("operator_left").await;

    let mut client = admin(&stack).await;
    let detail = client
        .get_session(as_admin(
            &stack,
            pb::GetSessionRequest {
                chat_id: chat.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("detail")
        .into_inner();
    let session = detail.session.expect("session");
    let m = session.metrics.expect("metrics");
    assert_eq!(
        (m.user_messages, m.assistant_messages, m.admin_messages),
        (2, 2, 0)
    );
    let usage = storage::usage_for_message(
        &stack.db,
        &storage::history(&stack.db, &chat, None, 100)
            .await
            .expect("history")
            .0
            .iter()
            .find(|r| r.role == "assistant")
            .expect("a reply")
            .id,
    )
    .await
    .expect("usage")
    .expect("row");
    assert!(
        m.prompt_tokens >= usage.prompt_tokens && m.completion_tokens >= usage.completion_tokens
    );
    assert!(m.avg_response_ms.is_some() && m.max_response_ms.is_some());
    assert_eq!(m.models, vec!["demo".to_string()]);
    assert!(
        m.admin_assisted && !m.needs_help,
        "takeover answered the help request"
    );
    assert!(m.duration_ms >= 0 && m.ended_at.is_none());
    let transcript = detail.transcript.expect("transcript");
    assert_eq!(transcript.messages.len(), 4);
    let actions: Vec<&str> = detail.audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, vec!["help_requested", "takeover", "release"]);
    assert_eq!(detail.audit[1].actor_id, "root");
    assert_eq!(detail.help_requests.len(), 1);
    let help = &detail.help_requests[0];
    assert_eq!(help.reason.as_deref(), Some("stuck"));
    assert_eq!(help.resolved_by.as_deref(), Some("root"));

    let missing = client
        .get_session(as_admin(
            &stack,
            pb::GetSessionRequest {
                chat_id: "nope".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("unknown chat");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn usage_equals_the_stored_usage_with_cost() {
    let stack = spawn_stack(stack_options(Backend::Sqlite)).await;
    let (mut alice, _) = stack.connect("alice").await;
    let (mut bob, _) = stack.connect("bob").await;
    turn(&mut alice, "one", "a1").await;
    turn(&mut alice, "two", "a2").await;
    turn(&mut bob, "three", "b1").await;

    let mut stored = std::collections::BTreeMap::<String, (i64, i64, i64)>::new();
    let mut estimated = 0;
    for user in ["alice", "bob"] {
        for chat in storage::list_user_chats(&stack.db, user, 100)
            .await
            .expect("chats")
        {
            for row in storage::history(&stack.db, &chat.id, None, 100)
                .await
                .expect("h")
                .0
            {
                if let Some(u) = storage::usage_for_message(&stack.db, &row.id)
                    .await
                    .expect("u")
                {
                    estimated += i64::from(u.estimated);
                    let e = stored.entry(u.user_id.clone()).or_default();
                    e.0 += 1;
                    e.1 += u.prompt_tokens;
                    e.2 += u.completion_tokens;
                }
            }
        }
    }
    let mut client = admin(&stack).await;
    let report = client
        .get_usage(as_admin(
            &stack,
            pb::GetUsageRequest {
                by: pb::UsageGrouping::User as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    let got: std::collections::BTreeMap<String, (i64, i64, i64)> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                (r.replies, r.prompt_tokens, r.completion_tokens),
            )
        })
        .collect();
    assert_eq!(got, stored);
    assert_eq!(report.currency, "USD");
    for row in &report.rows {
        let want = (row.prompt_tokens as f64 * 1.0 + row.completion_tokens as f64 * 2.0) / 1e6;
        let cost = row.cost.expect("priced");
        assert!((cost - want).abs() < 1e-12, "{row:?}");
    }
    let total = report.total.expect("total");
    assert_eq!(total.replies, 3);
    assert_eq!(
        total.estimated_replies, estimated,
        "replies whose counts were estimated"
    );

    let by_model = client
        .get_usage(as_admin(
            &stack,
            pb::GetUsageRequest {
                by: pb::UsageGrouping::Model as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    assert_eq!(by_model.rows.len(), 1);
    assert_eq!(
        (by_model.rows[0].key.as_str(), by_model.rows[0].replies),
        ("demo", 3)
    );
    let by_day = client
        .get_usage(as_admin(
            &stack,
            pb::GetUsageRequest {
                by: pb::UsageGrouping::Day as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        by_day
            .rows
            .iter()
            .map(|r| r.key.as_str())
            .collect::<Vec<_>>(),
        vec![today.as_str()]
    );
    let future = chat_core::grpc::convert::timestamp(
        (chrono::Utc::now() + chrono::Duration::days(1)).naive_utc(),
    );
    let none = client
        .get_usage(as_admin(
            &stack,
            pb::GetUsageRequest {
                from: Some(future),
                ..Default::default()
            },
        ))
        .await
        .expect("usage")
        .into_inner();
    assert!(none.rows.is_empty());
}

#[tokio::test]
async fn the_help_queue_lists_open_requests_first_and_resolving_clears_the_flag() {
    let stack = spawn_stack(stack_options(Backend::Sqlite)).await;
    let (mut alice, _) = stack.connect("alice").await;
    let c1 = turn(&mut alice, "one", "a1").await;
    let c2 = turn(&mut alice, "two", "a2").await;
    for chat in [&c1, &c2] {
        alice
            .send(json!({"type": "help_request", "data": {"chatId": chat, "reason": "please"}}))
            .await;
        alice.recv_type("chat_update").await;
    }
    let mut client = admin(&stack).await;
    let queue = client
        .list_help_requests(as_admin(&stack, pb::ListHelpRequestsRequest::default()))
        .await
        .expect("queue")
        .into_inner()
        .requests;
    assert_eq!(
        queue.iter().map(|r| r.chat_id.as_str()).collect::<Vec<_>>(),
        vec![c1.as_str(), c2.as_str()]
    );
    let resolved = client
        .resolve_help_request(as_admin(
            &stack,
            pb::ResolveHelpRequestRequest {
                id: queue[0].id.clone(),
            },
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(resolved.resolved_by.as_deref(), Some("root"));
    // Members see the flag clear (a durable chat_update).
    let update = alice.recv_type("chat_update").await;
    assert_eq!(update["data"]["chatId"], c1.as_str());
    assert_eq!(update["data"]["updates"]["needsHelp"], false);
    assert!(
        !storage::get_chat(&stack.db, &c1)
            .await
            .expect("get")
            .expect("chat")
            .needs_help
    );

    let again = client
        .resolve_help_request(as_admin(
            &stack,
            pb::ResolveHelpRequestRequest {
                id: queue[0].id.clone(),
            },
        ))
        .await
        .expect_err("twice");
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    let unknown = client
        .resolve_help_request(as_admin(
            &stack,
            pb::ResolveHelpRequestRequest { id: "nope".into() },
        ))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let open = client
        .list_help_requests(as_admin(&stack, pb::ListHelpRequestsRequest::default()))
        .await
        .expect("queue")
        .into_inner()
        .requests;
    assert_eq!(
        open.iter().map(|r| r.chat_id.as_str()).collect::<Vec<_>>(),
        vec![c2.as_str()]
    );
    let all = client
        .list_help_requests(as_admin(
            &stack,
            pb::ListHelpRequestsRequest {
                include_resolved: true,
                ..Default::default()
            },
        ))
        .await
        .expect("queue")
        .into_inner()
        .requests;
    assert_eq!(all.len(), 2);
    assert!(
        all[0].resolved_at.is_none() && all[1].resolved_at.is_some(),
        "open first"
    );
    // The flag is clear again, so the user may ask again.
    alice
        .send(json!({"type": "help_request", "data": {"chatId": c1}}))
        .await;
    assert_eq!(
        alice.recv_type("chat_update").await["data"]["updates"]["needsHelp"],
        true
    );
}

#[tokio::test]
async fn the_live_feed_carries_a_scripted_session_in_order() {
    let stack = spawn_stack(stack_options(Backend::Sqlite)).await;
    let mut client = admin(&stack).await;
    let mut feed = client
        .watch_sessions(as_admin(&stack, pb::WatchSessionsRequest {}))
        .await
        .expect("watch")
        .into_inner();
    let (mut alice, _) = stack.connect("alice").await;
    let chat = turn(&mut alice, "hello", "a1").await;
    alice
        .send(json!({"type": "help_request", "data": {"chatId": chat}}))
        .await;
    alice.recv_type("chat_update").await;
    let (mut op, _) = stack.connect_with_roles("root", &["admin"]).await;
    op.send(json!({"type": "takeover", "data": {"chatId": chat}}))
        .await;
    op.recv_type("operator_joined").await;
    op.send_message(Some(&chat), "a human here", "op1").await;
    op.recv_type("ack").await;
    op.send(json!({"type": "release", "data": {"chatId": chat}}))
        .await;
    op.recv_type("operator_left").await;
    alice
        .send(json!({"type": "chat_update", "data": {"action": "end", "chatId": chat}}))
        .await;
    use pb::ChangeKind as K;
    let want = [
        (K::Created, None),
        (K::Message, Some(chat_pb::Role::User)),
        (K::Message, Some(chat_pb::Role::Assistant)),
        (K::NeedsHelp, None),
        (K::OperatorJoined, None),
        (K::HelpResolved, None),
        (K::Message, Some(chat_pb::Role::Admin)),
        (K::OperatorLeft, None),
        (K::Ended, None),
    ];
    for (kind, role) in want {
        let change = tokio::time::timeout(WAIT, feed.next())
            .await
            .expect("change in time")
            .expect("feed open")
            .expect("change");
        assert_eq!(change.chat_id, chat);
        assert_eq!(change.user_id, "alice");
        assert_eq!(
            (
                K::try_from(change.kind).ok(),
                change.role.and_then(|r| chat_pb::Role::try_from(r).ok())
            ),
            (Some(kind), role),
            "{change:?}"
        );
    }
}

async fn next_event(events: &mut tonic::Streaming<pb::TakeoverEvent>) -> pb::takeover_event::Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("event")
        .event
        .expect("event")
}

#[tokio::test]
async fn a_takeover_stream_holds_the_session_for_its_lifetime() {
    let stack = spawn_stack(stack_options(Backend::Sqlite)).await;
    let (mut alice, _) = stack.connect("alice").await;
    let chat = turn(&mut alice, "I need a person", "a1").await;

    let mut client = admin(&stack).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::TakeoverRequest {
        action: Some(pb::takeover_request::Action::Start(pb::TakeoverStart {
            chat_id: chat.clone(),
        })),
    })
    .await
    .expect("send");
    let mut events = client
        .takeover(as_admin(
            &stack,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .expect("takeover")
        .into_inner();
    let pb::takeover_event::Event::Started(started) = next_event(&mut events).await else {
        panic!("started first");
    };
    assert_eq!(started.operator.expect("operator").id, "root");
    assert_eq!(started.transcript.expect("transcript").messages.len(), 2);
    assert_eq!(
        alice.recv_type("operator_joined").await["data"]["operator"]["id"],
        "root"
    );

    // A second operator is refused while the stream lives.
    let (tx2, rx2) = tokio::sync::mpsc::channel(1);
    tx2.send(pb::TakeoverRequest {
        action: Some(pb::takeover_request::Action::Start(pb::TakeoverStart {
            chat_id: chat.clone(),
        })),
    })
    .await
    .expect("send");
    let mut second = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx2));
    let bearer = format!("Bearer {}", stack.token("root2", &["admin"]));
    second
        .metadata_mut()
        .insert("authorization", bearer.parse().expect("metadata"));
    let refused = client.takeover(second).await.expect_err("held");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);

    // The operator's line reaches the user as role admin; the user's reaches the operator.
    tx.send(pb::TakeoverRequest {
        action: Some(pb::takeover_request::Action::Message(pb::OperatorMessage {
            content: "Hello, I am a human".into(),
            message_id: "op-1".into(),
        })),
    })
    .await
    .expect("send");
    let (line, _) = alice
        .recv_until(|f| f["type"] == "message" && f["data"]["message"]["role"] == "admin")
        .await;
    assert_eq!(line["data"]["message"]["content"], "Hello, I am a human");
    alice.send_message(Some(&chat), "thanks, human", "a2").await;
    loop {
        if let pb::takeover_event::Event::Chat(ev) = next_event(&mut events).await
            && let Some(chat_pb::server_event::Event::Message(m)) = ev.event
            && m.message
                .as_ref()
                .is_some_and(|m| m.content == "thanks, human")
        {
            break;
        }
    }
    // Ending the stream hands the session back.
    drop(tx);
    loop {
        if let pb::takeover_event::Event::Ended(ended) = next_event(&mut events).await {
            assert_eq!(ended.reason, "released");
            break;
        }
    }
    assert_eq!(
        alice.recv_type("operator_left").await["data"]["operator"]["id"],
        "root"
    );
    let row = storage::get_chat(&stack.db, &chat)
        .await
        .expect("get")
        .expect("chat");
    assert!(row.operator_id.is_none() && row.admin_assisted);
    // And the assistant answers again.
    alice.send_message(Some(&chat), "are you back?", "a3").await;
    let reply = alice.recv_reply().await;
    assert!(
        reply
            .iter()
            .any(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant")
    );
}

#[tokio::test]
async fn the_core_lists_its_services_by_reflection() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let stack = spawn_stack(stack_options(Backend::Sqlite)).await;
    let mut client = ServerReflectionClient::new(stack.grpc().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "chat.v1.ChatService",
        "admin.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}
