//! Checks of the `[llm]` table as a whole, run once at start ([`LlmSettings::validate`]), and
//! [`LlmSettingsError`], the error of everything that can be wrong with LLM settings.

use std::collections::{BTreeSet, HashSet};

use super::{DEMO_PROVIDER, LlmSettings, ProviderKind, ProviderSettings};

/// Why the LLM layer cannot start with these settings.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum LlmSettingsError {
    /// The table is inconsistent: every problem found, in order, joined by `"; "`.
    #[error("{}", join(.0))]
    Invalid(Vec<SettingsProblem>),
    /// A provider's `api_key_env` names a variable that is unset or empty.
    #[error("provider \"{provider}\": the environment variable {var} (api_key_env) is not set")]
    KeyNotSet { provider: String, var: String },
    /// The shared HTTP client cannot be built (a TLS backend problem).
    #[error("cannot build the HTTP client for LLM providers: {0}")]
    HttpClient(String),
}

fn join(problems: &[SettingsProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One problem of the table, naming the entry and the field.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SettingsProblem {
    #[error("llm.{field} must be greater than 0")]
    ZeroTimeout { field: &'static str },
    #[error("llm.retry.max_attempts must be at least 1")]
    NoAttempts,
    #[error("llm.retry.base_delay_ms ({base}) must not exceed llm.retry.max_delay_ms ({max})")]
    BaseDelayAboveMax { base: u64, max: u64 },
    #[error("provider \"{provider}\": base_url must be http or https, not \"{scheme}\"")]
    BaseUrlScheme { provider: String, scheme: String },
    #[error("provider \"{provider}\": base_url \"{url}\" is invalid: {reason}")]
    BaseUrlInvalid {
        provider: String,
        url: String,
        reason: String,
    },
    #[error("provider \"{0}\": set api_key or api_key_env, not both")]
    KeyTwice(String),
    #[error("provider \"{0}\": api_key_env must not be empty")]
    EmptyKeyEnv(String),
    #[error("provider \"{0}\" (anthropic) needs api_key or api_key_env")]
    AnthropicWithoutKey(String),
    #[error("provider \"{0}\" (dify) needs api_key or api_key_env (the app's API key)")]
    DifyWithoutKey(String),
    #[error("provider \"{0}\" (demo) takes no base_url or api_key")]
    DemoWithEndpoint(String),
    #[error("provider \"{0}\": word_delay_ms is for demo providers only")]
    WordDelayNotDemo(String),
    #[error("a model has an empty id")]
    EmptyModelId,
    #[error("model id \"{0}\" is used twice")]
    DuplicateModelId(String),
    #[error("model \"{model}\": unknown provider \"{provider}\" (known: {known})")]
    UnknownProvider {
        model: String,
        provider: String,
        known: String,
    },
    #[error("model \"{0}\": upstream must not be empty")]
    EmptyUpstream(String),
    #[error("model \"{0}\": context_window and max_output_tokens must be greater than 0")]
    ZeroBudget(String),
    #[error("model \"{model}\": fallback \"{fallback}\" is not a model id")]
    UnknownFallback { model: String, fallback: String },
    /// The ids of the loop, its first id repeated at the end.
    #[error("fallback chain loops: {}", .0.join(" -> "))]
    FallbackLoop(Vec<String>),
    #[error("llm.default_model \"{model}\" is not a model id (known: {known})")]
    UnknownDefaultModel { model: String, known: String },
    #[error("an agent has an empty id")]
    EmptyAgentId,
    #[error("agent id \"{0}\" is used twice")]
    DuplicateAgentId(String),
    #[error("agent \"{agent}\": default_model \"{model}\" is not a model id")]
    UnknownAgentModel { agent: String, model: String },
    #[error("llm.default_agent \"{agent}\" is not an agent id (known: {known})")]
    UnknownDefaultAgent { agent: String, known: String },
    #[error("llm.voice.provider \"{0}\" is not a provider of kind openai")]
    VoiceProvider(String),
    #[error("llm.voice.speech_format \"{0}\" is not one of mp3, wav, opus, flac")]
    SpeechFormat(String),
    #[error("llm.voice.{0} must not be empty")]
    EmptyVoiceField(&'static str),
}

impl LlmSettings {
    /// Checks the table as a whole.
    ///
    /// # Errors
    /// [`LlmSettingsError::Invalid`] with every problem found, each naming the entry and the
    /// field, e.g. `model "gpt": unknown provider "opnai"`.
    pub fn validate(&self) -> Result<(), LlmSettingsError> {
        let mut problems = Vec::new();
        self.check_timing(&mut problems);
        for (name, provider) in &self.providers {
            check_provider(name, provider, &mut problems);
        }
        self.check_models(&mut problems);
        problems.extend(self.fallback_cycles());
        self.check_agents(&mut problems);
        self.check_voice(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LlmSettingsError::Invalid(problems))
        }
    }

    fn check_timing(&self, problems: &mut Vec<SettingsProblem>) {
        for (field, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_token_timeout_ms", self.first_token_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if value == 0 {
                problems.push(SettingsProblem::ZeroTimeout { field });
            }
        }
        if self.retry.max_attempts == 0 {
            problems.push(SettingsProblem::NoAttempts);
        }
        if self.retry.base_delay_ms > self.retry.max_delay_ms {
            problems.push(SettingsProblem::BaseDelayAboveMax {
                base: self.retry.base_delay_ms,
                max: self.retry.max_delay_ms,
            });
        }
    }

    fn check_models(&self, problems: &mut Vec<SettingsProblem>) {
        let mut ids = HashSet::new();
        for model in &self.models {
            if model.id.trim().is_empty() {
                problems.push(SettingsProblem::EmptyModelId);
            } else if !ids.insert(model.id.as_str()) {
                problems.push(SettingsProblem::DuplicateModelId(model.id.clone()));
            }
            if self.provider(&model.provider).is_none() {
                problems.push(SettingsProblem::UnknownProvider {
                    model: model.id.clone(),
                    provider: model.provider.clone(),
                    known: self.provider_names(),
                });
            }
            if model.upstream.trim().is_empty() {
                problems.push(SettingsProblem::EmptyUpstream(model.id.clone()));
            }
            if model.max_output_tokens == 0 || model.context_window == 0 {
                problems.push(SettingsProblem::ZeroBudget(model.id.clone()));
            }
            if let Some(fallback) = &model.fallback
                && !self.has_model(fallback)
            {
                problems.push(SettingsProblem::UnknownFallback {
                    model: model.id.clone(),
                    fallback: fallback.clone(),
                });
            }
        }
        if !self.has_model(&self.default_model) {
            problems.push(SettingsProblem::UnknownDefaultModel {
                model: self.default_model.clone(),
                known: self.model_ids(),
            });
        }
    }

    fn check_voice(&self, problems: &mut Vec<SettingsProblem>) {
        let voice = &self.voice;
        if voice.provider.is_empty() {
            return;
        }
        if self
            .providers
            .get(&voice.provider)
            .is_none_or(|p| p.kind != ProviderKind::Openai)
        {
            problems.push(SettingsProblem::VoiceProvider(voice.provider.clone()));
        }
        if !super::SPEECH_FORMATS
            .iter()
            .any(|(format, _)| *format == voice.speech_format)
        {
            problems.push(SettingsProblem::SpeechFormat(voice.speech_format.clone()));
        }
        for (field, value) in [
            ("transcription_model", &voice.transcription_model),
            ("speech_model", &voice.speech_model),
            ("speech_voice", &voice.speech_voice),
        ] {
            if value.trim().is_empty() {
                problems.push(SettingsProblem::EmptyVoiceField(field));
            }
        }
        if voice.max_speech_chars == 0 {
            problems.push(SettingsProblem::EmptyVoiceField("max_speech_chars"));
        }
        if voice.timeout_ms == 0 {
            problems.push(SettingsProblem::ZeroTimeout {
                field: "voice.timeout_ms",
            });
        }
    }

    fn check_agents(&self, problems: &mut Vec<SettingsProblem>) {
        let mut ids = HashSet::new();
        for agent in &self.agents {
            if agent.id.trim().is_empty() {
                problems.push(SettingsProblem::EmptyAgentId);
            } else if !ids.insert(agent.id.as_str()) {
                problems.push(SettingsProblem::DuplicateAgentId(agent.id.clone()));
            }
            if let Some(model) = &agent.default_model
                && !self.has_model(model)
            {
                problems.push(SettingsProblem::UnknownAgentModel {
                    agent: agent.id.clone(),
                    model: model.clone(),
                });
            }
        }
        if !self
            .agents
            .iter()
            .any(|agent| agent.id == self.default_agent)
        {
            problems.push(SettingsProblem::UnknownDefaultAgent {
                agent: self.default_agent.clone(),
                known: self
                    .agents
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }

    /// One problem per fallback chain that loops back on itself.
    fn fallback_cycles(&self) -> Vec<SettingsProblem> {
        let next = |id: &str| {
            self.models
                .iter()
                .find(|model| model.id == id)
                .and_then(|model| model.fallback.clone())
        };
        let mut reported: BTreeSet<String> = BTreeSet::new();
        let mut problems = Vec::new();
        for model in &self.models {
            let mut chain = vec![model.id.clone()];
            let mut current = model.id.clone();
            while let Some(following) = next(&current) {
                if let Some(start) = chain.iter().position(|id| *id == following) {
                    let mut cycle = chain[start..].to_vec();
                    cycle.push(following);
                    // Report each cycle once, keyed by its smallest member.
                    let key = cycle.iter().min().cloned().unwrap_or_default();
                    if reported.insert(key) {
                        problems.push(SettingsProblem::FallbackLoop(cycle));
                    }
                    break;
                }
                chain.push(following.clone());
                current = following;
            }
        }
        problems
    }

    fn has_model(&self, id: &str) -> bool {
        self.models.iter().any(|model| model.id == id)
    }

    fn provider_names(&self) -> String {
        let mut names: BTreeSet<&str> = self.providers.keys().map(String::as_str).collect();
        names.insert(DEMO_PROVIDER);
        names.into_iter().collect::<Vec<_>>().join(", ")
    }

    fn model_ids(&self) -> String {
        self.models
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn check_provider(name: &str, provider: &ProviderSettings, problems: &mut Vec<SettingsProblem>) {
    if let Some(base_url) = &provider.base_url {
        match reqwest::Url::parse(base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => problems.push(SettingsProblem::BaseUrlScheme {
                provider: name.to_owned(),
                scheme: url.scheme().to_owned(),
            }),
            Err(err) => problems.push(SettingsProblem::BaseUrlInvalid {
                provider: name.to_owned(),
                url: base_url.clone(),
                reason: err.to_string(),
            }),
        }
    }
    if provider.api_key.is_some() && provider.api_key_env.is_some() {
        problems.push(SettingsProblem::KeyTwice(name.to_owned()));
    }
    if let Some(var) = &provider.api_key_env
        && var.trim().is_empty()
    {
        problems.push(SettingsProblem::EmptyKeyEnv(name.to_owned()));
    }
    match provider.kind {
        // Anthropic always wants a key; OpenAI-compatible local servers (Ollama, llama.cpp)
        // usually run without one.
        ProviderKind::Anthropic if provider.api_key.is_none() && provider.api_key_env.is_none() => {
            problems.push(SettingsProblem::AnthropicWithoutKey(name.to_owned()));
        }
        ProviderKind::Dify if provider.api_key.is_none() && provider.api_key_env.is_none() => {
            problems.push(SettingsProblem::DifyWithoutKey(name.to_owned()));
        }
        ProviderKind::Demo if provider.base_url.is_some() || provider.api_key.is_some() => {
            problems.push(SettingsProblem::DemoWithEndpoint(name.to_owned()));
        }
        _ => {}
    }
    if provider.word_delay_ms.is_some() && provider.kind != ProviderKind::Demo {
        problems.push(SettingsProblem::WordDelayNotDemo(name.to_owned()));
    }
}
