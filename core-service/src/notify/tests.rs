//! The notifier against an SMS API in the test (axum on a loopback port): retries, permanent
//! errors, the bounded queue, shutdown, and the off switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::broadcast;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// An SMS API answering the given statuses in order (then 201), counting requests.
async fn sink(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move || {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let status = statuses.get(n).copied().unwrap_or(201);
        async move { StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), count)
}

/// A server that accepts connections and never answers.
async fn hung() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

fn settings(base_url: &str) -> NotifySettings {
    NotifySettings {
        sms: Some(SmsSettings {
            base_url: base_url.into(),
            account: "AC1".into(),
            from: "+1".into(),
            to: vec!["+2".into()],
            token: Some("t".to_string().into()),
            timeout_ms: 60_000,
        }),
        retry: NotifyRetry {
            max_attempts: 3,
            base_delay_ms: 5,
            max_delay_ms: 20,
        },
        ..NotifySettings::default()
    }
}

fn start(settings: &NotifySettings) -> (Notifier, broadcast::Receiver<Report>) {
    let notifier = Notifier::start(settings).unwrap_or_else(|e| panic!("{e}"));
    let reports = notifier
        .subscribe()
        .unwrap_or_else(|| panic!("notifier is on"));
    (notifier, reports)
}

async fn next(reports: &mut broadcast::Receiver<Report>) -> Report {
    tokio::time::timeout(WAIT, reports.recv())
        .await
        .unwrap_or_else(|_| panic!("no report in time"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn with_no_channel_the_notifier_is_off_and_every_call_does_nothing() {
    let notifier = Notifier::start(&NotifySettings::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!notifier.is_enabled());
    assert!(notifier.subscribe().is_none());
    notifier.help_requested("u", "c", Some("reason"));
    notifier.model_failed("m", "status");
    notifier.model_succeeded("m");
    notifier.database_unreachable();
    assert!(notifier.shutdown(Duration::ZERO).await);
}

#[tokio::test]
async fn settings_that_do_not_validate_stop_the_start() {
    let mut bad = settings("ftp://nowhere");
    bad.alerts_per_hour = 0;
    let err = Notifier::start(&bad).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("notify.")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_api_that_fails_twice_is_retried_until_it_accepts() {
    let (url, count) = sink(vec![503, 429]).await;
    let (notifier, mut reports) = start(&settings(&url));
    notifier.database_unreachable();
    let report = next(&mut reports).await;
    assert_eq!(report.alert, AlertKind::DatabaseUnreachable);
    assert_eq!(report.channel, Channel::Sms);
    assert_eq!(report.outcome, Outcome::Sent { attempts: 3 });
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_the_last_failure_is_reported() {
    let (url, count) = sink(vec![400]).await;
    let (notifier, mut reports) = start(&settings(&url));
    notifier.help_requested("u", "c1", None);
    let report = next(&mut reports).await;
    assert_eq!(report.chat_id.as_deref(), Some("c1"));
    match report.outcome {
        Outcome::Failed { attempts, error } => {
            assert_eq!(attempts, 1);
            assert_eq!((error.kind, error.status), ("status", Some(400)));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let (url, _) = sink(vec![503, 503, 503]).await;
    let (notifier, mut reports) = start(&settings(&url));
    notifier.help_requested("u", "c2", None);
    assert!(matches!(
        next(&mut reports).await.outcome,
        Outcome::Failed { attempts: 3, .. }
    ));
}

#[tokio::test]
async fn a_full_queue_drops_alerts_at_once_instead_of_waiting() {
    let url = hung().await;
    let mut s = settings(&url);
    s.queue_capacity = 1;
    s.max_in_flight = 1;
    let (notifier, mut reports) = start(&s);
    // At most one delivery runs, the worker holds one more, the queue one: the fourth
    // alert cannot fit, however the tasks were scheduled. Each call returns at once.
    let started = tokio::time::Instant::now();
    for chat in ["c1", "c2", "c3", "c4"] {
        notifier.help_requested("u", chat, None);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut dropped = 0;
    while let Ok(report) = reports.try_recv() {
        assert_eq!(report.outcome, Outcome::Dropped, "{report:?}");
        dropped += 1;
    }
    assert!(dropped >= 1, "an alert was dropped");
    assert!(
        !notifier.shutdown(Duration::from_millis(50)).await,
        "the hung delivery outlives a short grace"
    );
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued_within_the_grace() {
    let (url, count) = sink(vec![]).await;
    let (notifier, mut reports) = start(&settings(&url));
    notifier.help_requested("u", "c1", Some("text"));
    assert!(notifier.shutdown(WAIT).await);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(
        next(&mut reports).await.outcome,
        Outcome::Sent { attempts: 1 }
    );
    notifier.help_requested("u", "c2", None);
    assert_eq!(
        next(&mut reports).await.outcome,
        Outcome::Dropped,
        "after shutdown nothing is queued"
    );
}

#[tokio::test]
async fn a_model_alerts_only_after_failing_for_the_threshold() {
    let (url, _) = sink(vec![]).await;
    let mut s = settings(&url);
    s.provider_failure_secs = 3600;
    let (notifier, mut reports) = start(&s);
    notifier.model_failed("m", "timeout");
    notifier.model_failed("m", "timeout");
    assert!(reports.try_recv().is_err(), "not failing for long enough");

    s.provider_failure_secs = 0;
    let (notifier, mut reports) = start(&s);
    notifier.model_failed("m", "timeout");
    let report = next(&mut reports).await;
    assert_eq!(report.alert, AlertKind::ModelFailing);
    assert_eq!(report.chat_id, None);
}
