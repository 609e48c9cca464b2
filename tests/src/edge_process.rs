//! The real `chat-edge` binary as a child process in front of a test stack's core, so a test
//! can stop it gracefully (SIGTERM) or kill it (SIGKILL) while its sockets stream, and let the
//! clients reconnect to the stack's own edge: a second edge over the same core. Or in front of
//! several cores at once ([`EdgeProcess::start_over`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::{SECRET, chatctl_path};

pub struct EdgeProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Every JSON log event after "chat-edge ready", in order.
    logs: Mutex<mpsc::Receiver<serde_json::Value>>,
}

impl EdgeProcess {
    /// Starts `chat-edge` (built beside chatctl) on a free port against the core at
    /// `core_addr`, and waits until it logs that it is ready.
    pub fn start(core_addr: SocketAddr) -> Self {
        Self::start_with(core_addr, &[])
    }

    /// The same with more `CHAT_EDGE_*` variables (`[tls]`, say).
    pub fn start_with(core_addr: SocketAddr, env: &[(&str, String)]) -> Self {
        Self::spawn(("CHAT_EDGE_CORE_URL", format!("http://{core_addr}")), env)
    }

    /// `chat-edge` in front of every core of `cores` (`CHAT_EDGE_CORE_URLS`, comma-separated),
    /// with more `CHAT_EDGE_*` variables.
    pub fn start_over(cores: &[SocketAddr], env: &[(&str, String)]) -> Self {
        let urls: Vec<String> = cores.iter().map(|a| format!("http://{a}")).collect();
        Self::spawn(("CHAT_EDGE_CORE_URLS", urls.join(",")), env)
    }

    fn spawn(cores: (&str, String), env: &[(&str, String)]) -> Self {
        let bin =
            chatctl_path().with_file_name(format!("chat-edge{}", std::env::consts::EXE_SUFFIX));
        let mut child = Command::new(&bin)
            .env("CHAT_EDGE_HTTP_ADDR", "127.0.0.1:0")
            .env(cores.0, cores.1)
            .env("CHAT_EDGE_AUTH__SECRET", SECRET)
            .env("CHAT_EDGE_LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            // The caller's variables last: they may override the ones above.
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("log line");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["fields"]["message"] == "chat-edge ready" {
                addr = event["fields"]["addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok());
                break;
            }
        }
        let addr = addr.unwrap_or_else(|| panic!("chat-edge exited without logging its address"));
        // Keep reading: a full pipe would block the edge's logging.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(event);
                }
            }
        });
        Self {
            addr,
            child,
            logs: Mutex::new(rx),
        }
    }

    /// Waits (at most `within`) for the next log event whose message is `message`; the
    /// events before it are passed over. Panics when it does not come.
    pub fn wait_for_log(&self, message: &str, within: Duration) -> serde_json::Value {
        let logs = self.logs.lock().expect("log receiver");
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match logs.recv_timeout(left) {
                Ok(event) if event["fields"]["message"] == message => return event,
                Ok(_) => {}
                Err(_) => panic!("chat-edge logged no {message:?} within {within:?}"),
            }
        }
    }

    /// Sends `signal` (`HUP`) and leaves the process running.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// The WebSocket URL with `token`.
    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    /// Sends `signal` (`TERM`, `KILL`) and waits for the process to exit.
    pub fn stop(&mut self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -s {signal} failed");
        let _ = self.child.wait();
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
