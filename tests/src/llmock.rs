//! PyPI's `llmock` (a third-party mock of the providers' HTTP APIs with scripted faults) as a
//! child process, for the tests that run the core's real OpenAI and Anthropic providers against
//! someone else's idea of those APIs. `scripts/test.sh` installs it into its virtual
//! environment and names the executable in `TEST_LLMOCK`; without it the tests fail, saying so.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The variable naming the `llmock` executable (not `CHAT_*`: the core reads those).
pub const LLMOCK_ENV: &str = "TEST_LLMOCK";

pub struct Llmock {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl Llmock {
    /// Starts `llmock serve` on a free port and waits until uvicorn says it is listening.
    pub fn start() -> Self {
        let bin = std::env::var(LLMOCK_ENV).unwrap_or_else(|_| {
            panic!(
                "{LLMOCK_ENV} is not set: run the tests with scripts/test.sh, which installs \
                 llmock from PyPI, or set it to an llmock executable"
            )
        });
        let port = crate::free_port();
        let mut child = Command::new(&bin)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = Vec::new();
        let ready = lines.by_ref().map_while(Result::ok).any(|line| {
            let ready = line.contains("Uvicorn running on");
            seen.push(line);
            ready
        });
        assert!(ready, "llmock exited before it listened: {seen:#?}");
        // Keep reading: a full pipe would block its logging.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            http: reqwest::Client::new(),
        }
    }

    /// The OpenAI-compatible API root (`/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// The Anthropic API root (the provider adds `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("{}/anthropic", self.url)
    }

    /// Forgets earlier requests and behaviours, then queues `behaviors` (llmock's scenario
    /// objects: `{"type": "fail", "status": 429, "retry_after": 1, "times": 2}`, ...).
    pub async fn scenario(&self, behaviors: Value) {
        self.post("/_llmock/reset", Value::Null).await;
        self.post(
            "/_llmock/scenario",
            serde_json::json!({ "behaviors": behaviors }),
        )
        .await;
    }

    /// Every request llmock received since the last scenario, with the fault it got.
    pub async fn requests(&self) -> Vec<Value> {
        let body = self.get("/_llmock/requests").await;
        body["requests"].as_array().cloned().unwrap_or_default()
    }

    /// llmock's verdict on how the client behaved: `{passed, findings: [{code, ...}]}`.
    pub async fn verdict(&self) -> Value {
        self.get("/_llmock/verdict").await
    }

    async fn post(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("llmock {path}: {e}"));
        assert!(
            response.status().is_success(),
            "llmock {path}: {}",
            response.status()
        );
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("llmock {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("llmock {path}: {e}"))
    }
}

impl Drop for Llmock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
