//! Harness for the end-to-end tests: [`spawn_stack`] starts the real core and edge on random
//! loopback ports (the edge talking to the core over real gRPC), on SQLite or on a fresh
//! PostgreSQL database, optionally against a [`fake_llm`] server that speaks the providers'
//! real streaming wire formats. Tests drive it through real WebSockets ([`Ws`]) and real gRPC.

pub mod clamd;
pub mod core_process;
pub mod dev_server;
pub mod edge_process;
pub mod llmock;
pub mod log_capture;
pub mod moto;
pub mod pg_cluster;
pub mod redis_server;
pub mod sms_sink;
/// The workspace's one fake LLM (crate `chat-fake-llm`), under the name the tests import.
pub use chat_fake_llm as fake_llm;

use std::net::SocketAddr;
use std::time::Duration;

use chat_auth::{AuthSettings, MintRequest, Minter};
use chat_core::llm::{LlmSettings, ModelSettings, ProviderKind, ProviderSettings};
use chat_core::storage::Db;
use chat_core::{Application, Settings};
use chat_edge::{Edge, EdgeSettings};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The HS256 secret every test stack uses.
pub const SECRET: &str = "end-to-end-test-secret-0123456789";
/// A valid 1x1 PNG image.
pub const PNG_1X1: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82";

/// The API key the stacks give the fake LLM's providers.
pub const FAKE_API_KEY: &str = "fake-llm-test-api-key";
/// How long a test waits for an expected frame before failing.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Which model the stack's default chat uses.
pub enum Llm {
    /// The built-in demo model, with no delay between words.
    Demo,
    /// An OpenAI-compatible provider at the fake server.
    OpenAi(fake_llm::FakeScript),
    /// An Anthropic provider at the fake server.
    Anthropic(fake_llm::FakeScript),
    /// A Dify app at the fake server.
    Dify(fake_llm::FakeScript),
}

/// What to start.
pub struct StackOptions {
    pub backend: Backend,
    pub llm: Llm,
    /// Last changes to the core's settings before it starts.
    pub tweak_core: Box<dyn FnOnce(&mut Settings) + Send>,
    /// Last changes to the edge's settings before it starts.
    pub tweak_edge: Box<dyn FnOnce(&mut EdgeSettings) + Send>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            llm: Llm::Demo,
            tweak_core: Box::new(|_| {}),
            tweak_edge: Box::new(|_| {}),
        }
    }
}

impl StackOptions {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    pub fn llm(mut self, llm: Llm) -> Self {
        self.llm = llm;
        self
    }

    pub fn core(mut self, f: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.tweak_core = Box::new(f);
        self
    }

    pub fn edge(mut self, f: impl FnOnce(&mut EdgeSettings) + Send + 'static) -> Self {
        self.tweak_edge = Box::new(f);
        self
    }
}

