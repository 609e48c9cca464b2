//! The processes of a run and what the kernel says about them: child processes (the system
//! under test, the Node relay, the fake upstream) started with their output in a log file and
//! killed when their handle drops, and `/proc` readings of CPU time and resident memory.
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` in clock ticks (`getconf CLK_TCK`, 100
//! on Linux), memory `VmRSS` from `/proc/PID/status`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A child process of the run. Dropping the handle kills it.
pub struct Process {
    pub name: &'static str,
    child: Child,
    pid: u32,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot be started.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} (log {})", log.display()))?;
        let pid = child.id().context("the child has no pid")?;
        Ok(Process { name, child, pid })
    }

    /// Wraps a child started elsewhere (one whose stdout the caller reads).
    ///
    /// # Errors
    /// When the child has already been reaped.
    pub fn from_child(name: &'static str, child: Child) -> anyhow::Result<Self> {
        let pid = child.id().context("the child has no pid")?;
        Ok(Process { name, child, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fails when the process has exited (it was meant to keep running).
    ///
    /// # Errors
    /// When it has exited, with its status.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// CPU time used so far.
    ///
    /// # Errors
    /// When `/proc/PID/stat` cannot be read.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of(&format!("/proc/{}/stat", self.pid))
    }

    /// Resident memory now, in KiB.
    ///
    /// # Errors
    /// When `/proc/PID/status` cannot be read.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib_of(self.pid)
    }
}

/// The driver's own CPU time so far (to show whether the driver was the bottleneck).
///
/// # Errors
/// When `/proc/self/stat` cannot be read.
pub fn own_cpu() -> anyhow::Result<Duration> {
    cpu_of("/proc/self/stat")
}

fn cpu_of(path: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc stat line")?
            .parse::<u64>()
            .context("unreadable /proc stat field")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks() as f64))
}

fn rss_kib_of(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// This process's open-file limit (the soft one, `Max open files` in `/proc/self/limits`);
/// the children it starts inherit it.
///
/// # Errors
/// When `/proc/self/limits` cannot be read.
pub fn open_files_limit() -> anyhow::Result<usize> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .context("no open-file limit in /proc/self/limits")?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .context("unreadable open-file limit")?;
    Ok(soft.parse().unwrap_or(usize::MAX))
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, else Linux's 100).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// Waits until `url` answers 200 (a server's readiness route), for at most `within`.
///
/// # Errors
/// When it does not within the time, or the process exits meanwhile.
pub async fn wait_ready(process: &mut Process, url: &str, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        process.check_alive()?;
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!(
                "{} did not become ready at {url} within {within:?}",
                process.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until something accepts TCP connections on `addr`.
///
/// # Errors
/// When nothing does within `within`, or the process exits meanwhile.
pub async fn wait_listening(
    process: &mut Process,
    addr: std::net::SocketAddr,
    within: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        process.check_alive()?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!(
                "{} is not listening on {addr} after {within:?}",
                process.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port (bound and released; good enough for child processes started next).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}
