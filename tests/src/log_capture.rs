//! Suite-wide proof that no token or message text reaches a log. When `TEST_LOG_DIR` is
//! set (scripts/test.sh sets it), each test process copies every event of the servers it runs,
//! at the most verbose level they have ([`CAPTURE_FILTER`]), as JSON lines to
//! `<dir>/<binary>-<pid>.log.jsonl`, and writes every token and message text the harness
//! mints, sends or receives to `<dir>/<binary>-<pid>.secrets.jsonl`. After the suite, the
//! `scan-logs` program runs [`scan`] over the folder and fails, printing the line, when any
//! secret appears in any log line, or when there is nothing (or too little) to scan.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The folder the capture files go to; unset, nothing is captured.
pub const LOG_DIR_ENV: &str = "TEST_LOG_DIR";
/// What is copied: our crates at `trace` (the most verbose level any of them uses), every
/// dependency at `debug`.
pub const CAPTURE_FILTER: &str = "debug,chat_core=trace,chat_edge=trace,chat_auth=trace,\
     chat_runtime=trace,chat_proto=trace,chat_fake_llm=trace,chat_tests=trace,chatctl=trace";
/// Secrets shorter than this (in bytes) are only found as a whole logged value or quoted
/// (`"hi"`, as `{:?}` prints it): as substrings they would match ordinary log words. So are
/// reply deltas, which are single words.
pub const MIN_SUBSTRING_BYTES: usize = 8;
/// Kind of the recorded strings that are not secret (see [`record_frame`]).
pub const PUBLIC: &str = "public";
/// Kinds that are always secret, even when a frame also carries the same string openly.
const ALWAYS_SECRET: &[&str] = &["token", "secret"];
/// Kinds matched only whole or quoted whatever their length: a reply's deltas are single
/// words ("provider "), found as substrings of any log sentence.
const WORD_KINDS: &[&str] = &["delta"];
/// Suffix of the log copies.
pub const LOG_SUFFIX: &str = ".log.jsonl";
/// Suffix of the recorded secrets.
pub const SECRETS_SUFFIX: &str = ".secrets.jsonl";

/// Keys of a protocol frame whose string value is a secret wherever they appear (`message`,
/// `message_chunk`, `history`, `chat_update`, `help_request`, `auth`).
const SECRET_KEYS: &[(&str, &str)] = &[
    ("content", "content"),
    ("delta", "delta"),
    ("reason", "reason"),
    ("token", "token"),
    ("lastMessage", "content"),
    // A chat's title is the start of its first message unless renamed.
    ("title", "content"),
];

struct Capture {
    /// The recorded secrets.
    file: File,
    seen: HashSet<String>,
    /// The log copy.
    log_path: PathBuf,
}

static CAPTURE: OnceLock<Option<Mutex<Capture>>> = OnceLock::new();

/// Installs the capture once per process (a no-op after the first call). Without
/// `TEST_LOG_DIR`, logs go to stderr only when `RUST_LOG` is set, as before. Panics when
/// the folder cannot be written or another subscriber got there first.
pub fn install() {
    CAPTURE.get_or_init(|| start(std::env::var_os(LOG_DIR_ENV).map(PathBuf::from)));
}

/// The file this process's log copy goes to, installing the capture first: into
/// `TEST_LOG_DIR` when set, else into a folder of its own under the system's temporary
/// folder, so a test that reads the logs also works under a plain `cargo test`. A test binary
/// that reads its logs calls this before anything logs. Panics when the capture was already
/// installed without a folder.
pub fn capture_file() -> PathBuf {
    let capture = CAPTURE.get_or_init(|| {
        let dir = std::env::var_os(LOG_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("chat-test-logs-{}", std::process::id()))
            });
        start(Some(dir))
    });
    match capture {
        Some(capture) => capture
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .log_path
            .clone(),
        None => panic!("the log capture was installed without a folder before capture_file()"),
    }
}

