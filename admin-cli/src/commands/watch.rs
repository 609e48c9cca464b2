//! `chatctl watch`: the live feed of session changes (`AdminService.WatchSessions`), one line
//! per change as the core pushes it; `--json` prints one JSON object per line. Ends on Ctrl-C,
//! or with an error when the core ends the feed (a watcher that fell behind is told to re-run).

use chat_edge::admin::json;
use chat_proto::pb::admin as pb;
use serde_json::Value;

use super::Context;
use crate::client::{CliError, exit};
use crate::output;

pub async fn run(cx: &Context) -> anyhow::Result<()> {
    let session = cx.core.session().await?;
    let mut feed = session
        .admin()
        .watch_sessions(session.request(pb::WatchSessionsRequest {}))
        .await
        .map_err(|s| session.failure("watching sessions", &s))?
        .into_inner();
    // On stderr, so `--json` output stays pure; printed once the core has subscribed us.
    eprintln!("watching session changes (Ctrl-C to stop)");
    loop {
        let next = tokio::select! {
            next = feed.message() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match next {
            Ok(Some(change)) => {
                let value = json::session_change(&change);
                if cx.json {
                    output::print_json_line(&value);
                } else {
                    println!("{}", change_line(&value));
                }
            }
            Ok(None) => {
                return Err(CliError::new(exit::FAILED, "the core ended the feed").into());
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                return Err(CliError::new(
                    exit::FAILED,
                    "the feed fell behind and the core dropped it; run chatctl watch again \
                     (and chatctl sessions list to catch up)",
                )
                .into());
            }
            Err(status) => return Err(session.failure("watching sessions", &status).into()),
        }
    }
}

/// `2024-05-01T12:00:00.000Z  message          chat-7  user=alice  role=user  messageCount=3`.
fn change_line(change: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut line = format!(
        "{}  {:<16} {}  user={}",
        text(&change["at"]),
        text(&change["kind"]),
        text(&change["chatId"]),
        text(&change["userId"]),
    );
    if let Some(role) = change["role"].as_str() {
        line.push_str(&format!("  role={role}"));
    }
    if let Some(changes) = change["changes"].as_object() {
        for (key, value) in changes {
            let value = match value {
                Value::Object(o) => o.get("id").map(text).unwrap_or_else(|| value.to_string()),
                other => text(other),
            };
            line.push_str(&format!("  {key}={value}"));
        }
    }
    line
}
