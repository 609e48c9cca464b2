//! The chat page's files and voice in a real headless Chromium (`tests/browser/media.mjs`,
//! driven by playwright-core from npm), against a stack whose model, transcription and speech
//! are the fake provider's. Chromium's fake microphone plays a real recording
//! (`tests/data/voice/question.wav`); the page records it with MediaRecorder, uploads it and sends
//! it as a voice message. Afterwards the fake says what reached it: the recording as WebM audio,
//! and the reply's text to speak.
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

#[tokio::test]
async fn the_page_uploads_files_records_voice_and_plays_spoken_replies() {
    let chromium = std::env::var("TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!("TEST_CHROMIUM is not set: run scripts/test.sh (it installs Debian's chromium), or set it to a chromium binary")
    });
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/test.sh (npm ci there)",
        dir.display()
    );
    let shots = std::env::var("TEST_SHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    std::fs::create_dir_all(&shots).expect("screenshot folder");

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
    let run = tokio::process::Command::new("node")
        .arg(dir.join("media.mjs"))
        .arg(&url)
        .env("CHROMIUM", &chromium)
        .env("SHOT_DIR", &shots)
        .env(
            "VOICE_WAV",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/voice/question.wav"),
        )
        .env("HEARD", HEARD)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser run finished within 2 minutes")
        .expect("node runs (Node.js is needed)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}"
    );

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
