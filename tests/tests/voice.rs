//! Voice end to end, with real speech (espeak-ng recordings in tests/data/voice). A voice
//! message (empty content, an audio attachment) goes through the fake provider's real
//! `/v1/audio/transcriptions`; the transcript becomes the message's text, the audio stays
//! attached, and the reply follows. A chat that asks for spoken replies gets each complete
//! reply spoken through `/v1/audio/speech` and attached as audio, downloadable with ranges.
//! Every failure is a clear error that stores nothing, or a reply without audio that says why.

use chat_tests::fake_llm::{FakeScript, Fault};
use chat_tests::{Llm, Stack, StackOptions, spawn_default, spawn_stack};
use serde_json::{Value, json};

const QUESTION: &[u8] = include_bytes!("../data/voice/question.wav");
const ANSWER: &[u8] = include_bytes!("../data/voice/answer.wav");
const HEARD: &str = "What is the weather like today?";

/// A stack whose model and voice are the fake's (speaking WAV).
async fn voice_stack(script: FakeScript) -> Stack {
    spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(script))
            .core(|core| {
                core.llm.voice.provider = "fake-openai".into();
                core.llm.voice.speech_format = "wav".into();
            }),
    )
    .await
}

/// The requests the fake received at `path`, as it recorded them.
fn received_at(stack: &Stack, path: &str) -> Vec<Value> {
    let fake = stack.fake.as_ref().expect("a fake provider");
    fake.received()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.body)
        .collect()
}

/// The reply's final `message` (its `data.message`), once the reply ended.
async fn final_reply(ws: &mut chat_tests::Ws) -> Value {
    let frames = ws.recv_reply().await;
    frames
        .iter()
        .rev()
        .find(|f| f["type"] == "message")
        .map(|f| f["data"]["message"].clone())
        .expect("the final message")
}

/// A new chat with spoken replies on; its id.
async fn spoken_chat(ws: &mut chat_tests::Ws) -> String {
    ws.send(json!({"type": "chat_update", "data": {"action": "create", "spokenReplies": true}}))
        .await;
    let created = ws.recv_type("chat_update").await;
    assert_eq!(
        created["data"]["updates"]["spokenReplies"], true,
        "{created}"
    );
    created["data"]["chatId"]
        .as_str()
        .expect("chat id")
        .to_owned()
}

async fn get(url: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("download")
}

#[tokio::test]
async fn a_voice_message_is_transcribed_kept_with_its_audio_and_answered() {
    let stack =
        voice_stack(FakeScript::reply(&["Sunny", " all day."]).with_transcript(HEARD)).await;
    let (status, audio) = stack
        .upload("alice", "question.wav", "audio/wav", QUESTION.to_vec())
        .await;
    assert_eq!(status, 201, "{audio}");
    let (mut ws, session) = stack.connect("alice").await;
    assert_eq!(session["data"]["voice"], true, "{session}");
    // No content at all: the audio is the message.
    ws.send(json!({"type": "message", "data": {"messageId": "v-1", "attachments": [audio["id"]]}}))
        .await;
    let ack = ws.recv_type("ack").await;
    let mine = ws.recv_type("message").await["data"]["message"].clone();
    assert_eq!(mine["content"], HEARD, "{mine}");
    assert_eq!(mine["metadata"]["transcribed"], true);
    assert_eq!(mine["attachments"][0]["id"], audio["id"]);
    assert_eq!(mine["attachments"][0]["mime"], "audio/wav");
    let reply = ws.recv_type("message").await["data"]["message"].clone();
    assert_eq!(reply["content"], "Sunny all day.");

    // The whole recording reached the transcription endpoint, with its name and type.
    let heard = received_at(&stack, "/v1/audio/transcriptions");
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0]["model"], "whisper-1");
    assert_eq!(heard[0]["file"]["name"], "question.wav");
    assert_eq!(heard[0]["file"]["type"], "audio/wav");
    assert_eq!(heard[0]["file"]["size"], QUESTION.len());
    let seconds = heard[0]["file"]["seconds"].as_f64().expect("a WAV file");
    assert!(
        (seconds - chat_tests::fake_llm::wav_seconds(QUESTION).expect("a WAV file")).abs() < 1e-9
            && seconds > 1.0,
        "{seconds}"
    );
    // The model answered the transcript.
    let chat = received_at(&stack, "/v1/chat/completions");
    let last = chat[0]["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned();
    let asked = last.expect("a user turn")["content"].to_string();
    assert!(asked.contains(HEARD), "{asked}");

    // Stored as sent: history has the transcript and the audio, with a working URL.
    ws.send(json!({"type": "history", "data": {"chatId": ack["data"]["chatId"]}}))
        .await;
    let history = ws.recv_type("history").await;
    let stored = &history["data"]["messages"][0];
    assert_eq!(stored["content"], HEARD);
    assert_eq!(stored["metadata"]["transcribed"], true);
    let url = stored["attachments"][0]["url"].as_str().expect("url");
    let body = get(&stack.http_url(url), None)
        .await
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&body[..], QUESTION);

    // A resend is acknowledged again without a second transcription.
    ws.send(json!({"type": "message", "data": {"messageId": "v-1", "attachments": [audio["id"]]}}))
        .await;
    assert_eq!(ws.recv_type("ack").await["data"]["duplicate"], true);
    assert_eq!(received_at(&stack, "/v1/audio/transcriptions").len(), 1);
}