/// Starts the capture into `dir` (`None`: no copy).
fn start(dir: Option<PathBuf>) -> Option<Mutex<Capture>> {
    let stderr = std::env::var_os("RUST_LOG")
        .is_some()
        .then(chat_runtime::LogSettings::default);
    let Some(dir) = dir else {
        if let Some(log) = &stderr {
            chat_runtime::init_tracing(log);
        }
        return None;
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let stem = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    let base = dir.join(format!("{stem}-{}", std::process::id()));
    let path = |suffix: &str| PathBuf::from(format!("{}{suffix}", base.display()));
    let open =
        |path: &Path| File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let log_path = path(LOG_SUFFIX);
    let copy = chat_runtime::LogCopy {
        file: open(&log_path),
        filter: CAPTURE_FILTER.into(),
    };
    assert!(
        chat_runtime::init_tracing_with_copy(stderr.as_ref(), copy),
        "another tracing subscriber was installed first: the log capture would stay empty"
    );
    Some(Mutex::new(Capture {
        file: open(&path(SECRETS_SUFFIX)),
        seen: HashSet::new(),
        log_path,
    }))
}

/// Records a secret (a token, a message text) that must never appear in a log. A no-op when
/// nothing is captured; empty and whitespace-only values are ignored.
pub fn record(kind: &str, secret: &str) {
    install();
    let Some(Some(capture)) = CAPTURE.get() else {
        return;
    };
    if secret.trim().is_empty() {
        return;
    }
    let mut capture = capture
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if capture.seen.insert(format!("{kind}\u{0}{secret}")) {
        let line = serde_json::json!({"kind": kind, "value": secret}).to_string();
        capture
            .file
            .write_all(format!("{line}\n").as_bytes())
            .expect("secrets file");
    }
}

/// Records the secrets of a protocol frame sent or received: every string under a
/// [`SECRET_KEYS`] key, and every string inside a `context`. Every other string of the frame
/// (ids, model names, actions, statuses) is recorded as `public`: a text equal to one of them
/// (the fuzzing tests send such values in every field) cannot be told apart from it in a log.
pub fn record_frame(frame: &Value) {
    if CAPTURE.get().is_some_and(Option::is_none) {
        return;
    }
    walk(frame, None, &mut |kind, secret| record(kind, secret));
}

/// Calls `sink(kind, text)` for every string of `value`: `kind` is that of the key above
/// (strings under `context` stay context however deep), `public` outside secret keys.
fn walk(value: &Value, kind: Option<&str>, sink: &mut impl FnMut(&str, &str)) {
    match value {
        Value::String(s) => sink(kind.unwrap_or(PUBLIC), s),
        Value::Array(items) => items.iter().for_each(|v| walk(v, kind, sink)),
        Value::Object(map) => {
            for (key, v) in map {
                let inner = if key == "context" || kind == Some("context") {
                    Some("context")
                } else {
                    SECRET_KEYS
                        .iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, kind)| *kind)
                };
                walk(v, inner, sink);
            }
        }
        _ => {}
    }
}

/// One secret found in a log.
#[derive(Debug)]
pub struct Leak {
    pub kind: String,
    pub secret: String,
    pub file: PathBuf,
    pub line_number: usize,
    pub line: String,
}

/// What a scan looked at.
#[derive(Debug, Default)]
pub struct Summary {
    pub log_files: usize,
    pub log_lines: usize,
    /// Lines from `chat_core` / `chat_edge` targets, and those at DEBUG or TRACE from our crates.
    pub core_lines: usize,
    pub edge_lines: usize,
    pub verbose_lines: usize,
    /// Distinct secrets by kind.
    pub secrets: HashMap<String, usize>,
    /// Secrets matched only whole or quoted (short ones, deltas).
    pub short_secrets: usize,
    /// Texts not checked because a frame also carried them openly (an id, a model name).
    pub public_secrets: usize,
    pub leaks: Vec<Leak>,
}

