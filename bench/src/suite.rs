//! `chat-bench run`: the whole suite in one process. It starts the fake upstream, our stack
//! (on SQLite, and on PostgreSQL with `--database-url`) and the Node relay as child
//! processes, runs every scenario against the direct upstream read, the relay and ours in
//! turn, side by side in the same run, and prints a markdown report (see `report`). Progress goes to stderr; the exit status is non-zero only on a real
//! error (a process that does not start, a socket that cannot be opened), never on a figure.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::fanout;
use crate::growth;
use crate::idle::{self, IdleResult};
use crate::load::Target;
use crate::procs;
use crate::report::{self, Report};
use crate::soak;
use crate::streams;
use crate::systems::{self, Kind, System};
use crate::turns;
use crate::upstream::{self, UpstreamArgs};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The release `chatctl` to run as our stack (default: beside this binary).
    #[arg(long)]
    pub chatctl: Option<PathBuf>,
    /// The folder of the Node relay (`relay.mjs`, `node_modules/ws`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/node"))]
    pub node_dir: PathBuf,
    /// Concurrent streams, one scenario each (0: skip the scenario).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 300, 1000])]
    pub streams: Vec<usize>,
    /// Measured rounds per stream count (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Clients of the turns-per-second scenario (0: skip it).
    #[arg(long, default_value_t = 100)]
    pub turn_clients: usize,
    /// How long each system is driven in the turns scenario, in seconds.
    #[arg(long, default_value_t = 15)]
    pub turn_secs: u64,
    /// Idle sockets to hold, step by step (0: skip the scenario).
    #[arg(long, value_delimiter = ',', default_values_t = [5000, 10000])]
    pub idle: Vec<usize>,
    /// Members of the fan-out scenario's room, one room each (0: skip the scenario). A
    /// room larger than the open-file limit allows is skipped and said so.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    pub fanout: Vec<usize>,
    /// Replies streamed into a 1,000-member room; a room of N members gets this x 1,000 / N
    /// of them (at least 2), so every room gets about the same number of deliveries.
    #[arg(long, default_value_t = 10)]
    pub fanout_replies: usize,
    /// Messages in the long chat of the growth scenario, beside one of 100 (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    pub growth: usize,
    /// Seconds of the soak (0, the default: skip it; issue 14 asks for 1,800): ours, freshly
    /// started, with `--soak-clients` connections each asking every `--soak-interval-secs`.
    #[arg(long, default_value_t = 0)]
    pub soak_secs: u64,
    /// Connections of the soak.
    #[arg(long, default_value_t = 1000)]
    pub soak_clients: usize,
    /// Seconds between one soak connection's messages.
    #[arg(long, default_value_t = 10)]
    pub soak_interval_secs: u64,
    /// A fresh PostgreSQL database (`postgres://...`): ours runs the streams and turns
    /// scenarios a second time on it, beside SQLite. The suite does not empty it.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Keep the run's folder (logs, databases) and print where it is.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

