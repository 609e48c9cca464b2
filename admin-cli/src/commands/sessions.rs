//! `chatctl sessions list` (every filter and sort of `AdminService.ListSessions` as a flag,
//! `--all` follows the cursors) and `chatctl sessions show ID` (metrics, a transcript page, the
//! audit trail and help requests).

use chat_edge::admin::json;
use chat_edge::admin::query::{self, Bound};
use chat_proto::pb::admin as pb;
use chat_proto::pb::chat::ChatMessage;

use super::Context;
use crate::output::{self, Table};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Sessions of every user, filtered and sorted (a table; `--json` for scripts).
    List(ListArgs),
    /// One session: metrics, transcript page, audit trail, help requests.
    Show(ShowArgs),
    /// Delete a session now, with its messages and the files no other session holds.
    Delete {
        /// The session's chat id.
        id: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Sort {
    LastActivity,
    Started,
    Duration,
    User,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this user's sessions (the owner's user id).
    #[arg(long)]
    user: Option<String>,
    /// Only active or only ended sessions.
    #[arg(long, value_parser = ["active", "ended"])]
    status: Option<String>,
    /// Only sessions that asked for help (`--needs-help=false`: only those that did not).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    needs_help: Option<bool>,
    /// Only sessions an operator took part in (`--assisted=false`: only those without).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    assisted: Option<bool>,
    /// Sessions started at or after this time (RFC 3339, or a date: that day's 00:00 UTC).
    #[arg(long, value_parser = parse_from, value_name = "TIME")]
    from: Option<prost_types::Timestamp>,
    /// Sessions started before this time (RFC 3339, or a date: up to the end of that UTC day).
    #[arg(long, value_parser = parse_to, value_name = "TIME")]
    to: Option<prost_types::Timestamp>,
    /// Sort field.
    #[arg(long, value_enum, default_value = "last-activity")]
    sort: Sort,
    /// Ascending order.
    #[arg(long, conflicts_with = "desc")]
    asc: bool,
    /// Descending order (the default).
    #[arg(long)]
    desc: bool,
    /// Sessions per page, 1..100 (the core's default: 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: Option<u32>,
    /// Continue after a previous page (its `nextCursor`).
    #[arg(long, conflicts_with = "all")]
    cursor: Option<String>,
    /// Follow the cursors and print every page.
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The session's chat id.
    id: String,
    /// Transcript page: messages older than this cursor (from a previous page).
    #[arg(long)]
    before: Option<String>,
    /// Transcript messages per page, 1..100 (the core's default: 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: Option<u32>,
}

pub fn parse_from(raw: &str) -> Result<prost_types::Timestamp, String> {
    query::parse_time(raw, Bound::From).map(query::timestamp)
}

pub fn parse_to(raw: &str) -> Result<prost_types::Timestamp, String> {
    query::parse_time(raw, Bound::To).map(query::timestamp)
}

pub async fn run(cmd: Command, cx: &Context) -> anyhow::Result<()> {
    match cmd {
        Command::List(args) => list(args, cx).await,
        Command::Show(args) => show(args, cx).await,
        Command::Delete { id } => delete(&id, cx).await,
    }
}

async fn delete(id: &str, cx: &Context) -> anyhow::Result<()> {
    let session = cx.core.session().await?;
    let deleted = session
        .admin()
        .delete_session(session.request(pb::DeleteSessionRequest {
            chat_id: id.to_owned(),
        }))
        .await
        .map_err(|s| session.failure(&format!("deleting session {id}"), &s))?
        .into_inner();
    if cx.json {
        output::print_json(&serde_json::json!({
            "deleted": id,
            "filesDeleted": deleted.files_deleted,
        }));
    } else {
        println!("deleted session {id} ({} files)", deleted.files_deleted);
    }
    Ok(())
}

async fn list(args: ListArgs, cx: &Context) -> anyhow::Result<()> {
    let session = cx.core.session().await?;
    let mut admin = session.admin();
    let sort = match args.sort {
        Sort::LastActivity => pb::SortField::LastActivity,
        Sort::Started => pb::SortField::Started,
        Sort::Duration => pb::SortField::Duration,
        Sort::User => pb::SortField::User,
    };
    let order = if args.asc {
        pb::SortOrder::Ascending
    } else {
        pb::SortOrder::Descending
    };
    let mut request = pb::ListSessionsRequest {
        user_id: args.user,
        status: args.status,
        needs_help: args.needs_help,
        admin_assisted: args.assisted,
        from: args.from,
        to: args.to,
        sort: sort as i32,
        order: order as i32,
        limit: args.limit.or(args.all.then_some(100)),
        cursor: args.cursor,
    };
    let mut sessions = Vec::new();
    let next_cursor = loop {
        let page = admin
            .list_sessions(session.request(request.clone()))
            .await
            .map_err(|s| session.failure("listing sessions", &s))?
            .into_inner();
        sessions.extend(page.sessions);
        match page.next_cursor {
            Some(cursor) if args.all => request.cursor = Some(cursor),
            other => break other,
        }
    };
    let page = pb::ListSessionsResponse {
        sessions,
        next_cursor,
    };
    if cx.json {
        output::print_json(&json::session_page(&page));
        return Ok(());
    }
    let mut table = Table::new(&[
        "CHAT",
        "USER",
        "STATUS",
        "STARTED",
        "LAST ACTIVITY",
        "DURATION",
        "MSGS",
        "TOKENS",
        "FLAGS",
        "TITLE",
    ]);
    for s in &page.sessions {
        let summary = s.summary.clone().unwrap_or_default();
        let metrics = s.metrics.clone().unwrap_or_default();
        let mut flags = Vec::new();
        if summary.needs_help {
            flags.push("help".to_owned());
        }
        if summary.admin_assisted {
            flags.push("assisted".to_owned());
        }
        if let Some(op) = &s.operator {
            flags.push(format!("held:{}", op.id));
        }
        table.row(vec![
            summary.chat_id,
            s.owner_id.clone(),
            summary.status,
            output::time(summary.started_at.as_ref()),
            output::time(summary.last_activity_at.as_ref()),
            output::duration_ms(metrics.duration_ms),
            summary.message_count.to_string(),
            format!("{}/{}", metrics.prompt_tokens, metrics.completion_tokens),
            flags.join(","),
            summary.title,
        ]);
    }
    table.print();
    if let Some(cursor) = &page.next_cursor {
        eprintln!("more sessions: --cursor {cursor} (or --all)");
    }
    Ok(())
}

