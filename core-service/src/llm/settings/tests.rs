//! Tests of the `[llm]` table: defaults, deserialization, validation messages and the
//! environment overrides.

#![allow(clippy::expect_used, clippy::field_reassign_with_default)]

use super::*;
use secrecy::ExposeSecret;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn the_defaults_are_valid_and_run_the_demo() {
    let settings = LlmSettings::default();
    assert_eq!(settings.validate(), Ok(()));
    assert_eq!(settings.default_model, "demo");
    assert_eq!(settings.models[0].name, "Demo (offline)");
    let agents: Vec<_> = settings.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(agents, ["assistant", "therapist"]);
}

#[test]
fn an_empty_table_deserializes_to_the_defaults() {
    let settings: LlmSettings = serde_json::from_str("{}").expect("empty table");
    assert_eq!(settings.default_model, "demo");
    assert_eq!(settings.retry, RetrySettings::default());
    assert_eq!(settings.first_token_timeout_ms, 60_000);
}

#[test]
fn a_model_entry_fills_name_upstream_and_budgets() {
    let settings: LlmSettings = serde_json::from_value(serde_json::json!({
        "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1"}},
        "models": [{"id": "llama3", "provider": "local"}],
        "default_model": "llama3",
    }))
    .expect("valid table");
    let model = &settings.models[0];
    assert_eq!(
        (model.name.as_str(), model.upstream.as_str()),
        ("llama3", "llama3")
    );
    assert_eq!(
        (model.context_window, model.max_output_tokens),
        (8192, 1024)
    );
    // A keyless OpenAI-compatible server is fine.
    assert_eq!(settings.validate(), Ok(()));
}

#[test]
fn unknown_fields_are_refused() {
    let result: Result<LlmSettings, _> = serde_json::from_value(serde_json::json!({
        "models": [{"id": "x", "provider": "demo", "temprature": 1}],
    }));
    assert!(result.is_err());
}

#[test]
fn validation_names_every_problem() {
    let mut settings = LlmSettings::default();
    settings.default_model = "nope".to_owned();
    settings.default_agent = "ghost".to_owned();
    settings.idle_timeout_ms = 0;
    settings.providers.insert(
        "claude".to_owned(),
        ProviderSettings {
            kind: ProviderKind::Anthropic,
            base_url: Some("not a url".to_owned()),
            api_key: None,
            api_key_env: None,
            word_delay_ms: None,
        },
    );
    settings
        .models
        .push(ModelSettings::new("demo", "demo", "demo"));
    let mut orphan = ModelSettings::new("orphan", "opnai", "gpt");
    orphan.fallback = Some("missing".to_owned());
    settings.models.push(orphan);

    let message = settings.validate().expect_err("invalid").to_string();
    for expected in [
        "llm.idle_timeout_ms must be greater than 0",
        "provider \"claude\": base_url \"not a url\" is invalid",
        "provider \"claude\" (anthropic) needs api_key or api_key_env",
        "model id \"demo\" is used twice",
        "model \"orphan\": unknown provider \"opnai\"",
        "model \"orphan\": fallback \"missing\" is not a model id",
        "llm.default_model \"nope\" is not a model id",
        "llm.default_agent \"ghost\" is not an agent id",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected:?} in {message}"
        );
    }
}

#[test]
fn validation_finds_fallback_cycles() {
    let mut settings = LlmSettings::default();
    for (id, fallback) in [("a", "b"), ("b", "c"), ("c", "a")] {
        let mut model = ModelSettings::new(id, "demo", "demo");
        model.fallback = Some(fallback.to_owned());
        settings.models.push(model);
    }
    let message = settings.validate().expect_err("cycle").to_string();
    assert!(
        message.contains("fallback chain loops: a -> b -> c -> a"),
        "{message}"
    );
    assert_eq!(message.matches("loops").count(), 1, "{message}");
}