/// A running core + edge. Dropping it shuts both down.
pub struct Stack {
    pub edge_addr: SocketAddr,
    pub core_addr: SocketAddr,
    /// The core's Prometheus listener (port 0 unless a test turns it off).
    pub core_metrics_addr: Option<SocketAddr>,
    /// The core's database, for asserting what was stored.
    pub db: Db,
    pub fake: Option<fake_llm::FakeLlm>,
    /// The core's operator notifier (disabled unless the test configured `notify`).
    pub notifier: chat_core::notify::Notifier,
    minter: Minter,
    shutdown: CancellationToken,
    core_task: Option<tokio::task::JoinHandle<()>>,
    edge_task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Starts a stack with default options (SQLite, demo model).
pub async fn spawn_default() -> Stack {
    spawn_stack(StackOptions::default()).await
}

/// Starts the real core and edge on port 0. Panics (failing the test) with a clear message
/// when something cannot start, PostgreSQL included.
pub async fn spawn_stack(opts: StackOptions) -> Stack {
    // The suite's log copy (and stderr logs under RUST_LOG); the secrets of this stack are
    // recorded so the copy can be searched for them.
    log_capture::install();
    log_capture::record("secret", SECRET);
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = match opts.backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("chat.db").display()),
        Backend::Postgres => fresh_postgres_database().await,
    };
    let auth = AuthSettings::hs256(SECRET);

    let mut llm = LlmSettings::default();
    if let Some(demo) = llm.providers.get_mut("demo") {
        demo.word_delay_ms = Some(0);
    }
    let fake = match opts.llm {
        Llm::Demo => None,
        Llm::OpenAi(script) => {
            let fake = fake_llm::spawn(script).await;
            add_model(
                &mut llm,
                "fake-openai",
                ProviderKind::Openai,
                fake.openai_base_url(),
            );
            Some(fake)
        }
        Llm::Anthropic(script) => {
            let fake = fake_llm::spawn(script).await;
            add_model(
                &mut llm,
                "fake-anthropic",
                ProviderKind::Anthropic,
                fake.anthropic_base_url(),
            );
            Some(fake)
        }
        Llm::Dify(script) => {
            let fake = fake_llm::spawn(script).await;
            add_model(
                &mut llm,
                "fake-dify",
                ProviderKind::Dify,
                fake.dify_base_url(),
            );
            Some(fake)
        }
    };

    let mut core = Settings {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        auth: auth.clone(),
        llm,
        ..Settings::default()
    };
    core.database.url = database_url;
    core.files.local_dir = dir.path().join("files");
    (opts.tweak_core)(&mut core);
    let core_app = Application::build(core).await.expect("core starts");
    let core_addr = core_app.local_addr();
    let core_metrics_addr = core_app.metrics_addr();
    let db = core_app.engine().db().clone();
    let notifier = core_app.engine().notifier().clone();

    let mut edge = EdgeSettings {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        core_url: format!("http://{core_addr}"),
        core_channels: 2,
        auth: auth.clone(),
        ..EdgeSettings::default()
    };
    (opts.tweak_edge)(&mut edge);
    let edge_app = Edge::build(edge).await.expect("edge starts");
    let edge_addr = edge_app.local_addr();

    let shutdown = CancellationToken::new();
    let core_task = tokio::spawn({
        let token = shutdown.clone();
        async move {
            if let Err(err) = core_app.run(token).await {
                panic!("core failed: {err}");
            }
        }
    });
    let edge_task = tokio::spawn({
        let token = shutdown.clone();
        async move {
            if let Err(err) = edge_app.run(token).await {
                panic!("edge failed: {err}");
            }
        }
    });
    Stack {
        edge_addr,
        core_addr,
        core_metrics_addr,
        db,
        fake,
        notifier,
        minter: Minter::new(&auth).expect("minter"),
        shutdown,
        core_task: Some(core_task),
        edge_task: Some(edge_task),
        _dir: dir,
    }
}

fn add_model(llm: &mut LlmSettings, provider: &str, kind: ProviderKind, base_url: String) {
    llm.providers.insert(
        provider.into(),
        ProviderSettings {
            kind,
            base_url: Some(base_url),
            api_key: Some({
                log_capture::record("secret", FAKE_API_KEY);
                FAKE_API_KEY.to_string().into()
            }),
            api_key_env: None,
            word_delay_ms: None,
        },
    );
    let mut model = ModelSettings::new(provider, provider, "upstream-model");
    model.name = format!("Fake {provider}");
    llm.models.push(model);
    llm.default_model = provider.into();
    llm.connect_timeout_ms = 2_000;
    llm.first_token_timeout_ms = 5_000;
    llm.idle_timeout_ms = 5_000;
    llm.retry.base_delay_ms = 10;
    llm.retry.max_delay_ms = 50;
}

impl Stack {
    /// A token for `user` with `roles`, valid for an hour.
    pub fn token(&self, user: &str, roles: &[&str]) -> String {
        self.token_for(user, roles, 3600)
    }

    pub fn token_for(&self, user: &str, roles: &[&str], ttl_secs: u64) -> String {
        let token = self
            .minter
            .mint(&MintRequest {
                user_id: user.into(),
                name: Some(format!("{user} name")),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ttl_secs,
            })
            .expect("mint");
        log_capture::record("token", &token);
        token
    }

