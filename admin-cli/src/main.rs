//! `chatctl`: the operator tool. One file per subcommand under `commands/`; [`client`] connects
//! to the core and turns failures into one line and an exit code, [`output`] prints.
//!
//! Printing to stdout is this program's job (tokens, URLs, tables), so the workspace's
//! `print_stdout` lint is allowed here and nowhere else.
#![allow(clippy::print_stdout)]

mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failed (the message says why)
  2  bad flag or argument (also one the core rejected)
  3  the core is unreachable at --core / CHATCTL_CORE
  4  no token, or the core refused it (malformed, expired, wrong signature)
  5  the token is not an admin's
  6  health: the core does not report SERVING
  7  not found (session, help request, file)
  8  conflict (another operator holds the session; already resolved)";

/// Operate the chat backend: run it locally, mint tokens, migrate the database, and monitor and
/// take over live sessions.
///
/// Operator commands reach the core's gRPC address (--core or CHATCTL_CORE) with an admin's
/// token (--token or CHATCTL_TOKEN). `chatctl dev` prints an `export` line that sets both.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// The core's gRPC address.
    #[arg(
        long,
        global = true,
        env = "CHATCTL_CORE",
        default_value = "http://127.0.0.1:50051"
    )]
    core: String,
    /// PEM file of the CA that signed the core's certificate, for an https:// --core (the core
    /// with grpc.tls_cert_file).
    #[arg(long, global = true, env = "CHATCTL_CORE_CA")]
    core_ca: Option<std::path::PathBuf>,
    /// An admin's JWT (role `admin`).
    #[arg(long, global = true, env = "CHATCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON (the same objects as the admin REST routes) instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
    /// List sessions or show one.
    #[command(subcommand)]
    Sessions(commands::sessions::Command),
    /// Follow the live feed of session changes.
    Watch,
    /// Take a session over: lines from stdin go to the user; /release hands back.
    Takeover(commands::takeover::Args),
    /// The help queue (list, or `resolve ID`).
    HelpRequests(commands::help_requests::Args),
    /// Token usage and cost by user, model or day.
    Usage(commands::usage::Args),
    /// Uploaded files (`delete ID`).
    #[command(subcommand)]
    Files(commands::files::Command),
    /// Encryption at rest (`reencrypt`: everything under the current key, after a rotation).
    #[command(subcommand)]
    Encryption(commands::encryption::Command),
    /// Ask the core's gRPC health service; exit 0 only when SERVING.
    Health(commands::health::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cx = commands::Context {
        core: client::Core {
            url: cli.core,
            ca_file: cli.core_ca,
            token: cli.token,
        },
        json: cli.json,
    };
    let result = match cli.command {
        Command::Dev(args) => commands::dev::run(args).await,
        Command::Token(cmd) => commands::token::run(cmd),
        Command::Migrate(args) => commands::migrate::run(args).await,
        Command::Sessions(cmd) => commands::sessions::run(cmd, &cx).await,
        Command::Files(cmd) => commands::files::run(cmd, &cx).await,
        Command::Encryption(cmd) => commands::encryption::run(cmd, &cx).await,
        Command::Watch => commands::watch::run(&cx).await,
        Command::Takeover(args) => commands::takeover::run(args, &cx).await,
        Command::HelpRequests(args) => commands::help_requests::run(args, &cx).await,
        Command::Usage(args) => commands::usage::run(args, &cx).await,
        Command::Health(args) => commands::health::run(args, &cx).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err
                .downcast_ref::<client::CliError>()
                .map_or(client::exit::FAILED, |e| e.code);
            eprintln!("chatctl: {err:#}");
            ExitCode::from(code)
        }
    }
}
