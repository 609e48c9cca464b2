//! `chatctl`: the operator tool. One file per subcommand under `commands/`.
//!
//! Printing to stdout is this program's job (tokens, URLs, tables), so the workspace's
//! `print_stdout` lint is allowed here and nowhere else.
#![allow(clippy::print_stdout)]

mod commands;

use clap::{Parser, Subcommand};

/// Operate the chat backend: run it locally, mint tokens, migrate the database.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run core and edge in one process on loopback (SQLite under ./data, demo model).
    Dev(commands::dev::Args),
    /// Mint JWTs for users, admins and services.
    #[command(subcommand)]
    Token(commands::token::Command),
    /// Run the embedded database migrations.
    Migrate(commands::migrate::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Dev(args) => commands::dev::run(args).await,
        Command::Token(cmd) => commands::token::run(cmd),
        Command::Migrate(args) => commands::migrate::run(args).await,
    }
}
