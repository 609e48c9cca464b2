//! `chatctl usage --by user|model|day [--from --to]`: tokens, replies and cost
//! (`AdminService.GetUsage`) as a table with a total row, or `--json`.

use chat_edge::admin::json;
use chat_proto::pb::admin as pb;

use super::Context;
use super::sessions::{parse_from, parse_to};
use crate::output::{self, Table};

#[derive(Clone, Copy, clap::ValueEnum)]
enum By {
    User,
    Model,
    Day,
}

#[derive(clap::Args)]
pub struct Args {
    /// Group by user id, model id or UTC day.
    #[arg(long, value_enum, default_value = "user")]
    by: By,
    /// Replies stored at or after this time (RFC 3339, or a date: that day's 00:00 UTC).
    #[arg(long, value_parser = parse_from, value_name = "TIME")]
    from: Option<prost_types::Timestamp>,
    /// Replies stored before this time (RFC 3339, or a date: up to the end of that UTC day).
    #[arg(long, value_parser = parse_to, value_name = "TIME")]
    to: Option<prost_types::Timestamp>,
}

pub async fn run(args: Args, cx: &Context) -> anyhow::Result<()> {
    let session = cx.core.session().await?;
    let by = match args.by {
        By::User => pb::UsageGrouping::User,
        By::Model => pb::UsageGrouping::Model,
        By::Day => pb::UsageGrouping::Day,
    };
    let usage = session
        .admin()
        .get_usage(session.request(pb::GetUsageRequest {
            by: by as i32,
            from: args.from,
            to: args.to,
        }))
        .await
        .map_err(|s| session.failure("reading usage", &s))?
        .into_inner();
    if cx.json {
        output::print_json(&json::usage(by, &usage));
        return Ok(());
    }
    let key = match args.by {
        By::User => "USER",
        By::Model => "MODEL",
        By::Day => "DAY",
    };
    let mut table = Table::new(&[
        key,
        "REPLIES",
        "PROMPT",
        "COMPLETION",
        "TOTAL",
        "ESTIMATED",
        "COST",
    ]);
    let row = |r: &pb::UsageRow| {
        vec![
            r.key.clone(),
            r.replies.to_string(),
            r.prompt_tokens.to_string(),
            r.completion_tokens.to_string(),
            (r.prompt_tokens + r.completion_tokens).to_string(),
            r.estimated_replies.to_string(),
            r.cost.map_or_else(|| "-".to_owned(), |c| format!("{c:.4}")),
        ]
    };
    for r in &usage.rows {
        table.row(row(r));
    }
    let mut total = row(&usage.total.clone().unwrap_or_default());
    total[0] = "TOTAL".to_owned();
    table.row(total);
    table.print();
    if !usage.currency.is_empty() {
        println!("cost in {}", usage.currency);
    }
    if usage
        .total
        .as_ref()
        .is_some_and(|t| t.estimated_replies > 0)
    {
        println!(
            "ESTIMATED: replies whose token counts were estimated (the provider reported none)"
        );
    }
    Ok(())
}