impl Summary {
    /// Every leak found and every reason this scan proves nothing (empty when it passes): the
    /// suite must have logged from both servers at a verbose level and used tokens and texts.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .leaks
            .iter()
            .map(|l| {
                format!(
                    "{} ({} {:?}) logged at {}:{}: {}",
                    l.kind,
                    l.secret.len(),
                    l.secret,
                    l.file.display(),
                    l.line_number,
                    l.line
                )
            })
            .collect();
        let mut require = |ok: bool, what: &str| {
            if !ok {
                out.push(format!("nothing to prove: {what}"));
            }
        };
        require(
            self.log_files > 0,
            "no capture files (was TEST_LOG_DIR set?)",
        );
        require(self.log_lines > 0, "the captured logs are empty");
        require(self.core_lines > 0, "no line from chat_core");
        require(self.edge_lines > 0, "no line from chat_edge");
        require(
            self.verbose_lines > 0,
            "no DEBUG or TRACE line from our crates",
        );
        require(
            self.secrets.get("token").is_some_and(|n| *n > 0),
            "no token recorded",
        );
        require(
            self.secrets.get("content").is_some_and(|n| *n > 0),
            "no message text recorded",
        );
        out
    }
}

/// Scans every log copy in `dir` for every secret recorded in `dir`.
pub fn scan(dir: &Path) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut recorded: Vec<(String, String)> = Vec::new();
    let mut public = HashSet::new();
    for path in files
        .iter()
        .filter(|p| name(p).is_some_and(|n| n.ends_with(SECRETS_SUFFIX)))
    {
        for line in BufReader::new(File::open(path)?).lines() {
            let entry: Value = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
            let (Some(kind), Some(value)) = (entry["kind"].as_str(), entry["value"].as_str())
            else {
                continue;
            };
            if kind == PUBLIC {
                public.insert(value.to_string());
            } else {
                recorded.push((kind.to_string(), value.to_string()));
            }
        }
    }
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    for (kind, value) in recorded {
        if !ALWAYS_SECRET.contains(&kind.as_str()) && public.contains(&value) {
            summary.public_secrets += 1;
        } else if seen.insert(value.clone()) {
            *summary.secrets.entry(kind.clone()).or_default() += 1;
            secrets.push((kind, value));
        }
    }
    let matcher = Matcher::new(&secrets);
    summary.short_secrets = matcher.short.len();
    for path in files
        .iter()
        .filter(|p| name(p).is_some_and(|n| n.ends_with(LOG_SUFFIX)))
    {
        summary.log_files += 1;
        for (index, line) in BufReader::new(File::open(path)?).lines().enumerate() {
            let line = line?;
            summary.log_lines += 1;
            let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::String(line.clone()));
            let target = parsed["target"].as_str().unwrap_or_default();
            let ours = target.starts_with("chat_") || target.starts_with("chatctl");
            summary.core_lines += usize::from(target.starts_with("chat_core"));
            summary.edge_lines += usize::from(target.starts_with("chat_edge"));
            summary.verbose_lines +=
                usize::from(ours && matches!(parsed["level"].as_str(), Some("DEBUG" | "TRACE")));
            let mut values = Vec::new();
            strings(&parsed, &mut values);
            if let Some(found) = matcher.find(&values) {
                let (kind, secret) = &secrets[found];
                summary.leaks.push(Leak {
                    kind: kind.clone(),
                    secret: secret.clone(),
                    file: path.clone(),
                    line_number: index + 1,
                    line,
                });
            }
        }
    }
    Ok(summary)
}

/// Every string of a JSON value (object keys are field names, not data).
fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Finds secrets in logged strings: long ones as substrings, raw or as `{:?}` escapes them,
/// through an index of their first [`MIN_SUBSTRING_BYTES`] bytes; short ones as a whole value
/// or quoted inside one.
struct Matcher {
    /// First bytes -> (pattern, secret index).
    long: HashMap<[u8; MIN_SUBSTRING_BYTES], Vec<(Vec<u8>, usize)>>,
    /// Whole value -> secret index.
    short: HashMap<String, usize>,
    /// `"secret"` as `{:?}` prints it -> secret index.
    quoted: Vec<(String, usize)>,
}

