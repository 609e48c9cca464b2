//! `chatctl takeover ID`: hold a session for as long as this command runs
//! (`AdminService.Takeover`). The transcript and the session's live events stream in; each line
//! read from stdin goes to the user; `/release`, the end of input or Ctrl-C hands the session
//! back. It behaves the same when stdin is a pipe: before releasing it waits until the core has
//! acknowledged (or refused) every line it sent, then waits for the core's `ended`.

use std::collections::HashSet;
use std::io::BufRead;

use chat_proto::pb::admin::{self as pb, takeover_event, takeover_request};
use chat_proto::pb::chat::server_event::Event as Live;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Context;
use super::sessions::message_line;
use crate::client::{CliError, exit};

#[derive(clap::Args)]
pub struct Args {
    /// The session's chat id.
    id: String,
}

/// The line that hands the session back.
const RELEASE: &str = "/release";

fn action(action: takeover_request::Action) -> pb::TakeoverRequest {
    pb::TakeoverRequest {
        action: Some(action),
    }
}

pub async fn run(args: Args, cx: &Context) -> anyhow::Result<()> {
    let session = cx.core.session().await?;
    let what = format!("taking over {}", args.id);
    let (requests, outbound) = mpsc::channel(16);
    let start = takeover_request::Action::Start(pb::TakeoverStart {
        chat_id: args.id.clone(),
    });
    // The receiver is alive until `takeover` is called below, so this send cannot fail.
    let _ = requests.send(action(start)).await;
    let mut events = session
        .admin()
        .takeover(session.request(ReceiverStream::new(outbound)))
        .await
        .map_err(|s| session.failure(&what, &s))?
        .into_inner();

    // 1. Wait until the session is ours: the operator and the latest transcript page.
    let started = loop {
        match events.message().await {
            Ok(Some(pb::TakeoverEvent {
                event: Some(takeover_event::Event::Started(started)),
            })) => break started,
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Err(CliError::new(
                    exit::FAILED,
                    format!("{what}: the core ended the stream"),
                )
                .into());
            }
            Err(status) => return Err(session.failure(&what, &status).into()),
        }
    };
    let operator = started.operator.unwrap_or_default();
    println!("holding {} as {} ({})", args.id, operator.name, operator.id);
    for message in started.transcript.unwrap_or_default().messages {
        println!("{}", message_line(&message));
    }
    eprintln!("type a line to send it to the user; {RELEASE}, end of input or Ctrl-C hands back");

    // 2. Lines out, events in, until released.
    let mut lines = stdin_lines();
    let mut unacked: HashSet<String> = HashSet::new();
    let mut releasing = false;
    let mut release_sent = false;
    loop {
        tokio::select! {
            line = lines.recv(), if !releasing => match line {
                Some(line) if line.trim() == RELEASE => releasing = true,
                Some(line) if line.trim().is_empty() => {}
                Some(content) => {
                    let message_id = format!("op-{}", uuid::Uuid::new_v4().simple());
                    unacked.insert(message_id.clone());
                    let message = pb::OperatorMessage { content, message_id };
                    if requests.send(action(takeover_request::Action::Message(message))).await.is_err() {
                        return Err(CliError::new(exit::FAILED, format!("{what}: the stream closed")).into());
                    }
                }
                None => releasing = true,
            },
            _ = tokio::signal::ctrl_c() => {
                if releasing {
                    // A second Ctrl-C: leave now; closing the stream releases on the core.
                    return Err(CliError::new(exit::FAILED, "interrupted before the core confirmed the release").into());
                }
                releasing = true;
            }
            event = events.message() => match event {
                Ok(Some(pb::TakeoverEvent { event: Some(event) })) => match event {
                    takeover_event::Event::Chat(live) => {
                        if let Some(live) = live.event {
                            show(live, &mut unacked);
                        }
                    }
                    takeover_event::Event::Ended(ended) => {
                        println!("handed back {} ({})", args.id, ended.reason);
                        if ended.reason == "released" {
                            return Ok(());
                        }
                        return Err(CliError::new(exit::CONFLICT, format!("{what}: the session was taken back ({})", ended.reason)).into());
                    }
                    takeover_event::Event::Started(_) => {}
                },
                Ok(Some(pb::TakeoverEvent { event: None })) => {}
                Ok(None) if release_sent => return Ok(()),
                Ok(None) => {
                    return Err(CliError::new(exit::FAILED, format!("{what}: the core ended the stream")).into());
                }
                Err(status) => return Err(session.failure(&what, &status).into()),
            },
        }
        if releasing && !release_sent && unacked.is_empty() {
            let release = takeover_request::Action::Release(pb::TakeoverRelease {});
            if requests.send(action(release)).await.is_err() {
                return Err(
                    CliError::new(exit::FAILED, format!("{what}: the stream closed")).into(),
                );
            }
            release_sent = true;
        }
    }
}

/// Prints a live event of the session; acks and errors settle the lines waiting for them.
fn show(event: Live, unacked: &mut HashSet<String>) {
    match event {
        Live::Message(m) => {
            if let Some(message) = m.message {
                println!("{}", message_line(&message));
            }
        }
        Live::Ack(ack) => {
            unacked.remove(&ack.message_id);
        }
        Live::Error(error) => {
            if let Some(id) = &error.message_id {
                unacked.remove(id);
            }
            eprintln!("error {}: {}", error.code, error.message);
        }
        Live::OperatorJoined(op) => println!("operator {} joined", operator_name(&op)),
        Live::OperatorLeft(op) => println!("operator {} left", operator_name(&op)),
        Live::ChatUpdate(update) => {
            if let Some(status) = update.updates.and_then(|u| u.status) {
                println!("session status: {status}");
            }
        }
        Live::Presence(p) => {
            use chat_proto::pb::chat::PresenceStatus as P;
            let status = match P::try_from(p.status) {
                Ok(P::Online) => "online",
                Ok(P::Away) => "away",
                Ok(P::Offline) => "offline",
                Ok(P::Unspecified) | Err(_) => return,
            };
            println!("{} is {status}", p.user_id);
        }
        _ => {}
    }
}

fn operator_name(event: &chat_proto::pb::chat::OperatorEvent) -> String {
    event
        .operator
        .as_ref()
        .map_or_else(|| "-".to_owned(), |o| format!("{} ({})", o.name, o.id))
}

/// Reads stdin on a thread of its own: a blocking read cannot be cancelled, and a tokio
/// blocking task would hold the runtime open at exit until the user pressed Enter. The thread
/// ends with the input, or with the process.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}