/// Runs the suite and prints the report to stdout.
///
/// # Errors
/// On real errors only: a process that cannot be started, sockets that cannot be opened.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let chatctl = match &args.chatctl {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("chat-bench has no folder")?
            .join("chatctl"),
    };
    anyhow::ensure!(
        chatctl.is_file(),
        "{} not found: build it with `cargo build --release -p chatctl` or pass --chatctl",
        chatctl.display()
    );
    let dir = tempfile::Builder::new().prefix("chat-bench-").tempdir()?;
    let mut report = Report::start(&args)?;
    eprintln!("chat-bench: run folder {}", dir.path().display());

    let upstream = upstream::start(&args.upstream).await?;
    let direct = Target::direct(&upstream.stream_url, &upstream.short_url);
    {
        let ours = systems::start_ours(&chatctl, dir.path(), &upstream, None).await?;
        let node = systems::start_node(&args.node_dir, dir.path(), &upstream).await?;
        let ours_pg = match &args.database_url {
            Some(url) => {
                Some(systems::start_ours(&chatctl, dir.path(), &upstream, Some(url)).await?)
            }
            None => None,
        };
        let mut systems: Vec<(Target, Option<&System>)> = vec![
            (direct.clone(), None),
            (Target::of(&node), Some(&node)),
            (Target::of(&ours), Some(&ours)),
        ];
        if let Some(pg) = &ours_pg {
            systems.push((Target::of(pg), Some(pg)));
        }

        for &streams in args.streams.iter().filter(|&&n| n > 0) {
            for (target, system) in &systems {
                eprintln!("streams: {streams} concurrent, {}", target.kind().label());
                let result = streams::run(
                    target,
                    *system,
                    &upstream.process,
                    streams,
                    args.rounds,
                    args.upstream.deltas,
                )
                .await?;
                report.streams.push((target.kind(), result));
            }
        }

        if args.turn_clients > 0 {
            for (target, system) in &systems {
                eprintln!(
                    "turns: {} clients, {}",
                    args.turn_clients,
                    target.kind().label()
                );
                let result = turns::run(
                    target,
                    *system,
                    &upstream.process,
                    args.turn_clients,
                    Duration::from_secs(args.turn_secs),
                )
                .await?;
                report.turns.push((target.kind(), result));
            }
        }

        let limit = procs::open_files_limit()?;
        for &members in args.fanout.iter().filter(|&&n| n > 0) {
            // Each member is a descriptor in the driver and one in the server, which inherits
            // this limit; some room is left for everything else.
            if members + 500 > limit {
                report.notes.push(format!(
                    "fan-out: the {members}-member room skipped, the open-file limit is {limit}"
                ));
                continue;
            }
            let replies = (args.fanout_replies * 1000 / members.max(1)).max(2);
            for system in [&node, &ours] {
                eprintln!(
                    "fan-out: {members} members, {replies} replies, {}",
                    system.kind.label()
                );
                let result = fanout::run(
                    system,
                    &upstream.process,
                    members,
                    replies,
                    args.upstream.fanout_deltas,
                    args.upstream.fanout_delay_ms,
                )
                .await?;
                report.fanout.push((system.kind, result));
            }
        }

        if args.growth > 0
            && let Some(database) = &ours.sqlite
        {
            eprintln!("growth: {} messages beside 100, ours", args.growth);
            match growth::run(&ours, database, args.growth).await {
                Ok(result) => report.growth = Some(result),
                Err(err) => report.notes.push(format!("growth: {err:#}")),
            }
        }
    }

    if args.idle.iter().any(|&n| n > 0) {
        // Fresh processes: memory freed by the load above must not be reused and hidden.
        let idle_dir = sub_dir(&dir, "idle")?;
        for kind in [Kind::Node, Kind::Ours] {
            let system = match kind {
                Kind::Node => systems::start_node(&args.node_dir, &idle_dir, &upstream).await?,
                _ => systems::start_ours(&chatctl, &idle_dir, &upstream, None).await?,
            };
            eprintln!("idle sockets: {}", kind.label());
            let result: IdleResult = idle::run(&system, &args.idle).await?;
            report.idle.push((kind, result));
        }
    }

    if args.soak_secs > 0 {
        let soak_dir = sub_dir(&dir, "soak")?;
        let system = systems::start_ours(&chatctl, &soak_dir, &upstream, None).await?;
        eprintln!(
            "soak: {} connections for {} s, ours",
            args.soak_clients, args.soak_secs
        );
        let result = soak::run(
            &system,
            args.soak_clients,
            Duration::from_secs(args.soak_interval_secs.max(1)),
            Duration::from_secs(args.soak_secs),
        )
        .await?;
        report.soak = Some(result);
    }

    report.finish()?;
    report::print(&mut report)?;
    if args.keep {
        let kept = dir.keep();
        eprintln!("chat-bench: kept {}", kept.display());
    }
    Ok(())
}

/// A sub-folder of the run's folder, for the second start of the systems.
fn sub_dir(dir: &tempfile::TempDir, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.path().join(name);
    std::fs::create_dir_all(&path)?;
    Ok(path)
}
