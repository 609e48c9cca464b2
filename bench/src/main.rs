//! `chat-bench`: `run` drives the whole suite and prints the report; `upstream` is the fake
//! upstream process that `run` starts (it can be run alone to point other tools at it).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chat-bench",
    about = "Benchmark suite: our stack beside the upstream read directly and a Node ws relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario and print the markdown report to stdout.
    Run(Box<chat_bench::suite::RunArgs>),
    /// Serve the fake upstream (both scripts) until killed; prints its addresses first.
    Upstream(chat_bench::upstream::UpstreamArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => chat_bench::suite::run(*args).await,
        Command::Upstream(args) => chat_bench::upstream::serve(args).await,
    }
}
