//! The fake upstream: `chat-fake-llm` (the workspace's fake OpenAI-compatible server) run as
//! a process of its own, so its CPU is not the driver's and can be read apart.
//!
//! One process serves three scripts on three ports, each repeated for every request: the
//! *stream* reply (`--deltas` pieces `--delay-ms` apart, 50 x 20 ms by default: the figures
//! of issue 14), the *short* reply of the turns-per-second scenario (five pieces at once) and
//! the *fan-out* reply streamed into one big room (`--fanout-deltas` pieces
//! `--fanout-delay-ms` apart, 50 x 2 ms by default, about 3 ms in practice as tokio's timer
//! rounds sleeps up: some 330 chunks a second, which a 1,000-member room turns into more than
//! the 250,000 deliveries a second of the target). `chat-bench upstream`
//! prints `stream=<base url> short=<base url> fanout=<base url>` on its first line of stdout
//! and serves until killed.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use chat_fake_llm::FakeScript;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::procs::Process;

#[derive(clap::Args, Clone, Debug)]
pub struct UpstreamArgs {
    /// Pieces in every streamed reply.
    #[arg(long, default_value_t = 50)]
    pub deltas: usize,
    /// Pause between two pieces of a streamed reply, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub delay_ms: u64,
    /// Pieces in every reply of the fan-out scenario.
    #[arg(long, default_value_t = 50)]
    pub fanout_deltas: usize,
    /// Pause between two pieces of a fan-out reply, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub fanout_delay_ms: u64,
}

/// A streamed script: `deltas` pieces of one word each, `delay_ms` apart.
pub fn words_script(deltas: usize, delay_ms: u64) -> FakeScript {
    let words: Vec<String> = (0..deltas).map(|i| format!("w{i} ")).collect();
    let pieces: Vec<&str> = words.iter().map(String::as_str).collect();
    FakeScript::reply(&pieces).with_delay(Duration::from_millis(delay_ms))
}

/// `chat-bench upstream`: serves both scripts until the process is killed.
///
/// # Errors
/// When stdout is closed before the addresses are written.
pub async fn serve(args: UpstreamArgs) -> anyhow::Result<()> {
    let stream = chat_fake_llm::spawn(words_script(args.deltas, args.delay_ms)).await;
    let short = chat_fake_llm::spawn(FakeScript::default()).await;
    let fanout = chat_fake_llm::spawn(words_script(args.fanout_deltas, args.fanout_delay_ms)).await;
    // Counted, not kept: a soak sends a few hundred thousand prompts.
    for fake in [&stream, &short, &fanout] {
        fake.keep_requests(false);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "stream={} short={} fanout={}",
        stream.openai_base_url(),
        short.openai_base_url(),
        fanout.openai_base_url()
    )?;
    out.flush()?;
    drop(out);
    // The handles own the servers: keep them until the parent kills this process.
    std::future::pending::<()>().await;
    drop((stream, short, fanout));
    Ok(())
}

/// A running fake upstream process and its OpenAI base URLs (`http://addr/v1`).
pub struct Upstream {
    pub process: Process,
    pub stream_url: String,
    pub short_url: String,
    pub fanout_url: String,
}

/// Starts `chat-bench upstream` (this same binary) and reads its addresses.
///
/// # Errors
/// When it cannot be started or does not announce its addresses within 10 s.
pub async fn start(args: &UpstreamArgs) -> anyhow::Result<Upstream> {
    let exe = std::env::current_exe().context("locating chat-bench")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("upstream")
        .arg("--deltas")
        .arg(args.deltas.to_string())
        .arg("--delay-ms")
        .arg(args.delay_ms.to_string())
        .arg("--fanout-deltas")
        .arg(args.fanout_deltas.to_string())
        .arg("--fanout-delay-ms")
        .arg(args.fanout_delay_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the fake upstream")?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout from the fake upstream")?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .context("the fake upstream did not announce its addresses")??;
    let field = |name: &str| -> anyhow::Result<String> {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .map(str::to_owned)
            .with_context(|| format!("the fake upstream said {line:?}"))
    };
    Ok(Upstream {
        stream_url: field("stream=")?,
        short_url: field("short=")?,
        fanout_url: field("fanout=")?,
        process: Process::from_child("fake upstream", child)?,
    })
}
