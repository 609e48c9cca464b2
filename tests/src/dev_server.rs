//! The real `chatctl dev` binary as a child process, for the programs under `examples/` that
//! measure the server from outside (memory from `/proc`, panics from its log): started on free
//! ports with a throwaway data directory, its log captured to a file, killed when dropped
//! (panics included), or killed on purpose and started again on the same data (crash tests).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct DevServer {
    /// The page URL `chatctl dev` printed, with a demo user's token.
    pub url: String,
    pub pid: u32,
    /// Where the server's stderr (its log) goes.
    pub log: PathBuf,
    child: Child,
    _data: tempfile::TempDir,
}

impl DevServer {
    /// Starts `target/<profile>/chatctl dev` (the directory the calling example was built in)
    /// with `config` as the core's TOML file and `env` added to its environment. Panics with
    /// the build command to run when the binary is missing.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), config, env)
    }

    /// Like [`DevServer::start`] on the data directory (database included) of an earlier
    /// server, as a restart finds it.
    pub fn start_in(data: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        let config_path = data.path().join("core.toml");
        std::fs::write(&config_path, config).expect("config");
        let log = data.path().join("server.log");
        let bin = std::env::current_exe()
            .expect("exe")
            .ancestors()
            .nth(2)
            .expect("target dir")
            .join("chatctl");
        let mut command = Command::new(&bin);
        command
            .args(["dev", "--port", "0", "--grpc-port", "0", "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data.path())
            .env(
                "CHAT_DATABASE__URL",
                format!("sqlite://{}", data.path().join("dev.db").display()),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (build it first: cargo build --release -p chatctl): {e}",
                bin.display()
            )
        });
        let mut url = String::new();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        for line in lines.by_ref() {
            let line = line.expect("line");
            if let Some(rest) = line.trim().strip_prefix("open:") {
                url = rest.trim().to_string();
                break;
            }
        }
        // Keep reading: with the pipe closed, the server's next `println!` would fail and
        // end the process.
        std::thread::spawn(move || lines.for_each(drop));
        assert!(
            !url.is_empty(),
            "chatctl dev printed no URL; see {}",
            log.display()
        );
        Self {
            url,
            pid: child.id(),
            log,
            child,
            _data: data,
        }
    }

    /// The WebSocket URL with the printed demo token.
    pub fn ws_url(&self) -> String {
        let (base, token) = self.url.split_once("/?token=").expect("printed URL");
        format!("{}/ws?token={token}", base.replace("http://", "ws://"))
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Lines of the server's log that report a panic.
    pub fn panics(&self) -> Vec<String> {
        crate::panics_in(&self.log)
    }

    /// Kills the process with SIGKILL (no shutdown of any kind, as a crash) and returns its
    /// data directory for [`DevServer::start_in`].
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self._data, placeholder)
    }

    /// Stops the process with SIGTERM (its graceful shutdown), waits for it to exit, and
    /// returns its data directory for [`DevServer::start_in`].
    pub fn terminate(mut self) -> tempfile::TempDir {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s TERM failed");
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self._data, placeholder)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
