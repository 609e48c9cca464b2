//! The chat page's files and voice in a real headless Chromium (`tests/browser/media.mjs`,
//! driven by playwright-core from npm), against a stack whose model, transcription and speech
//! are the fake provider's. Chromium's fake microphone plays a real recording
//! (`tests/data/voice/question.wav`); the page records it with MediaRecorder, uploads it and sends
//! it as a voice message. Afterwards the fake says what reached it: the recording as WebM audio,
//! and the reply's text to speak.
//!
//! A second run drives the sessions and admin pages beside the chat page (`pages.mjs`): a
//! session followed from the user's chat through the help queue to a takeover and back.
//!
//! Needs Debian's chromium (`TEST_CHROMIUM`) and `npm ci` in `tests/browser`; scripts/test.sh
//! provides both, and this test fails naming what is missing otherwise.

use std::path::PathBuf;
use std::time::Duration;

use chat_tests::fake_llm::FakeScript;
use chat_tests::{Llm, StackOptions, spawn_stack};

const ANSWER: &[u8] = include_bytes!("../data/voice/answer.wav");
const HEARD: &str = "What is the weather like today?";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Runs `script` of tests/browser with `args` in Node against Debian's chromium, to the end
/// (at most 2 minutes); fails the test with its output unless it exits 0.
async fn run_browser(script: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) {
    let chromium = std::env::var("TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!("TEST_CHROMIUM is not set: run scripts/test.sh (it installs Debian's chromium), or set it to a chromium binary")
    });
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/test.sh (npm ci there)",
        dir.display()
    );
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join(script))
        .args(args)
        .env("CHROMIUM", &chromium)
        .env("SHOT_DIR", shot_dir())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser run finished within 2 minutes")
        .expect("node runs (Node.js is needed)");
    assert!(
        out.status.success(),
        "the browser run {script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the runs save their screenshots (`TEST_SHOT_DIR`, else the temporary folder).
fn shot_dir() -> PathBuf {
    let shots = std::env::var("TEST_SHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    shots
}

#[tokio::test]
async fn the_page_uploads_files_records_voice_and_plays_spoken_replies() {
    let script = FakeScript::reply(&["Sunny", " all day."])
        .with_transcript(HEARD)
        .with_speech(ANSWER.to_vec());
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(script))
            .core(|core| {
                core.llm.voice.provider = "fake-openai".into();
                core.llm.voice.speech_format = "wav".into();
            }),
    )
    .await;
    let url = stack.http_url(&format!("/?token={}", stack.token("alice", &[])));
    let recording = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/voice/question.wav");
    run_browser(
        "media.mjs",
        &[&url],
        &[
            ("VOICE_WAV", recording.as_os_str()),
            ("HEARD", std::ffi::OsStr::new(HEARD)),
        ],
    )
    .await;

    let fake = stack.fake.as_ref().expect("the fake provider");
    let received = fake.received();
    let heard: Vec<_> = received
        .iter()
        .filter(|r| r.path == "/v1/audio/transcriptions")
        .collect();
    assert_eq!(heard.len(), 1, "one voice message: {heard:?}");
    let file = &heard[0].body["file"];
    // What MediaRecorder made of the microphone: Opus in WebM, seconds of it.
    assert!(
        file["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("audio/webm")),
        "{file}"
    );
    assert!(file["size"].as_u64().is_some_and(|n| n > 2_000), "{file}");
    let spoken: Vec<_> = received
        .iter()
        .filter(|r| r.path == "/v1/audio/speech")
        .collect();
    assert_eq!(
        spoken.len(),
        1,
        "the reply after spoken replies were turned on"
    );
    assert_eq!(spoken[0].body["input"], "Sunny all day.");
}

#[tokio::test]
async fn the_sessions_and_admin_pages_follow_a_session_through_a_takeover() {
    // The site's token service, for the renewal step (played by the browser run).
    let stack = chat_tests::spawn_stack(StackOptions::default().edge(|edge| {
        edge.pages.token_url = Some("/auth/chat-token".into());
    }))
    .await;
    // Bob's one chat is long: a turn and 70 more messages.
    let (mut bob, _) = stack.connect("bob").await;
    let long = chat_tests::chat_with_one_turn(&mut bob, "the first of many").await;
    chat_tests::fill_chat(&stack.db, &long, "bob", 70).await;
    drop(bob);
    let base = stack.http_url("");
    let (user, admin, bob) = (
        stack.token("alice", &[]),
        stack.token("root", &["admin"]),
        stack.token("bob", &[]),
    );
    let (short, fresh) = (
        stack.token_for("carol", &[], 12),
        stack.token_for("carol", &[], 3600),
    );
    run_browser(
        "pages.mjs",
        &[&base, &user, &admin, &bob, &short, &fresh],
        &[],
    )
    .await;
    // What the pages did is what the database holds.
    let chats = chat_core::storage::list_user_chats(&stack.db, "alice", 10)
        .await
        .expect("chats");
    assert_eq!(chats.len(), 1, "{chats:?}");
    assert!(
        chats[0].admin_assisted && !chats[0].needs_help,
        "{:?}",
        chats[0]
    );
}

#[tokio::test]
async fn the_client_module_resends_resumes_and_renews_its_token() {
    let stack = chat_tests::spawn_default().await;
    let base = stack.http_url("");
    let (short, fresh) = (
        stack.token_for("dora", &[], 12),
        stack.token_for("dora", &[], 3600),
    );
    run_browser("client.mjs", &[&base, &short, &fresh], &[]).await;
    // Two messages sent, each stored once, each answered.
    let chats = chat_core::storage::list_user_chats(&stack.db, "dora", 10)
        .await
        .expect("chats");
    assert_eq!(chats.len(), 1, "{chats:?}");
    assert_eq!(chats[0].message_count, 4, "{:?}", chats[0]);
}
