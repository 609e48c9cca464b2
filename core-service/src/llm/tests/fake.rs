//! The fake checked against the core's real providers: if these pass, the end-to-end tests
//! exercise the same parsing as production.

use std::time::Duration;

use chat_fake_llm::{FakeScript, spawn};
use futures::StreamExt as _;

use crate::llm::{
    Delta, Llm, LlmSettings, ModelSettings, Prompt, ProviderKind, ProviderSettings, Turn, TurnRole,
};

fn llm(kind: ProviderKind, base_url: String) -> Llm {
    let mut settings = LlmSettings::default();
    settings.retry.base_delay_ms = 5;
    settings.retry.max_delay_ms = 20;
    settings.providers.insert(
        "fake".to_owned(),
        ProviderSettings {
            kind,
            base_url: Some(base_url),
            api_key: Some("test-key".to_owned().into()),
            api_key_env: None,
            word_delay_ms: None,
        },
    );
    settings
        .models
        .push(ModelSettings::new("fake", "fake", "fake-upstream"));
    Llm::new(&settings).expect("valid settings")
}

fn prompt() -> Prompt {
    Prompt {
        system: "Be brief.".to_owned(),
        turns: vec![Turn {
            role: TurnRole::User,
            content: "Hi".to_owned(),
            images: Vec::new(),
        }],
        ..Default::default()
    }
}

async fn text_and_usage(llm: &Llm) -> (String, Option<Delta>, u32) {
    let reply = llm.open("fake", prompt()).await.expect("opened");
    let items: Vec<Delta> = reply
        .stream
        .map(|item| item.expect("no stream error"))
        .collect()
        .await;
    let text = items
        .iter()
        .filter_map(|delta| match delta {
            Delta::Text(text) => Some(text.as_str()),
            Delta::Usage { .. } | Delta::Conversation(_) | Delta::Truncated => None,
        })
        .collect();
    let usage = items
        .into_iter()
        .find(|delta| matches!(delta, Delta::Usage { .. }));
    (text, usage, reply.attempts)
}

#[tokio::test]
async fn the_openai_stream_is_what_the_core_parses() {
    let fake = spawn(FakeScript::reply(&["Hel", "lo!"]).with_usage(7, 2)).await;
    let llm = llm(ProviderKind::Openai, fake.openai_base_url());

    let (text, usage, attempts) = text_and_usage(&llm).await;

    assert_eq!(text, "Hello!");
    assert_eq!(
        usage,
        Some(Delta::Usage {
            prompt_tokens: 7,
            completion_tokens: 2
        })
    );
    assert_eq!(attempts, 1);
    assert_eq!(fake.requests()[0]["model"], "fake-upstream");
    assert!(!fake.client_disconnected());
}

#[tokio::test]
async fn the_anthropic_stream_is_what_the_core_parses() {
    let fake = spawn(FakeScript::reply(&["Bon", "jour"]).with_usage(9, 3)).await;
    let llm = llm(ProviderKind::Anthropic, fake.anthropic_base_url());

    let (text, usage, _) = text_and_usage(&llm).await;

    assert_eq!(text, "Bonjour");
    assert_eq!(
        usage,
        Some(Delta::Usage {
            prompt_tokens: 9,
            completion_tokens: 3
        })
    );
    assert_eq!(fake.requests()[0]["messages"][0]["content"], "Hi");
}

#[tokio::test]
async fn scripted_failures_come_first_and_are_retried() {
    let fake = spawn(FakeScript::reply(&["ok"]).failing_first(&[503, 429])).await;
    let llm = llm(ProviderKind::Openai, fake.openai_base_url());

    let (text, _, attempts) = text_and_usage(&llm).await;

    assert_eq!((text.as_str(), attempts), ("ok", 3));
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn a_hanging_reply_notices_the_client_leaving() {
    for (kind, fake) in [
        (
            ProviderKind::Openai,
            spawn(FakeScript::reply(&["one", "two"]).hanging_after(1)).await,
        ),
        (
            ProviderKind::Anthropic,
            spawn(FakeScript::reply(&["one", "two"]).hanging_after(1)).await,
        ),
    ] {
        let base_url = match kind {
            ProviderKind::Anthropic => fake.anthropic_base_url(),
            _ => fake.openai_base_url(),
        };
        let llm = llm(kind, base_url);
        let mut reply = llm.open("fake", prompt()).await.expect("opened");
        assert_eq!(
            reply.stream.next().await,
            Some(Ok(Delta::Text("one".to_owned())))
        );
        assert!(!fake.wait_for_disconnect(Duration::from_millis(100)).await);

        drop(reply);

        assert!(fake.wait_for_disconnect(Duration::from_secs(2)).await);
    }
}

#[tokio::test]
async fn the_script_can_change_between_turns() {
    let fake = spawn(FakeScript::default()).await;
    let llm = llm(ProviderKind::Openai, fake.openai_base_url());
    assert_eq!(text_and_usage(&llm).await.0, FakeScript::default().text());

    fake.set_script(FakeScript::reply(&["second"]));

    assert_eq!(text_and_usage(&llm).await.0, "second");
}