    /// The core's local file store (`files.local_dir`).
    pub fn files_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("files")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.edge_addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge_addr)
    }

    /// Uploads a file as `user` (`POST /api/uploads`, multipart field `file`): the status
    /// and the JSON body (`null` when it is not JSON).
    pub async fn upload(&self, user: &str, name: &str, mime: &str, bytes: Vec<u8>) -> (u16, Value) {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str(mime)
            .expect("mime");
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = reqwest::Client::new()
            .post(self.http_url("/api/uploads"))
            .bearer_auth(self.token(user, &[]))
            .multipart(form)
            .send()
            .await
            .expect("upload request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Connects with `?token=` and reads the `session` frame.
    pub async fn connect(&self, user: &str) -> (Ws, Value) {
        self.connect_with_roles(user, &[]).await
    }

    /// Connects as a user with roles (e.g. `admin`) and reads the `session` frame.
    pub async fn connect_with_roles(&self, user: &str, roles: &[&str]) -> (Ws, Value) {
        let url = format!("{}?token={}", self.ws_url(), self.token(user, roles));
        let mut ws = Ws::open(&url).await;
        let session = ws.recv_type("session").await;
        (ws, session)
    }

    /// A gRPC channel to the core.
    pub async fn grpc(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.core_addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("core reachable")
    }

    /// Shuts both servers down and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.edge_task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.core_task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A gRPC request carrying `token` as its bearer, as every call to the core needs.
pub fn authorized<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    let bearer = format!("Bearer {token}");
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().expect("metadata"));
    request
}

/// One reply's text as a client assembles it from `message_chunk` frames, across reconnects:
/// each chunk must carry the next index (exactly once, in order).
pub struct ReplyText {
    pub next_index: i64,
    pub text: String,
}

impl ReplyText {
    /// After the chunks up to `last_index` whose deltas made `text`.
    pub fn after(last_index: i64, text: &str) -> Self {
        Self {
            next_index: last_index + 1,
            text: text.to_string(),
        }
    }

    /// Appends a `message_chunk` frame's delta; panics unless it is the next chunk.
    pub fn push(&mut self, frame: &Value) {
        assert_eq!(
            frame["data"]["index"], self.next_index,
            "each chunk exactly once, in order: {frame}"
        );
        self.next_index += 1;
        self.text
            .push_str(frame["data"]["delta"].as_str().unwrap_or_default());
    }
}

/// A test WebSocket client speaking the JSON protocol.
///
/// It passes over the summary `chat_update {messageCount, lastMessage}` sent after each stored
/// message unless [`Ws::with_summaries`] asks for them: most tests are about other frames.
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    summaries: bool,
}

/// The summary a chat's members get after each stored message (no `seq`).
pub fn is_summary(frame: &Value) -> bool {
    frame["type"] == "chat_update"
        && frame.get("seq").is_none()
        && frame["data"]["updates"]
            .as_object()
            .is_some_and(|u| u.keys().all(|k| k == "messageCount" || k == "lastMessage"))
}

impl Ws {
    pub async fn open(url: &str) -> Self {
        let (inner, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self {
            inner,
            summaries: false,
        }
    }

    /// This client also returns the summary `chat_update` frames.
    pub fn with_summaries(mut self) -> Self {
        self.summaries = true;
        self
    }

    /// Opens with a prepared request (headers, subprotocols); returns the HTTP response too.
    pub async fn open_request(
        request: impl IntoClientRequest + Unpin,
    ) -> Result<
        (
            Self,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    > {
        let (inner, response) = tokio_tungstenite::connect_async(request).await?;
        Ok((
            Self {
                inner,
                summaries: false,
            },
            response,
        ))
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        if let Ok(frame) = serde_json::from_str::<Value>(text) {
            log_capture::record_frame(&frame);
        }
        self.inner
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// A `message` frame with content and a client message id.
    pub async fn send_message(&mut self, chat_id: Option<&str>, content: &str, message_id: &str) {
        let mut data = json!({"content": content, "messageId": message_id});
        if let Some(chat) = chat_id {
            data["chatId"] = chat.into();
        }
        self.send(json!({"type": "message", "data": data})).await;
    }

    /// The next JSON frame (pings skipped). Panics on close or after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        match self.next_frame().await {
            Frame::Json(v) => v,
            Frame::Closed(code) => {
                panic!("connection closed ({code:?}) while a frame was expected")
            }
        }
    }

    /// Frames until one of `ty` (the others are returned in order through `skipped`).
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        self.recv_type_collect(ty).await.0
    }

    pub async fn recv_type_collect(&mut self, ty: &str) -> (Value, Vec<Value>) {
        self.recv_until(|f| f["type"] == ty).await
    }