async fn show(args: ShowArgs, cx: &Context) -> anyhow::Result<()> {
    let session = cx.core.session().await?;
    let detail = session
        .admin()
        .get_session(session.request(pb::GetSessionRequest {
            chat_id: args.id.clone(),
            before: args.before,
            limit: args.limit,
        }))
        .await
        .map_err(|s| session.failure(&format!("showing session {}", args.id), &s))?
        .into_inner();
    if cx.json {
        output::print_json(&json::session_detail(&detail));
        return Ok(());
    }
    print!("{}", render_detail(&detail));
    Ok(())
}

fn render_detail(detail: &pb::SessionDetail) -> String {
    let s = detail.session.clone().unwrap_or_default();
    let summary = s.summary.clone().unwrap_or_default();
    let m = s.metrics.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<14}{value}\n"));
    line(
        "session",
        format!("{}  {:?}", summary.chat_id, summary.title),
    );
    line("owner", format!("{} ({})", s.owner_id, s.owner_name));
    line(
        "status",
        format!(
            "{}  model {}  agent {}",
            summary.status,
            summary.model,
            if summary.agent_id.is_empty() {
                "-"
            } else {
                &summary.agent_id
            }
        ),
    );
    line("started", output::time(m.started_at.as_ref()));
    line("last activity", output::time(m.last_activity_at.as_ref()));
    line("ended", output::time(m.ended_at.as_ref()));
    line("duration", output::duration_ms(m.duration_ms));
    line(
        "messages",
        format!(
            "user {}, assistant {}, operator {}",
            m.user_messages, m.assistant_messages, m.admin_messages
        ),
    );
    line(
        "first token",
        format!(
            "avg {}, max {}",
            output::opt_ms(m.avg_ttft_ms),
            output::opt_ms(m.max_ttft_ms)
        ),
    );
    line(
        "response",
        format!(
            "avg {}, max {}",
            output::opt_ms(m.avg_response_ms),
            output::opt_ms(m.max_response_ms)
        ),
    );
    line(
        "tokens",
        format!("in {}, out {}", m.prompt_tokens, m.completion_tokens),
    );
    line(
        "models",
        if m.models.is_empty() {
            "-".to_owned()
        } else {
            m.models.join(", ")
        },
    );
    let flags = [
        output::flag(m.needs_help, "needs help"),
        output::flag(m.admin_assisted, "admin assisted"),
    ];
    let flags: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .filter(|f| !f.is_empty())
        .collect();
    line(
        "flags",
        if flags.is_empty() {
            "-".to_owned()
        } else {
            flags.join(", ")
        },
    );
    line(
        "operator",
        s.operator
            .as_ref()
            .map_or_else(|| "-".to_owned(), |o| format!("{} ({})", o.id, o.name)),
    );

    let transcript = detail.transcript.clone().unwrap_or_default();
    out.push_str(&format!(
        "\ntranscript ({} messages",
        transcript.messages.len()
    ));
    if transcript.has_more {
        out.push_str(&format!("; older: --before {}", transcript.cursor));
    }
    out.push_str(")\n");
    for message in &transcript.messages {
        out.push_str(&format!("  {}\n", message_line(message)));
    }
    out.push_str("\naudit\n");
    let mut audit = Table::new(&["  AT", "ACTION", "BY"]);
    for a in &detail.audit {
        audit.row(vec![
            format!("  {}", output::time(a.at.as_ref())),
            a.action.clone(),
            format!("{} ({})", a.actor_id, a.actor_name),
        ]);
    }
    out.push_str(&audit.render());
    out.push_str("\nhelp requests\n");
    out.push_str(&help_table(&detail.help_requests).render());
    out
}

/// `2024-05-01T12:00:00Z  user alice: text` (an operator's message: `admin NAME`).
pub fn message_line(m: &ChatMessage) -> String {
    let who = match m
        .metadata
        .as_ref()
        .and_then(|md| md.operator_name.as_deref())
    {
        Some(name) => format!("{} {name}", json::role_name(m.role)),
        None => format!("{} {}", json::role_name(m.role), m.user_id),
    };
    format!(
        "{}  {who}: {}",
        output::time(m.created_at.as_ref()),
        m.content
    )
}

/// The help queue as a table (also used by `chatctl help-requests`).
pub fn help_table(requests: &[pb::HelpRequest]) -> Table {
    let mut table = Table::new(&["ID", "CHAT", "USER", "ASKED", "RESOLVED", "BY", "REASON"]);
    for h in requests {
        table.row(vec![
            h.id.clone(),
            h.chat_id.clone(),
            h.user_id.clone(),
            output::time(h.created_at.as_ref()),
            output::time(h.resolved_at.as_ref()),
            h.resolved_by.clone().unwrap_or_else(|| "-".to_owned()),
            h.reason.clone().unwrap_or_default(),
        ]);
    }
    table
}
