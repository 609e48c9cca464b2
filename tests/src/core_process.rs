//! The real `chat-core` binary as a child process on a fixed gRPC address, so a test can stop
//! it gracefully (SIGTERM) or kill it (SIGKILL) under running edges and start it again on the
//! same address and database, as a deployment's restarts look to its edges. Its log (JSON
//! lines) goes to a file; killed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{SECRET, chatctl_path};

pub struct CoreProcess {
    pub addr: SocketAddr,
    /// Where every start's log lines are appended.
    pub log: PathBuf,
    config: PathBuf,
    database_url: String,
    metrics_addr: String,
    /// Added to the environment of every start ([`CoreProcess::set_env`]).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl CoreProcess {
    /// Starts `chat-core` (built beside chatctl) on a free port with `config` (TOML, written
    /// into `dir`) and the database at `database_url`, and waits until it logs that it is ready.
    pub fn start(dir: &Path, config: &str, database_url: &str) -> Self {
        Self::start_with_env(dir, config, database_url, &[])
    }

    /// Like [`CoreProcess::start`] with `env` added to its environment.
    pub fn start_with_env(
        dir: &Path,
        config: &str,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let config_path = dir.join("core.toml");
        std::fs::write(&config_path, config).expect("core config");
        let port = crate::free_port();
        let mut core = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: dir.join("core.log.jsonl"),
            config: config_path,
            database_url: database_url.to_owned(),
            metrics_addr: format!("127.0.0.1:{}", crate::free_port()),
            env: Vec::new(),
            child: None,
        };
        for (name, value) in env {
            core.set_env(name, value);
        }
        core.restart();
        core
    }

    /// Sets (or replaces) a variable for the next [`CoreProcess::restart`].
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts the process again (after [`CoreProcess::stop`]) on the same address and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the core is still running");
        let bin =
            chatctl_path().with_file_name(format!("chat-core{}", std::env::consts::EXE_SUFFIX));
        let mut child = Command::new(&bin)
            .arg("--config")
            .arg(&self.config)
            .env("CHAT_GRPC_ADDR", self.addr.to_string())
            // Not the default metrics port: several cores may run at once.
            .env("CHAT_METRICS_ADDR", &self.metrics_addr)
            .env("CHAT_DATABASE__URL", &self.database_url)
            .env("CHAT_AUTH__SECRET", SECRET)
            .env("CHAT_LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .stdout(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log.with_extension("stdout"))
                    .expect("core stdout file"),
            ))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("core log file");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut ready = false;
        for line in lines.by_ref() {
            let line = line.expect("log line");
            let _ = writeln!(file, "{line}");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["fields"]["message"] == "chat-core ready" {
                ready = true;
                break;
            }
        }
        if !ready {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default()
                + &std::fs::read_to_string(self.log.with_extension("stdout")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let status = child.wait();
            panic!(
                "chat-core on {} exited before it was ready ({status:?}); its last log lines: \
                 {tail:#?}",
                self.addr
            );
        }
        // Keep copying: a full pipe would block the core's logging.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
            }
        });
        self.child = Some(child);
    }

    /// Sends `signal` (`TERM`, `KILL`) and waits for the process to exit.
    pub fn stop(&mut self, signal: &str) {
        let mut child = self.child.take().expect("the core is running");
        let status = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -s {signal} failed");
        let _ = child.wait();
    }

    /// Where this core serves `/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    /// Lines of the log so far that report a panic.
    pub fn panics(&self) -> Vec<String> {
        crate::panics_in(&self.log)
    }
}

impl Drop for CoreProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