    /// Frames until one matches `pred`: returns it and every frame before it, in order.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            let frame = self.recv().await;
            if pred(&frame) {
                return (frame, seen);
            }
            seen.push(frame);
        }
    }

    /// Every frame until the assistant's `typing: false` for a chat (the end of a reply).
    pub async fn recv_reply(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv().await;
            let done = frame["type"] == "typing"
                && frame["data"]["userId"] == "assistant"
                && frame["data"]["isTyping"] == false;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Waits for the server's close frame and returns its code (None when closed without one).
    pub async fn recv_close(&mut self) -> Option<u16> {
        loop {
            match self.next_frame().await {
                Frame::Closed(code) => return code,
                Frame::Json(_) => continue,
            }
        }
    }

    /// Asserts nothing but pings arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(frame) = tokio::time::timeout(quiet, self.next_frame()).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    async fn next_frame(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .expect("timed out waiting for a frame");
            match next {
                Some(Ok(Message::Text(text))) => {
                    let frame = serde_json::from_str(text.as_str()).expect("server sends JSON");
                    log_capture::record_frame(&frame);
                    if !self.summaries && is_summary(&frame) {
                        continue;
                    }
                    return Frame::Json(frame);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Frame::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }
}

#[derive(Debug)]
enum Frame {
    Json(Value),
    Closed(Option<u16>),
}

/// The usage row stored for the final message `message` (its JSON, as a frame carries it);
/// panics when there is none.
pub async fn usage_of(stack: &Stack, message: &Value) -> chat_core::storage::UsageRow {
    chat_core::storage::usage_for_message(&stack.db, message["id"].as_str().unwrap_or_default())
        .await
        .expect("usage query")
        .expect("a usage row for the message")
}

/// Lines of a server's log file that report a panic (none when the file is missing).
pub fn panics_in(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_string)
        .collect()
}

/// A token for `user` signed with [`SECRET`], valid for an hour, for processes started
/// outside a [`Stack`] (they verify with the same secret).
pub fn token(user: &str) -> String {
    let minter = Minter::new(&AuthSettings::hs256(SECRET)).expect("minter");
    let token = minter
        .mint(&MintRequest {
            user_id: user.into(),
            name: Some(format!("{user} name")),
            roles: Vec::new(),
            ttl_secs: 3600,
        })
        .expect("mint");
    log_capture::record("token", &token);
    token
}

/// A new, migrated-on-start database on the throwaway PostgreSQL server of this test run.
/// `TEST_DATABASE_URL` (a server URL) is set by `scripts/test.sh`, which starts the server.
pub async fn fresh_postgres_database() -> String {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let server = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts a \
             throwaway PostgreSQL (needs the Debian postgresql-15 package), or point \
             TEST_DATABASE_URL at a PostgreSQL server"
        )
    });
    let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
    let mut admin = AsyncPgConnection::establish(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at TEST_DATABASE_URL: {e}"));
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    match server.rfind('/') {
        Some(slash) if slash > "postgres://".len() => format!("{}/{name}", &server[..slash]),
        _ => format!("{server}/{name}"),
    }
}

/// The `chatctl` binary of this build, for tests that drive it as a process. Cargo cannot hand
/// one crate's binary to another crate's tests (`CARGO_BIN_EXE_*` is per package), so the first
/// call in a test process runs `cargo build --workspace --bins` with the same cargo, profile
/// and target directory as the running test (quick when it is up to date: `scripts/test.sh`
/// runs the same build first; `-p chatctl` alone would resolve other features and rebuild) and returns `<target>/<profile>/chatctl`. Panics, saying why, when the build fails.
pub fn chatctl_path() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // The test binary is <target>/<profile>/deps/<name>-<hash>.
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe
                .parent()
                .and_then(std::path::Path::parent)
                .expect("the test binary lives in <target>/<profile>/deps")
                .to_path_buf();
            let profile = profile_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("debug")
                .to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = std::process::Command::new(cargo);
            build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--quiet",
                "--workspace",
                "--bins",
            ]);
            match profile.as_str() {
                "debug" => {}
                "release" => {
                    build.arg("--release");
                }
                other => {
                    build.args(["--profile", other]);
                }
            }
            let status = build
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo to build chatctl: {e}"));
            assert!(
                status.success(),
                "cargo build --workspace --bins failed ({status})"
            );
            let path = profile_dir.join(format!("chatctl{}", std::env::consts::EXE_SUFFIX));
            assert!(
                path.exists(),
                "chatctl was built but {} is missing",
                path.display()
            );
            path
        })
        .clone()
}

