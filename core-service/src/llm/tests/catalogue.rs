//! The catalogue: lookups, the default demo, unknown models and missing keys.

use super::{drain, prompt};
use crate::llm::{
    Delta, Llm, LlmError, LlmSettings, ModelSettings, ProviderKind, ProviderSettings,
};

#[tokio::test]
async fn an_unknown_model_is_refused() {
    let llm = Llm::new(&LlmSettings::default()).expect("valid");
    let err = llm.open("gpt-17", prompt()).await.expect_err("unknown");
    assert_eq!(err, LlmError::UnknownModel("gpt-17".to_owned()));
}

#[tokio::test]
async fn the_default_settings_answer_with_the_demo() {
    let mut settings = LlmSettings::default();
    if let Some(demo) = settings.providers.get_mut("demo") {
        demo.word_delay_ms = Some(0);
    }
    let llm = Llm::new(&settings).expect("valid");
    assert_eq!(llm.models().len(), 1);
    assert_eq!(
        llm.agent("therapist").map(|a| a.name.as_str()),
        Some("Therapist")
    );

    let reply = llm.open("demo", prompt()).await.expect("opened");

    let (text, items) = drain(reply.stream).await;
    assert!(
        text.starts_with("This is the built-in demo model"),
        "{text}"
    );
    assert!(text.contains("You said: \"Hello?\""), "{text}");
    assert!(matches!(items.last(), Some(Ok(Delta::Usage { .. }))));
}

#[test]
fn a_missing_key_variable_is_reported() {
    let mut settings = LlmSettings::default();
    settings.providers.insert(
        "claude".to_owned(),
        ProviderSettings {
            kind: ProviderKind::Anthropic,
            base_url: None,
            api_key: None,
            api_key_env: Some("CHAT_TEST_SURELY_UNSET_ANTHROPIC_KEY".to_owned()),
            word_delay_ms: None,
        },
    );
    settings
        .models
        .push(ModelSettings::new("claude", "claude", "claude-sonnet-4-5"));
    let err = Llm::new(&settings).expect_err("no key");
    assert!(
        err.to_string()
            .contains("CHAT_TEST_SURELY_UNSET_ANTHROPIC_KEY"),
        "{err}"
    );
}