#[tokio::test]
async fn a_chat_that_asks_for_spoken_replies_gets_them_as_audio() {
    let stack =
        voice_stack(FakeScript::reply(&["It is", " sunny."]).with_speech(ANSWER.to_vec())).await;
    let (mut ws, _) = stack.connect("alice").await;
    let chat = spoken_chat(&mut ws).await;
    ws.send_message(Some(&chat), "Weather?", "s-1").await;
    let reply = final_reply(&mut ws).await;
    assert_eq!(reply["content"], "It is sunny.");
    let audio = &reply["attachments"][0];
    assert_eq!(audio["mime"], "audio/wav", "{reply}");
    assert_eq!(
        audio["name"],
        format!("reply-{}.wav", reply["id"].as_str().expect("id"))
    );
    assert_eq!(audio["size"], ANSWER.len());
    // The reply's own text was spoken, with the configured model and voice.
    let spoken = received_at(&stack, "/v1/audio/speech");
    assert_eq!(spoken.len(), 1);
    assert_eq!(
        (
            &spoken[0]["input"],
            &spoken[0]["model"],
            &spoken[0]["voice"],
            &spoken[0]["response_format"]
        ),
        (
            &json!("It is sunny."),
            &json!("tts-1"),
            &json!("alloy"),
            &json!("wav")
        )
    );
    // The audio downloads whole, and in ranges (players seek).
    let url = stack.http_url(audio["url"].as_str().expect("url"));
    let whole = get(&url, None).await;
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    assert_eq!(&whole.bytes().await.expect("bytes")[..], ANSWER);
    let part = get(&url, Some("bytes=44-99")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(&part.bytes().await.expect("bytes")[..], &ANSWER[44..100]);

    // Turned off, replies are text again.
    ws.send(json!({"type": "chat_update", "data": {"action": "set_spoken_replies", "chatId": chat, "spokenReplies": false}}))
        .await;
    assert_eq!(
        ws.recv_type("chat_update").await["data"]["updates"]["spokenReplies"],
        false
    );
    ws.send_message(Some(&chat), "And tomorrow?", "s-2").await;
    let reply = final_reply(&mut ws).await;
    assert_eq!(reply["attachments"], json!([]));
    assert_eq!(received_at(&stack, "/v1/audio/speech").len(), 1);
}

#[tokio::test]
async fn a_reply_that_cannot_be_spoken_goes_out_in_text_saying_why() {
    // The speech endpoint answers an empty body.
    let stack = voice_stack(FakeScript::reply(&["Fine."]).with_speech(Vec::new())).await;
    let (mut ws, _) = stack.connect("alice").await;
    let chat = spoken_chat(&mut ws).await;
    ws.send_message(Some(&chat), "Hello?", "f-1").await;
    let reply = final_reply(&mut ws).await;
    assert_eq!(reply["content"], "Fine.");
    assert_eq!(reply["status"], "complete");
    assert_eq!(reply["attachments"], json!([]));
    assert_eq!(reply["metadata"]["speechError"], "unavailable");
}

#[tokio::test]
async fn voice_failures_are_clear_errors_that_store_nothing() {
    // Nothing heard.
    let stack = voice_stack(FakeScript::default().with_transcript("  ")).await;
    let (_, audio) = stack
        .upload("alice", "question.wav", "audio/wav", QUESTION.to_vec())
        .await;
    let (_, image) = stack
        .upload(
            "alice",
            "dot.png",
            "image/png",
            chat_tests::PNG_1X1.to_vec(),
        )
        .await;
    let (mut ws, _) = stack.connect("alice").await;
    ws.send(json!({"type": "message", "data": {"content": "", "messageId": "e-1", "attachments": [audio["id"]]}}))
        .await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 400, "{error}");
    assert_eq!(
        error["data"]["message"],
        "No speech was recognised in the audio"
    );
    // Empty content beside a picture is no voice message.
    ws.send(json!({"type": "message", "data": {"content": " ", "messageId": "e-2", "attachments": [image["id"]]}}))
        .await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 400, "{error}");
    assert_eq!(error["data"]["field"], "data.content");
    // No content and no attachment is still missing content.
    ws.send(json!({"type": "message", "data": {"messageId": "e-3"}}))
        .await;
    assert_eq!(ws.recv_type("error").await["data"]["field"], "data.content");
    assert!(
        chat_core::storage::list_user_chats(&stack.db, "alice", 10)
            .await
            .expect("chats")
            .is_empty(),
        "a refused voice message creates no chat"
    );

    // The transcription service failing: 503, try again.
    let down = voice_stack(FakeScript::default().with_faults(vec![Fault::status(503)])).await;
    let (_, audio) = down
        .upload("alice", "question.wav", "audio/wav", QUESTION.to_vec())
        .await;
    let (mut ws, _) = down.connect("alice").await;
    ws.send(json!({"type": "message", "data": {"messageId": "d-1", "attachments": [audio["id"]]}}))
        .await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 503, "{error}");
    // ... and the same message goes through once it is back.
    ws.send(json!({"type": "message", "data": {"messageId": "d-1", "attachments": [audio["id"]]}}))
        .await;
    assert_eq!(ws.recv_type("ack").await["data"]["duplicate"], false);
}

#[tokio::test]
async fn without_a_voice_service_voice_is_refused_by_name() {
    let stack = spawn_default().await;
    let (_, audio) = stack
        .upload("alice", "question.wav", "audio/wav", QUESTION.to_vec())
        .await;
    let (mut ws, session) = stack.connect("alice").await;
    assert_eq!(session["data"]["voice"], false, "{session}");
    ws.send(json!({"type": "message", "data": {"messageId": "n-1", "attachments": [audio["id"]]}}))
        .await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["code"], 400, "{error}");
    assert!(
        error["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("llm.voice")),
        "{error}"
    );
    ws.send(json!({"type": "chat_update", "data": {"action": "create", "spokenReplies": true}}))
        .await;
    let error = ws.recv_type("error").await;
    assert_eq!(error["data"]["field"], "data.spokenReplies", "{error}");
    // The audio itself is still a fine attachment beside text.
    ws.send(json!({"type": "message", "data": {"content": "a recording", "messageId": "n-2", "attachments": [audio["id"]]}}))
        .await;
    assert_eq!(ws.recv_type("ack").await["data"]["duplicate"], false);
}
