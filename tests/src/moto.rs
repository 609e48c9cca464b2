//! PyPI's `moto` in server mode (an S3-compatible server) as a child process, for the tests of
//! the core's S3 file store. `scripts/test.sh` installs it into its virtual environment and
//! names `moto_server` in `TEST_MOTO`; without it the tests fail, saying so.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The variable naming the `moto_server` executable (not `CHAT_*`: the core reads those).
pub const MOTO_ENV: &str = "TEST_MOTO";

pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
}

impl Moto {
    /// Starts `moto_server` on a free port, waits until it answers, and creates `bucket`.
    pub async fn start(bucket: &str) -> Self {
        let bin = std::env::var(MOTO_ENV).unwrap_or_else(|_| {
            panic!(
                "{MOTO_ENV} is not set: run the tests with scripts/test.sh, which installs \
                 moto[server] from PyPI, or set it to a moto_server executable"
            )
        });
        let port = crate::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let moto = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let http = reqwest::Client::new();
        // Python takes a moment to start: poll until the server answers (each try is a real
        // request, not a sleep standing in for one), for at most 30 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let created = http
                .put(format!("{}/{bucket}", moto.url))
                .send()
                .await
                .map(|r| r.status().is_success());
            match created {
                Ok(true) => break,
                Ok(false) => panic!("moto refused to create bucket {bucket}"),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("moto_server did not answer within 30 s: {err}"),
            }
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