/// What a `chatctl` run printed and how it ended.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout as JSON (for `--json`). Panics with both outputs when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("chatctl printed no JSON ({e}): {self:?}"))
    }
}

impl Stack {
    /// `chatctl` pointed at this stack's core (`CHATCTL_CORE`), with `token` as `CHATCTL_TOKEN`
    /// when given; nothing from the caller's environment leaks in. Killed if dropped.
    pub fn chatctl(&self, token: Option<&str>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(chatctl_path());
        cmd.env_remove("CHATCTL_TOKEN")
            .env("CHATCTL_CORE", format!("http://{}", self.core_addr))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = token {
            cmd.env("CHATCTL_TOKEN", token);
        }
        cmd
    }
}

/// Runs `cmd` with `args` to the end (at most [`WAIT`]), feeding it `stdin` when given.
pub async fn run_chatctl(
    mut cmd: tokio::process::Command,
    args: &[&str],
    stdin: Option<&str>,
) -> CliRun {
    use tokio::io::AsyncWriteExt;
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().expect("chatctl starts");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        // Dropping the pipe is the end of input.
    }
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("chatctl {args:?} did not finish within {WAIT:?}"))
        .expect("chatctl runs");
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A user's new chat after one finished turn.
pub async fn chat_with_one_turn(ws: &mut Ws, text: &str) -> String {
    ws.send_message(None, text, &format!("m-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let chat = ws.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat id")
        .to_string();
    ws.recv_reply().await;
    chat
}

/// Four sessions, one per user: alice asked for help, bob's was taken over and handed back,
/// carol's ended, dave's is plain and has two turns. Returns the chat ids by user.
pub async fn operator_sessions(stack: &Stack) -> std::collections::BTreeMap<&'static str, String> {
    let mut chats = std::collections::BTreeMap::new();
    let (mut alice, _) = stack.connect("alice").await;
    let a = chat_with_one_turn(&mut alice, "I have a question").await;
    alice
        .send(json!({"type": "help_request", "data": {"chatId": a, "reason": "a person please"}}))
        .await;
    alice.recv_type("chat_update").await;
    chats.insert("alice", a);

    let (mut bob, _) = stack.connect("bob").await;
    let b = chat_with_one_turn(&mut bob, "hello").await;
    let (mut admin, _) = stack.connect_with_roles("admin", &["admin"]).await;
    admin
        .send(json!({"type": "takeover", "data": {"chatId": b}}))
        .await;
    bob.recv_type("operator_joined").await;
    admin
        .send(json!({"type": "release", "data": {"chatId": b}}))
        .await;
    bob.recv_type("operator_left").await;
    chats.insert("bob", b);

    let (mut carol, _) = stack.connect("carol").await;
    let c = chat_with_one_turn(&mut carol, "short one").await;
    carol
        .send(json!({"type": "chat_update", "data": {"action": "end", "chatId": c}}))
        .await;
    carol
        .recv_until(|f| f["type"] == "chat_update" && f["data"]["updates"]["status"] == "ended")
        .await;
    chats.insert("carol", c);

    let (mut dave, _) = stack.connect("dave").await;
    let d = chat_with_one_turn(&mut dave, "first").await;
    dave.send_message(Some(&d), "second", "d-2").await;
    dave.recv_reply().await;
    chats.insert("dave", d);
    usage_stored(&stack.db, chats.values()).await;
    chats
}

/// Asserts that every assistant message of `chats` has its `token_usage` row. The core stores
/// a reply's usage (and adds it to the session's metrics) before it delivers the reply, so once
/// a test has seen the final messages there is nothing to wait for.
pub async fn usage_stored(db: &Db, chats: impl IntoIterator<Item = &String>) {
    for chat in chats {
        let (messages, _) = chat_core::storage::history(db, chat, None, 100)
            .await
            .expect("history");
        for m in messages.iter().filter(|m| m.role == "assistant") {
            assert!(
                chat_core::storage::usage_for_message(db, &m.id)
                    .await
                    .expect("read usage")
                    .is_some(),
                "reply {} was delivered before its usage was stored",
                m.id
            );
        }
    }
}

/// Opens a WebSocket by hand on a raw TCP socket (the upgrade request written, the `101`
/// response read byte by byte so nothing after it is consumed), for tests of clients that
/// misbehave below the WebSocket layer: never reading, trickling bytes. `recv_buffer` shrinks
/// the socket's receive buffer (`SO_RCVBUF`) so a client that stops reading fills up soon.
pub async fn raw_websocket(addr: SocketAddr, path: &str, recv_buffer: Option<u32>) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    }
    let mut tcp = socket.connect(addr).await.expect("edge reachable");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("upgrade sent");
    let head = read_http_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    tcp
}

