//! Operator notifications end to end: a help request through the real edge and core reaches
//! a real SMTP server (Python's aiosmtpd, started by the test) and an SMS API sink (axum, in
//! the test); the limits hold further alerts back; a hung or refusing SMTP server delays no
//! chat turn; a failing model and an unreachable database alert too. Every wait is on an
//! event: a frame, a delivery report of the core's notifier, a request at a sink.

use std::time::Duration;

use axum::http::Method;
use base64::Engine as _;
use chat_core::notify::{
    AlertKind, Channel, Limit, NotifyRetry, NotifySettings, Outcome, Report, SmsSettings,
    SmtpSettings,
};
use chat_tests::fake_llm::FakeScript;
use chat_tests::sms_sink::SmsSink;
use chat_tests::{
    Backend, Llm, SmtpServer, StackOptions, WAIT, Ws, chat_with_one_turn, free_port, spawn_stack,
};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

const LINK: &str = "http://127.0.0.1:8080/admin/#/sessions/{chatId}";
const ACCOUNT: &str = "AC0123456789";
const SMS_TOKEN: &str = "sms-token-for-tests";

fn smtp_at(port: u16) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        from: "Chat alerts <alerts@chat.test>".into(),
        to: vec!["ops@chat.test".into()],
        timeout_ms: 5_000,
        ..SmtpSettings::default()
    }
}

fn sms_at(base_url: &str) -> SmsSettings {
    SmsSettings {
        base_url: base_url.into(),
        account: ACCOUNT.into(),
        from: "+15550100".into(),
        to: vec!["+15550199".into()],
        token: Some(SMS_TOKEN.to_string().into()),
        ..SmsSettings::default()
    }
}

fn notify(smtp: Option<SmtpSettings>, sms: Option<SmsSettings>) -> NotifySettings {
    NotifySettings {
        session_link: Some(LINK.into()),
        smtp,
        sms,
        retry: NotifyRetry {
            max_attempts: 3,
            base_delay_ms: 10,
            max_delay_ms: 50,
        },
        ..NotifySettings::default()
    }
}

/// An SMTP server that accepts connections and never says a word; each accepted connection
/// is held open and announced on the returned channel.
async fn hung_smtp() -> (u16, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = tx.send(());
        }
    });
    (port, rx)
}

