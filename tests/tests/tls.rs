//! TLS, with certificates the tests make (rcgen, self-signed for 127.0.0.1) and clients that
//! trust only the one they expect. At the edge (`[tls]`): `https://` and a chat turn over
//! `wss://`; a plain-HTTP client and a silent socket on the TLS port turned away without harm;
//! the certificate swapped on SIGHUP and on a file change while open sockets carry on; a reload
//! of a broken file keeping the certificate in use; start-up errors naming the file at fault.
//! Between edge and core (`grpc.tls_*`, `core_ca_file`): a turn through a core that speaks only
//! TLS, `chatctl --core-ca`, and an edge that does not trust the core's certificate reporting
//! not ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chat_edge::{Edge, EdgeSettings};
use chat_tests::edge_process::EdgeProcess;
use chat_tests::{SECRET, Stack, StackOptions, chat_with_one_turn, run_chatctl, spawn_stack};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for 127.0.0.1 and its key, as PEM.
struct Cert {
    pem: String,
    key: String,
}

fn make_cert() -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("rcgen makes a certificate");
    Cert {
        pem: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
    }
}

/// Writes both files the way a certificate manager does: each to a temporary name, then
/// renamed over the old one.
fn install(dir: &Path, cert: &Cert) -> (PathBuf, PathBuf) {
    let (cert_file, key_file) = (dir.join("edge.crt"), dir.join("edge.key"));
    for (path, text) in [(&key_file, &cert.key), (&cert_file, &cert.pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
    (cert_file, key_file)
}

fn trusting(cert: &Cert) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(cert.pem.as_bytes()) {
        roots.add(der.expect("pem")).expect("root");
    }
    let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` that trusts only `cert`.
async fn tls(addr: SocketAddr, cert: &Cert) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    trusting(cert)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(addr: SocketAddr, cert: &Cert, token: &str) -> Wss {
    let stream = tls(addr, cert).await.expect("TLS handshake");
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/ws?token={token}"), stream)
        .await
        .expect("WebSocket over TLS");
    ws
}

async fn send(ws: &mut Wss, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
}

async fn recv_until(ws: &mut Wss, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                    if pred(&frame) {
                        return frame;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the frame came in time")
}

async fn recv_type(ws: &mut Wss, ty: &str) -> Value {
    recv_until(ws, |f| f["type"] == ty).await
}

/// One message and its acknowledgement.
async fn message(ws: &mut Wss, chat: Option<&str>, content: &str, id: &str) -> Value {
    let mut data = json!({"content": content, "messageId": id});
    if let Some(chat) = chat {
        data["chatId"] = json!(chat);
    }
    send(
        ws,
        json!({"type": "message", "messageId": id, "data": data}),
    )
    .await;
    recv_until(ws, |f| f["type"] == "ack" && f["data"]["messageId"] == id).await
}

fn https_client(cert: &Cert) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).expect("pem"))
        .build()
        .expect("client")
}

#[tokio::test]
async fn https_and_wss_carry_the_protocol_and_strangers_are_turned_away() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = make_cert();
    let (cert_file, key_file) = install(dir.path(), &cert);
    let stack = spawn_stack(StackOptions::default().edge(move |edge| {
        edge.tls.cert_file = Some(cert_file);
        edge.tls.key_file = Some(key_file);
        edge.limits.header_read_timeout_ms = 300;
    }))
    .await;
    let addr = stack.edge_addr;

    let health = https_client(&cert)
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .expect("https request");
    assert_eq!(health.status(), 200);

    // Plain HTTP on the TLS port gets no answer, and the edge goes on serving.
    let plain = reqwest::get(format!("http://{addr}/healthz")).await;
    assert!(
        plain.is_err() || !plain.as_ref().is_ok_and(|r| r.status().is_success()),
        "plain HTTP was served on the TLS port: {plain:?}"
    );
    // A socket that never starts its handshake is closed at the header deadline.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the edge closed the silent socket");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the silent socket was sent {read:?}"
    );

    // A whole turn over wss://.
    let mut ws = wss(addr, &cert, &stack.token("tess", &[])).await;
    let session = recv_type(&mut ws, "session").await;
    assert_eq!(session["data"]["userId"], "tess");
    let ack = message(&mut ws, None, "hello over TLS", "t-1").await;
    assert_eq!(ack["data"]["status"], "sent");
    let reply = recv_until(&mut ws, |f| {
        f["type"] == "message" && f["data"]["message"]["role"] == "assistant"
    })
    .await;
    assert_eq!(reply["data"]["message"]["status"], "complete");
    assert!(
        reply["data"]["message"]["content"]
            .as_str()
            .is_some_and(|t| t.contains("hello over TLS")),
        "the demo reply: {reply}"
    );
    let again = https_client(&cert)
        .get(format!("https://{addr}/readyz"))
        .send()
        .await
        .expect("https after the strangers");
    assert_eq!(again.status(), 200);
}

/// The real `chat-edge` in front of `stack`'s core, serving TLS from the two files and
/// checking them for changes every `reload_ms` (0: on SIGHUP only).
fn tls_edge(stack: &Stack, files: &(PathBuf, PathBuf), reload_ms: u64) -> EdgeProcess {
    EdgeProcess::start_with(
        stack.core_addr,
        &[
            ("CHAT_EDGE_TLS__CERT_FILE", files.0.display().to_string()),
            ("CHAT_EDGE_TLS__KEY_FILE", files.1.display().to_string()),
            ("CHAT_EDGE_TLS__RELOAD_INTERVAL_MS", reload_ms.to_string()),
        ],
    )
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_open_sockets_carry_on() {
    let dir = tempfile::tempdir().expect("dir");
    let (first, second) = (make_cert(), make_cert());
    let files = install(dir.path(), &first);
    let stack = spawn_stack(StackOptions::default()).await;
    // SIGHUP only: the swap below is the signal's doing.
    let edge = tls_edge(&stack, &files, 0);
    let mut ws = wss(edge.addr, &first, &stack.token("hal", &[])).await;
    recv_type(&mut ws, "session").await;
    let ack = message(&mut ws, None, "before the swap", "h-1").await;
    let chat = ack["data"]["chatId"].as_str().expect("chat").to_string();

    install(dir.path(), &second);
    edge.signal("HUP");
    let reloaded = edge.wait_for_log("TLS certificate reloaded", WAIT);
    assert_eq!(reloaded["fields"]["reason"], "SIGHUP");
    tls(edge.addr, &second)
        .await
        .expect("new handshakes get the new certificate");
    assert!(
        tls(edge.addr, &first).await.is_err(),
        "the old certificate is still served"
    );
    // The socket opened under the old certificate carries on.
    let ack = message(&mut ws, Some(&chat), "after the swap", "h-2").await;
    assert_eq!(ack["data"]["chatId"], chat.as_str());
}

#[tokio::test]
async fn a_changed_file_is_picked_up_and_a_broken_one_keeps_the_certificate_in_use() {
    let dir = tempfile::tempdir().expect("dir");
    let (first, second) = (make_cert(), make_cert());
    let files = install(dir.path(), &first);
    let key_file = files.1.clone();
    let stack = spawn_stack(StackOptions::default()).await;
    let edge = tls_edge(&stack, &files, 50);
    tls(edge.addr, &first).await.expect("the first certificate");

    install(dir.path(), &second);
    let reloaded = edge.wait_for_log("TLS certificate reloaded", WAIT);
    assert_eq!(reloaded["fields"]["reason"], "a file changed");
    tls(edge.addr, &second)
        .await
        .expect("the second certificate");

    // A key file cut short: the reload fails, the second certificate stays.
    std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nAAAA\n").expect("write");
    let refused = edge.wait_for_log("TLS certificate not reloaded: the one in use stays", WAIT);
    assert!(
        refused["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("tls.key_file")),
        "the failed reload names the file: {refused}"
    );
    tls(edge.addr, &second)
        .await
        .expect("the certificate in use survived the broken file");
}

#[tokio::test]
async fn unusable_tls_settings_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (one, other) = (make_cert(), make_cert());
    let (cert_file, key_file) = install(dir.path(), &one);
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, &other.key).expect("write");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let missing = dir.path().join("missing.crt");

    let start = |cert: Option<&Path>, key: Option<&Path>| {
        let mut settings = EdgeSettings {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            auth: chat_auth::AuthSettings::hs256(SECRET),
            ..EdgeSettings::default()
        };
        settings.tls.cert_file = cert.map(Path::to_owned);
        settings.tls.key_file = key.map(Path::to_owned);
        async move {
            match Edge::build(settings).await {
                Ok(_) => String::from("started"),
                Err(err) => err.to_string(),
            }
        }
    };
    let cases = [
        (
            Some(missing.as_path()),
            Some(key_file.as_path()),
            "tls.cert_file",
            "missing.crt",
        ),
        (
            Some(not_pem.as_path()),
            Some(key_file.as_path()),
            "tls.cert_file",
            "no PEM",
        ),
        (
            Some(cert_file.as_path()),
            Some(not_pem.as_path()),
            "tls.key_file",
            "not.pem",
        ),
        (
            Some(cert_file.as_path()),
            Some(other_key.as_path()),
            "tls.key_file",
            "cannot be used",
        ),
        (
            Some(cert_file.as_path()),
            None,
            "tls.cert_file",
            "set together",
        ),
    ];
    for (cert, key, names, says) in cases {
        let error = start(cert, key).await;
        assert!(
            error.contains(names) && error.contains(says),
            "{cert:?} + {key:?}: {error:?} should name {names} and say {says:?}"
        );
    }
    assert_eq!(start(Some(&cert_file), Some(&key_file)).await, "started");
}

#[tokio::test]
async fn edge_and_core_speak_grpc_over_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, stranger) = (make_cert(), make_cert());
    let (cert_file, key_file) = install(dir.path(), &cert);
    let ca_file = cert_file.clone();
    let stack = spawn_stack(
        StackOptions::default()
            .core(move |core| {
                core.grpc.tls_cert_file = Some(cert_file);
                core.grpc.tls_key_file = Some(key_file);
            })
            .edge(move |edge| {
                edge.core_url = edge.core_url.replace("http://", "https://");
                edge.core_ca_file = Some(ca_file);
            }),
    )
    .await;
    // The stack's edge reaches the core over TLS: a whole turn.
    let (mut ws, _) = stack.connect("gail").await;
    let chat = chat_with_one_turn(&mut ws, "hello through gRPC over TLS").await;
    assert!(!chat.is_empty());

    // chatctl: with the CA it is served; without it, told what to give.
    let core = format!("https://{}", stack.core_addr);
    let mut with_ca = stack.chatctl(None);
    with_ca
        .env("CHATCTL_CORE", &core)
        .env("CHATCTL_CORE_CA", dir.path().join("edge.crt"));
    let health = run_chatctl(with_ca, &["health"], None).await;
    assert_eq!(health.code, Some(0), "{health:?}");
    let mut without = stack.chatctl(None);
    without.env("CHATCTL_CORE", &core);
    let refused = run_chatctl(without, &["health"], None).await;
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("--core-ca"), "{refused:?}");
    // Plain HTTP/2 to the TLS port gets nowhere.
    let plain = run_chatctl(stack.chatctl(None), &["health"], None).await;
    assert!(
        plain.code.is_some_and(|c| c != 0) && plain.stderr.contains("health"),
        "plain gRPC to a TLS core: {plain:?}"
    );

    // An edge that trusts another certificate never reaches the core: not ready.
    let stranger_file = dir.path().join("stranger.crt");
    std::fs::write(&stranger_file, &stranger.pem).expect("write");
    let wary = EdgeProcess::start_with(
        stack.core_addr,
        &[
            ("CHAT_EDGE_CORE_URL", core.clone()),
            (
                "CHAT_EDGE_CORE_CA_FILE",
                stranger_file.display().to_string(),
            ),
        ],
    );
    let ready = reqwest::get(format!("http://{}/readyz", wary.addr))
        .await
        .expect("readyz answers");
    assert_eq!(
        ready.status(),
        503,
        "an edge that cannot verify the core is not ready"
    );

    // An https:// core_url without a CA stops the edge at start, naming the setting.
    let settings = EdgeSettings {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        core_url: core,
        auth: chat_auth::AuthSettings::hs256(SECRET),
        ..EdgeSettings::default()
    };
    let error = Edge::build(settings)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("core_ca_file"), "{error:?}");
}