impl Matcher {
    fn new(secrets: &[(String, String)]) -> Self {
        let mut m = Matcher {
            long: HashMap::new(),
            short: HashMap::new(),
            quoted: Vec::new(),
        };
        for (index, (kind, secret)) in secrets.iter().enumerate() {
            let debug = format!("{secret:?}");
            if secret.len() < MIN_SUBSTRING_BYTES || WORD_KINDS.contains(&kind.as_str()) {
                m.short.insert(secret.clone(), index);
                m.quoted.push((debug, index));
                continue;
            }
            let escaped = debug[1..debug.len() - 1].to_string();
            for pattern in [secret.clone(), escaped] {
                let bytes = pattern.into_bytes();
                let mut key = [0u8; MIN_SUBSTRING_BYTES];
                key.copy_from_slice(&bytes[..MIN_SUBSTRING_BYTES]);
                let entry = m.long.entry(key).or_default();
                if !entry.iter().any(|(p, _)| *p == bytes) {
                    entry.push((bytes, index));
                }
            }
        }
        m
    }

    fn find(&self, values: &[&str]) -> Option<usize> {
        for value in values {
            if let Some(index) = self.short.get(*value) {
                return Some(*index);
            }
            if value.contains('"')
                && let Some((_, index)) = self.quoted.iter().find(|(q, _)| value.contains(q))
            {
                return Some(*index);
            }
            let bytes = value.as_bytes();
            for start in 0..(bytes.len() + 1).saturating_sub(MIN_SUBSTRING_BYTES) {
                let mut key = [0u8; MIN_SUBSTRING_BYTES];
                key.copy_from_slice(&bytes[start..start + MIN_SUBSTRING_BYTES]);
                if let Some(candidates) = self.long.get(&key)
                    && let Some((_, index)) = candidates
                        .iter()
                        .find(|(p, _)| bytes[start..].starts_with(p))
                {
                    return Some(*index);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(secrets: &[(&str, &str)], log: &[Value]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = File::create(dir.path().join(format!("t-1{SECRETS_SUFFIX}"))).expect("file");
        for (kind, value) in secrets {
            writeln!(s, "{}", serde_json::json!({"kind": kind, "value": value})).expect("write");
        }
        let mut l = File::create(dir.path().join(format!("t-1{LOG_SUFFIX}"))).expect("file");
        for line in log {
            writeln!(l, "{line}").expect("write");
        }
        dir
    }

    fn line(target: &str, level: &str, fields: Value) -> Value {
        serde_json::json!({"timestamp": "2026-01-01T00:00:00Z", "level": level, "target": target, "fields": fields})
    }

    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    fn clean_log() -> Vec<Value> {
        vec![
            line(
                "chat_core::startup",
                "INFO",
                serde_json::json!({"message": "chat-core ready"}),
            ),
            line(
                "chat_edge",
                "DEBUG",
                serde_json::json!({"message": "this is fine, hi"}),
            ),
        ]
    }

    #[test]
    fn a_clean_log_with_secrets_passes() {
        let secrets = [
            ("token", TOKEN),
            ("content", "secret plans"),
            ("content", "hi"),
        ];
        let dir = dir_with(&secrets, &clean_log());
        let summary = scan(dir.path()).expect("scan");
        assert_eq!(summary.problems(), Vec::<String>::new());
        assert_eq!(summary.short_secrets, 1);
    }

    #[test]
    fn every_way_of_logging_a_secret_is_found() {
        let secrets = [
            ("token", TOKEN),
            ("content", "line one\nline \"two\""),
            ("content", "hi"),
        ];
        let leaks = [
            // A token inside a URL, and as a field.
            serde_json::json!({"message": "upgrade", "uri": format!("/ws?token={TOKEN}")}),
            serde_json::json!({"message": "refused", "token": TOKEN}),
            // Message text raw, and as `{:?}` escapes it.
            serde_json::json!({"message": "line one\nline \"two\""}),
            serde_json::json!({"frame": "Message { content: \"line one\\nline \\\"two\\\"\" }"}),
            // A short text as a whole value, and quoted by `{:?}`.
            serde_json::json!({"content": "hi"}),
            serde_json::json!({"frame": "Inbound { content: \"hi\" }"}),
        ];
        for leak in leaks {
            let mut log = clean_log();
            log.push(line("chat_core::chat", "TRACE", leak.clone()));
            let dir = dir_with(&secrets, &log);
            let summary = scan(dir.path()).expect("scan");
            assert_eq!(summary.leaks.len(), 1, "{leak}");
            assert_eq!(summary.leaks[0].line_number, 3);
            assert!(summary.problems()[0].contains("logged at"), "{leak}");
        }
        // Also in a line that is not JSON at all.
        let dir = dir_with(&secrets, &[]);
        std::fs::write(
            dir.path().join(format!("t-1{LOG_SUFFIX}")),
            format!("garbage {TOKEN}\n"),
        )
        .expect("write");
        assert_eq!(scan(dir.path()).expect("scan").leaks.len(), 1);
    }

    #[test]
    fn an_empty_or_partial_capture_proves_nothing_and_fails() {
        let empty = tempfile::tempdir().expect("dir");
        let problems = scan(empty.path()).expect("scan").problems();
        assert!(
            problems.iter().any(|p| p.contains("no capture files")),
            "{problems:?}"
        );

        let no_secrets = dir_with(&[], &clean_log());
        let problems = scan(no_secrets.path()).expect("scan").problems();
        assert!(
            problems.iter().any(|p| p.contains("no token")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("no message text")),
            "{problems:?}"
        );

        let quiet = dir_with(&[("token", TOKEN), ("content", "x y z")], &[]);
        let problems = scan(quiet.path()).expect("scan").problems();
        assert!(problems.iter().any(|p| p.contains("empty")), "{problems:?}");

        let info_only = vec![line(
            "chat_core",
            "INFO",
            serde_json::json!({"message": "m"}),
        )];
        let dir = dir_with(&[("token", TOKEN), ("content", "x y z")], &info_only);
        let problems = scan(dir.path()).expect("scan").problems();
        assert!(
            problems.iter().any(|p| p.contains("chat_edge")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("DEBUG or TRACE")),
            "{problems:?}"
        );
    }

    #[test]
    fn frames_yield_their_texts_tokens_and_context_strings() {
        let mut found = Vec::new();
        let frame = serde_json::json!({"type": "message", "data": {
            "content": "hello", "messageId": "m1", "chatId": "c1",
            "context": {"plan": "pro", "nested": {"list": ["deep", 3]}},
            "message": {"content": "echo", "id": "msg-1"},
        }});
        walk(&frame, None, &mut |k, v| {
            found.push((k.to_string(), v.to_string()))
        });
        found.sort();
        assert_eq!(
            found,
            vec![
                ("content".to_string(), "echo".to_string()),
                ("content".into(), "hello".into()),
                ("context".into(), "deep".into()),
                ("context".into(), "pro".into()),
                ("public".into(), "c1".into()),
                ("public".into(), "m1".into()),
                ("public".into(), "message".into()),
                ("public".into(), "msg-1".into()),
            ]
        );
    }

    #[test]
    fn texts_a_frame_carries_openly_are_not_checked_but_tokens_always_are() {
        let secrets = [
            ("token", TOKEN),
            ("public", TOKEN),
            ("content", "some chat id"),
            ("public", "some chat id"),
            ("content", "secret plans"),
        ];
        let mut log = clean_log();
        log.push(line(
            "chat_core",
            "INFO",
            serde_json::json!({"chat": "some chat id"}),
        ));
        let summary = scan(dir_with(&secrets, &log).path()).expect("scan");
        assert!(summary.leaks.is_empty(), "{:?}", summary.leaks);
        assert_eq!(summary.public_secrets, 1);
        log.push(line("chat_core", "INFO", serde_json::json!({"t": TOKEN})));
        let summary = scan(dir_with(&secrets, &log).path()).expect("scan");
        assert_eq!(summary.leaks.len(), 1);
    }

    #[test]
    fn deltas_are_words_found_only_whole_or_quoted() {
        let secrets = [
            ("token", TOKEN),
            ("content", "x y z"),
            ("delta", "provider "),
        ];
        let mut log = clean_log();
        log.push(line(
            "chat_core",
            "WARN",
            serde_json::json!({"error": "model provider answered 500"}),
        ));
        assert!(
            scan(dir_with(&secrets, &log).path())
                .expect("scan")
                .leaks
                .is_empty()
        );
        log.push(line(
            "chat_core",
            "TRACE",
            serde_json::json!({"delta": "provider "}),
        ));
        assert_eq!(
            scan(dir_with(&secrets, &log).path())
                .expect("scan")
                .leaks
                .len(),
            1
        );
    }
}
