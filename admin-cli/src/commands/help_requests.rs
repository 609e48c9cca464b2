//! `chatctl help-requests` (the help queue: open requests first, `--all` adds resolved ones)
//! and `chatctl help-requests resolve ID` (marks one resolved, clearing the session's flag).

use chat_edge::admin::json;
use chat_proto::pb::admin as pb;

use super::Context;
use super::sessions::help_table;
use crate::output;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Also list resolved requests (after the open ones, newest first).
    #[arg(long)]
    all: bool,
    /// At most this many requests, 1..100 (the core's default: 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: Option<u32>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Mark a help request resolved (clears the session's needs-help flag).
    Resolve {
        /// The help request's id (the ID column of the list).
        id: String,
    },
}

pub async fn run(args: Args, cx: &Context) -> anyhow::Result<()> {
    let session = cx.core.session().await?;
    let mut admin = session.admin();
    if let Some(Action::Resolve { id }) = args.action {
        let resolved = admin
            .resolve_help_request(session.request(pb::ResolveHelpRequestRequest { id: id.clone() }))
            .await
            .map_err(|s| session.failure(&format!("resolving help request {id}"), &s))?
            .into_inner();
        if cx.json {
            output::print_json(&json::help_request(&resolved));
        } else {
            println!(
                "resolved {} (chat {}, user {}) at {}",
                resolved.id,
                resolved.chat_id,
                resolved.user_id,
                output::time(resolved.resolved_at.as_ref())
            );
        }
        return Ok(());
    }
    let list = admin
        .list_help_requests(session.request(pb::ListHelpRequestsRequest {
            include_resolved: args.all,
            limit: args.limit,
        }))
        .await
        .map_err(|s| session.failure("listing help requests", &s))?
        .into_inner();
    if cx.json {
        output::print_json(&json::help_requests(&list));
    } else {
        help_table(&list.requests).print();
    }
    Ok(())
}