#[test]
fn the_demo_provider_exists_even_when_providers_are_replaced() {
    let settings: LlmSettings = serde_json::from_value(serde_json::json!({
        "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    }))
    .expect("valid table");
    assert_eq!(settings.validate(), Ok(()));
}

#[test]
fn apply_env_adds_openai_as_the_default_and_keeps_the_demo() {
    let mut settings = LlmSettings::default();
    settings.apply_env(env(&[
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_MODEL", "gpt-4.1"),
    ]));

    let provider = &settings.providers["openai"];
    assert_eq!(provider.kind, ProviderKind::Openai);
    assert_eq!(provider.base_url.as_deref(), Some(OPENAI_DEFAULT_BASE_URL));
    assert_eq!(
        provider.api_key.as_ref().map(|k| k.expose_secret()),
        Some("sk-test")
    );
    let model = settings
        .models
        .iter()
        .find(|m| m.id == "gpt-4o-mini")
        .expect("model added");
    assert_eq!(
        (model.provider.as_str(), model.upstream.as_str()),
        ("openai", "gpt-4.1")
    );
    assert_eq!(settings.default_model, "gpt-4o-mini");
    assert!(settings.models.iter().any(|m| m.id == "demo"));
    assert_eq!(settings.validate(), Ok(()));
}

#[test]
fn apply_env_with_only_a_base_url_adds_a_keyless_openai() {
    let mut settings = LlmSettings::default();
    settings.apply_env(env(&[("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")]));
    let provider = &settings.providers["openai"];
    assert_eq!(
        provider.base_url.as_deref(),
        Some("http://127.0.0.1:11434/v1")
    );
    assert!(provider.api_key.is_none());
    assert_eq!(settings.validate(), Ok(()));
}

#[test]
fn apply_env_adds_anthropic_and_prefers_openai_when_both_are_set() {
    let mut settings = LlmSettings::default();
    settings.apply_env(env(&[("ANTHROPIC_API_KEY", "ak")]));
    assert_eq!(settings.default_model, "claude");
    assert_eq!(
        settings.providers["anthropic"].base_url.as_deref(),
        Some(ANTHROPIC_DEFAULT_BASE_URL)
    );
    let claude = settings
        .models
        .iter()
        .find(|m| m.id == "claude")
        .expect("model added");
    assert_eq!(claude.upstream, "claude-sonnet-4-5");

    let mut both = LlmSettings::default();
    both.apply_env(env(&[
        ("ANTHROPIC_API_KEY", "ak"),
        ("OPENAI_API_KEY", "ok"),
    ]));
    assert_eq!(both.default_model, "gpt-4o-mini");
    assert_eq!(both.validate(), Ok(()));
}

#[test]
fn apply_env_leaves_a_configured_openai_provider_alone() {
    let mut settings = LlmSettings::default();
    settings.providers.insert(
        "openai".to_owned(),
        ProviderSettings {
            kind: ProviderKind::Openai,
            base_url: Some("http://proxy.internal/v1".to_owned()),
            api_key: None,
            api_key_env: None,
            word_delay_ms: None,
        },
    );
    settings.apply_env(env(&[("OPENAI_API_KEY", "sk"), ("OPENAI_BASE_URL", "")]));
    assert_eq!(
        settings.providers["openai"].base_url.as_deref(),
        Some("http://proxy.internal/v1")
    );
    assert_eq!(settings.default_model, "demo");
    assert_eq!(settings.models.len(), 1);
}

#[test]
fn empty_variables_count_as_unset() {
    let mut settings = LlmSettings::default();
    settings.apply_env(env(&[("OPENAI_API_KEY", " "), ("ANTHROPIC_BASE_URL", "")]));
    assert_eq!(settings.providers.len(), 1);
    assert_eq!(settings.default_model, "demo");
}

#[test]
fn voice_needs_an_openai_provider_a_known_format_and_models() {
    let settings: LlmSettings = serde_json::from_value(serde_json::json!({
        "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
        "voice": {"provider": "local", "speech_format": "wav"},
    }))
    .expect("valid table");
    assert_eq!(settings.validate(), Ok(()));
    assert_eq!(settings.voice.transcription_model, "whisper-1");

    let wrong: LlmSettings = serde_json::from_value(serde_json::json!({
        "voice": {"provider": "demo", "speech_format": "ogg", "speech_voice": " "},
    }))
    .expect("a table");
    assert_eq!(
        wrong.validate(),
        Err(LlmSettingsError::Invalid(vec![
            SettingsProblem::VoiceProvider("demo".into()),
            SettingsProblem::SpeechFormat("ogg".into()),
            SettingsProblem::EmptyVoiceField("speech_voice"),
        ]))
    );
    // Off by default.
    assert_eq!(LlmSettings::default().voice.provider, "");
}