/// The next report matching `pred` (others skipped), failing after `wait`.
async fn report_where(
    reports: &mut broadcast::Receiver<Report>,
    wait: Duration,
    pred: impl Fn(&Report) -> bool,
) -> Report {
    tokio::time::timeout(wait, async {
        loop {
            match reports.recv().await {
                Ok(report) if pred(&report) => return report,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("notifier gone"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching notification report within {wait:?}"))
}

/// The reports for `chat` with these outcomes on both channels, in whatever order they come.
async fn both_channels(
    reports: &mut broadcast::Receiver<Report>,
    chat: &str,
    outcome: &'static str,
) -> Vec<Report> {
    let mut found: Vec<Report> = Vec::new();
    while found.len() < 2 {
        let report = report_where(reports, WAIT, |r| {
            r.chat_id.as_deref() == Some(chat)
                && r.outcome.as_str() == outcome
                && !found.iter().any(|f| f.channel == r.channel)
        })
        .await;
        found.push(report);
    }
    found
}

/// Undoes quoted-printable (RFC 2045): soft line breaks and `=XX` escapes.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=')
            .then(|| joined.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 mail body")
}

fn for_chat<'a>(
    channel: Channel,
    chat: &'a str,
    outcome: &'static str,
) -> impl Fn(&Report) -> bool + 'a {
    move |r| {
        r.channel == channel && r.chat_id.as_deref() == Some(chat) && r.outcome.as_str() == outcome
    }
}

async fn ask_for_help(ws: &mut Ws, chat: &str, reason: &str) {
    ws.send(json!({"type": "help_request", "data": {"chatId": chat, "reason": reason}}))
        .await;
    let update = ws.recv_type("chat_update").await;
    assert_eq!(update["data"]["updates"], json!({"needsHelp": true}));
}

/// The value of the `Label: value` line of a mail or SMS.
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(label)?.strip_prefix(": "))
        .map(str::trim)
}

fn assert_recent_rfc3339(time: &str) {
    let at = chrono::DateTime::parse_from_rfc3339(time)
        .unwrap_or_else(|e| panic!("{time:?} is not RFC 3339: {e}"));
    let age = chrono::Utc::now().signed_duration_since(at);
    assert!(
        age >= chrono::Duration::seconds(-5) && age <= chrono::Duration::seconds(60),
        "{time} is not about now"
    );
}

#[tokio::test]
async fn a_help_request_reaches_the_operators_by_email_and_sms() {
    let smtp = SmtpServer::start().await;
    let mut sink = SmsSink::start().await;
    let settings = notify(Some(smtp_at(smtp.port)), Some(sms_at(&sink.base_url)));
    let stack = spawn_stack(StackOptions::default().core(move |s| s.notify = settings)).await;
    let mut reports = stack.notifier.subscribe().expect("notifications on");

    let (mut alice, _) = stack.connect("alice").await;
    let chat = chat_with_one_turn(&mut alice, "I have a question").await;
    ask_for_help(&mut alice, &chat, "My order never arrived").await;

    for sent in both_channels(&mut reports, &chat, "sent").await {
        assert_eq!(sent.alert, AlertKind::HelpRequest);
        assert_eq!(sent.outcome, Outcome::Sent { attempts: 1 });
    }
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let raw = mails[0].replace("\r\n", "\n");
    let mail = if raw.contains("Content-Transfer-Encoding: quoted-printable") {
        quoted_printable(&raw)
    } else {
        raw
    };
    assert_eq!(
        field(&mail, "Subject"),
        Some("Help requested by alice"),
        "{mail}"
    );
    assert!(
        field(&mail, "From").is_some_and(|f| f.contains("alerts@chat.test")),
        "{mail}"
    );
    assert_eq!(field(&mail, "X-RcptTo"), Some("ops@chat.test"), "{mail}");
    assert_eq!(field(&mail, "User"), Some("alice"), "{mail}");
    assert_eq!(field(&mail, "Session"), Some(chat.as_str()), "{mail}");
    assert_recent_rfc3339(field(&mail, "Time").expect("a Time line"));
    let link = format!("http://127.0.0.1:8080/admin/#/sessions/{chat}");
    assert_eq!(field(&mail, "Link"), Some(link.as_str()), "{mail}");
    assert!(mail.contains("Reason:\nMy order never arrived\n"), "{mail}");

    let sms = sink.next().await;
    assert_eq!(sms.method, Method::POST);
    assert_eq!(
        sms.path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{SMS_TOKEN}"));
    assert_eq!(sms.authorization, Some(format!("Basic {basic}")));
    assert_eq!(sms.form.get("From").map(String::as_str), Some("+15550100"));
    assert_eq!(sms.form.get("To").map(String::as_str), Some("+15550199"));
    let body = sms.form.get("Body").expect("a Body field");
    assert_eq!(field(body, "User"), Some("alice"), "{body}");
    assert_eq!(field(body, "Session"), Some(chat.as_str()), "{body}");
    assert_recent_rfc3339(field(body, "Time").expect("a Time line"));
    assert!(body.contains(&link), "{body}");
    assert_eq!(
        field(body, "Reason"),
        Some("My order never arrived"),
        "{body}"
    );
}

#[tokio::test]
async fn a_second_help_request_inside_the_window_is_rate_limited_and_not_sent() {
    let smtp = SmtpServer::start().await;
    let mut sink = SmsSink::start().await;
    let mut settings = notify(Some(smtp_at(smtp.port)), Some(sms_at(&sink.base_url)));
    settings.alerts_per_hour = 1;
    let stack = spawn_stack(StackOptions::default().core(move |s| s.notify = settings)).await;
    let mut reports = stack.notifier.subscribe().expect("notifications on");

    let (mut alice, _) = stack.connect("alice").await;
    let first = chat_with_one_turn(&mut alice, "I have a question").await;
    let second = chat_with_one_turn(&mut alice, "I have a question").await;
    assert_ne!(first, second);
    ask_for_help(&mut alice, &first, "first").await;
    both_channels(&mut reports, &first, "sent").await;
    let sms = sink.next().await;
    assert!(sms.form["Body"].contains(&first));

    ask_for_help(&mut alice, &second, "second").await;
    for limited in both_channels(&mut reports, &second, "rate_limited").await {
        assert_eq!(limited.outcome, Outcome::RateLimited(Limit::Global));
    }
    // A limited alert is never queued, so nothing can still be on its way.
    assert_eq!(smtp.messages().len(), 1);
    assert!(sink.try_next().is_none(), "no second SMS");

    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        stack.core_metrics_addr.expect("metrics on")
    ))
    .await
    .expect("metrics")
    .text()
    .await
    .expect("metrics text");
    for line in [
        r#"chat_core_notifications_total{channel="email",outcome="rate_limited"}"#,
        r#"chat_core_notifications_total{channel="sms",outcome="sent"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn a_hung_smtp_server_delays_no_chat_turn() {
    let (port, mut accepted) = hung_smtp().await;
    let mut sink = SmsSink::start().await;
    let mut smtp = smtp_at(port);
    // Long enough that the delivery is still waiting when the test ends.
    smtp.timeout_ms = 120_000;
    let settings = notify(Some(smtp), Some(sms_at(&sink.base_url)));
    let stack = spawn_stack(StackOptions::default().core(move |s| s.notify = settings)).await;
    let mut reports = stack.notifier.subscribe().expect("notifications on");

    let (mut alice, _) = stack.connect("alice").await;
    let chat = chat_with_one_turn(&mut alice, "I have a question").await;
    ask_for_help(&mut alice, &chat, "hello?").await;
    tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("the core connects to the SMTP server")
        .expect("listener alive");
    // The SMS goes out while the email waits.
    report_where(&mut reports, WAIT, for_chat(Channel::Sms, &chat, "sent")).await;
    sink.next().await;

    alice.send_message(Some(&chat), "Still there?", "a-2").await;
    alice.recv_type("ack").await;
    let reply = alice.recv_reply().await;
    assert!(
        reply
            .iter()
            .any(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant"),
        "{reply:?}"
    );
    // The email is still pending: no outcome for it yet.
    while let Ok(report) = reports.try_recv() {
        assert_ne!(report.channel, Channel::Email, "{report:?}");
    }
}

#[tokio::test]
async fn a_refusing_smtp_server_is_retried_then_reported_without_stopping_the_chat() {
    // Nothing listens on this port: every connect is refused.
    let settings = notify(Some(smtp_at(free_port())), None);
    let stack = spawn_stack(StackOptions::default().core(move |s| s.notify = settings)).await;
    let mut reports = stack.notifier.subscribe().expect("notifications on");

    let (mut alice, _) = stack.connect("alice").await;
    let chat = chat_with_one_turn(&mut alice, "I have a question").await;
    ask_for_help(&mut alice, &chat, "anyone?").await;
    alice.send_message(Some(&chat), "Hello again", "a-2").await;
    alice.recv_type("ack").await;
    alice.recv_reply().await;
    let failed = report_where(
        &mut reports,
        WAIT,
        for_chat(Channel::Email, &chat, "failed"),
    )
    .await;
    match failed.outcome {
        Outcome::Failed { attempts, error } => {
            assert_eq!(attempts, 3, "every configured attempt was made");
            assert_eq!(error.kind, "connection");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failing_model_alerts_the_operators_once_per_window() {
    let mut sink = SmsSink::start().await;
    let mut settings = notify(None, Some(sms_at(&sink.base_url)));
    settings.provider_failure_secs = 0;
    let script = FakeScript::reply(&["fine"]).failing_first(&[400, 400]);
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(script))
            .core(move |s| s.notify = settings),
    )
    .await;
    let mut reports = stack.notifier.subscribe().expect("notifications on");
    let model_alert = |outcome: &'static str| {
        move |r: &Report| r.alert == AlertKind::ModelFailing && r.outcome.as_str() == outcome
    };

    let (mut alice, _) = stack.connect("alice").await;
    alice.send_message(None, "Hello", "a-1").await;
    let chat = alice.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_string();
    assert_eq!(alice.recv_type("error").await["data"]["code"], 502);
    report_where(&mut reports, WAIT, model_alert("sent")).await;
    let sms = sink.next().await;
    assert!(
        sms.form["Body"].contains("Model fake-openai failing since"),
        "{sms:?}"
    );

    alice.send_message(Some(&chat), "Hello?", "a-2").await;
    assert_eq!(alice.recv_type("error").await["data"]["code"], 502);
    let limited = report_where(&mut reports, WAIT, model_alert("rate_limited")).await;
    assert_eq!(limited.outcome, Outcome::RateLimited(Limit::PerKey));
    assert!(sink.try_next().is_none(), "one alert per window");
}

#[tokio::test]
async fn an_unreachable_database_alerts_the_operators() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let mut sink = SmsSink::start().await;
    let settings = notify(None, Some(sms_at(&sink.base_url)));
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let stack = spawn_stack(
        StackOptions::default()
            .backend(Backend::Postgres)
            .core(move |s| {
                s.notify = settings;
                // Housekeeping checks the database every half lease.
                s.chat.operator_lease_secs = 1;
                let _ = url_tx.send(s.database.url.clone());
            }),
    )
    .await;
    let mut reports = stack.notifier.subscribe().expect("notifications on");
    let url = url_rx.recv().expect("database url");
    let name = url.rsplit('/').next().expect("database name").to_string();

    // Take the core's database away: no new connections, the open ones ended.
    let server = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let mut admin = AsyncPgConnection::establish(&server)
        .await
        .expect("admin connection");
    diesel::sql_query(format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .expect("lock the database");
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)
    .await
    .expect("end its connections");

    // The pool gives up on a connection after 10 s; the check runs every 0.5 s.
    let sent = report_where(&mut reports, Duration::from_secs(30), |r| {
        r.alert == AlertKind::DatabaseUnreachable
    })
    .await;
    assert_eq!(sent.outcome.as_str(), "sent", "{sent:?}");
    let sms = sink.next().await;
    assert!(sms.form["Body"].contains("database unreachable"), "{sms:?}");
    drop(stack);
}