/// Reads an HTTP response head (up to and including the blank line), one byte at a time.
pub async fn read_http_head(tcp: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, tcp.read_u8())
            .await
            .expect("timed out reading a response head")
            .expect("connection closed inside a response head");
        head.push(byte);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One client-to-server text frame, masked as RFC 6455 requires of clients.
pub fn masked_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The edge's `/ws/health` at `addr`, over a connection of its own that is not kept alive, so
/// the edge's `httpConnections` counts this request and nothing left over from earlier ones.
pub async fn edge_health(addr: SocketAddr) -> Value {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    client
        .get(format!("http://{addr}/ws/health"))
        .header("connection", "close")
        .send()
        .await
        .expect("health reachable")
        .json()
        .await
        .expect("health is JSON")
}

/// A real SMTP server: Python's `aiosmtpd` (from PyPI) with its Maildir handler, run from the
/// virtual environment `scripts/test.sh` installs (its python in `TEST_PYTHON`) on a free
/// loopback port. Killed when dropped. Panics, failing the test, when it cannot start.
pub struct SmtpServer {
    pub port: u16,
    maildir: std::path::PathBuf,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    pub async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "TEST_PYTHON is not set: run the tests with scripts/test.sh, which installs \
                 aiosmtpd from PyPI into a virtual environment (needs python3 with venv and \
                 pip), or point TEST_PYTHON at a python that has aiosmtpd"
            )
        });
        let check = tokio::process::Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .await
            .unwrap_or_else(|e| panic!("TEST_PYTHON={python} does not run: {e}"));
        assert!(
            check.status.success(),
            "aiosmtpd is not installed for TEST_PYTHON={python}: run scripts/test.sh, or \
             `{python} -m pip install aiosmtpd` ({})",
            String::from_utf8_lossy(&check.stderr).trim()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        // aiosmtpd creates the Maildir itself, and only when it does not exist yet.
        let maildir = dir.path().join("maildir");
        let mut last_error = String::new();
        // A free port can be taken by someone else before aiosmtpd binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut child = tokio::process::Command::new(&python)
                .args(["-m", "aiosmtpd", "-n", "-d", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start aiosmtpd with {python}: {e}"));
            let stderr = child.stderr.take().expect("piped stderr");
            let mut lines = BufReader::new(stderr).lines();
            // `-d` makes it say when its socket listens; any other end means it failed.
            let listening = tokio::time::timeout(WAIT, async {
                let mut seen = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("Server is listening on") {
                        return Ok(());
                    }
                    seen.push(line);
                }
                Err(seen.join("\n"))
            })
            .await
            .unwrap_or_else(|_| panic!("aiosmtpd did not start listening within {WAIT:?}"));
            match listening {
                Ok(()) => {
                    // Keep draining its log, or a full pipe would stop the server.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return Self {
                        port,
                        maildir,
                        _child: child,
                        _dir: dir,
                    };
                }
                Err(output) => last_error = output,
            }
        }
        panic!("aiosmtpd did not start: {last_error}");
    }

    /// Every delivered message, raw (headers, blank line, body), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        files
            .iter()
            .map(|path| std::fs::read_to_string(path).expect("read delivered mail"))
            .collect()
    }
}

/// A loopback port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Stores `n` messages from `sender` in `chat` directly, as a long absence would leave them.
pub async fn fill_chat(db: &Db, chat: &str, sender: &str, n: usize) {
    for i in 0..n {
        let id = uuid::Uuid::now_v7().to_string();
        chat_core::storage::insert_message(
            db,
            chat_core::storage::NewMessage {
                id: &id,
                chat_id: chat,
                sender_id: sender,
                role: chat_core::types::Role::User,
                agent_id: "default",
                content: &format!("backlog {i}"),
                status: chat_core::types::MessageStatus::Complete,
                client_message_id: None,
                attachments_json: "[]",
                file_ids: &[],
                metadata_json: "{}",
                now: chrono::Utc::now().naive_utc(),
                reply: chat_core::storage::ReplyLink::None,
            },
        )
        .await
        .expect("backlog message");
    }
}
