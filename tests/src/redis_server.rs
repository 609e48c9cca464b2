//! A real Redis: Debian's `redis-server` (installed by `scripts/test.sh`, named in
//! `TEST_REDIS_SERVER`) on a free loopback port, without persistence, for the cluster tests.
//! It can be stopped and started again on the same port (a Redis restart mid-test); killed
//! when dropped. Panics, failing the test, when it cannot start.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RedisServer {
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut server = Self {
            port: crate::free_port(),
            child: None,
        };
        server.start_again().await;
        server
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    pub async fn start_again(&mut self) {
        let bin = std::env::var("TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = tokio::process::Command::new(&bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} (Debian: apt-get install redis-server; scripts/test.sh installs it): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{bin} did not answer PING on port {} within 10 s",
                self.port
            );
            // Waiting for a process to open its port: there is no event to wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `redis-cli` against it (Debian's redis-tools, beside redis-server) and returns
    /// its output (`--raw`). Panics when it cannot run or fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli (Debian's redis-tools): {e}"));
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn ping(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if tcp.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        tcp.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n"
    }
}
