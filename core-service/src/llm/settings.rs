//! Typed settings of the LLM layer: the `[llm]` table of the config file.
//!
//! Holds the providers (upstream APIs and their keys), the model catalogue users choose from,
//! the agents (personas), the timeouts and the retry policy. Everything has a default, so an
//! empty `[llm]` table runs the offline `demo` model. [`LlmSettings::apply_env`] adds a real
//! provider when the usual `OPENAI_*` / `ANTHROPIC_*` variables are set, and
//! [`LlmSettings::validate`] checks the whole table once, at start, with messages that name the
//! offending entry.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Name of the built-in offline provider. It is always available, even when a config file
/// replaces the `providers` table without listing it.
pub const DEMO_PROVIDER: &str = "demo";

/// Default base URL of the OpenAI API (the Chat Completions path is appended).
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Default base URL of the Anthropic API (`/v1/messages` is appended).
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// Default pause between two words of the demo model.
pub const DEMO_DEFAULT_WORD_DELAY_MS: u64 = 40;

/// The `[llm]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// Upstream APIs by name; models refer to them by that name.
    pub providers: BTreeMap<String, ProviderSettings>,
    /// The catalogue users choose from.
    pub models: Vec<ModelSettings>,
    /// Model of a new chat when neither the user nor the agent picks one.
    pub default_model: String,
    /// Personas.
    pub agents: Vec<AgentSettings>,
    /// Agent of a new chat when the user picks none.
    pub default_agent: String,
    /// TCP + TLS connect timeout of every upstream request.
    pub connect_timeout_ms: u64,
    /// Bound on the time from sending a request to its first text delta (headers included).
    pub first_token_timeout_ms: u64,
    /// Bound on the silence between two deltas once the reply streams.
    pub idle_timeout_ms: u64,
    /// Retries before the first token.
    pub retry: RetrySettings,
    /// Text shown to the user when no model could answer.
    pub apology: String,
}

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM, llama.cpp, LiteLLM).
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
    /// The built-in offline demo.
    Demo,
}

/// One upstream API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    /// Defaults per kind: [`OPENAI_DEFAULT_BASE_URL`], [`ANTHROPIC_DEFAULT_BASE_URL`].
    #[serde(default)]
    pub base_url: Option<String>,
    /// The key itself. Prefer `api_key_env` so the key stays out of config files.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// Name of the environment variable holding the key (read by `Llm::new`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Demo only: pause between words (default [`DEMO_DEFAULT_WORD_DELAY_MS`]); 0 for tests.
    #[serde(default)]
    pub word_delay_ms: Option<u64>,
}

/// One entry of the model catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ModelSettingsFile")]
pub struct ModelSettings {
    /// Stable id stored on chats and chosen by users.
    pub id: String,
    /// Display name (defaults to the id).
    pub name: String,
    /// Name of a provider in [`LlmSettings::providers`].
    pub provider: String,
    /// Model name sent upstream (defaults to the id).
    pub upstream: String,
    /// Prompt budget in tokens (default 8192).
    pub context_window: u32,
    /// Reply budget in tokens (default 1024).
    pub max_output_tokens: u32,
    /// Id of another model tried after this one fails.
    pub fallback: Option<String>,
    /// Whether the model accepts images.
    pub vision: bool,
}

/// The file form of [`ModelSettings`]: `name` and `upstream` may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSettingsFile {
    id: String,
    #[serde(default)]
    name: Option<String>,
    provider: String,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default = "default_context_window")]
    context_window: u32,
    #[serde(default = "default_max_output_tokens")]
    max_output_tokens: u32,
    #[serde(default)]
    fallback: Option<String>,
    #[serde(default)]
    vision: bool,
}

impl From<ModelSettingsFile> for ModelSettings {
    fn from(file: ModelSettingsFile) -> Self {
        ModelSettings {
            name: file.name.unwrap_or_else(|| file.id.clone()),
            upstream: file.upstream.unwrap_or_else(|| file.id.clone()),
            id: file.id,
            provider: file.provider,
            context_window: file.context_window,
            max_output_tokens: file.max_output_tokens,
            fallback: file.fallback,
            vision: file.vision,
        }
    }
}

fn default_context_window() -> u32 {
    8192
}

fn default_max_output_tokens() -> u32 {
    1024
}

impl ModelSettings {
    /// A catalogue entry with the default budgets, no fallback and no vision.
    pub fn new(id: &str, provider: &str, upstream: &str) -> Self {
        ModelSettings {
            id: id.to_owned(),
            name: id.to_owned(),
            provider: provider.to_owned(),
            upstream: upstream.to_owned(),
            context_window: default_context_window(),
            max_output_tokens: default_max_output_tokens(),
            fallback: None,
            vision: false,
        }
    }
}

/// A persona: the system prompt a chat starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    pub id: String,
    pub name: String,
    pub system_prompt: String,
    /// Model used by chats of this agent unless the user picks another.
    #[serde(default)]
    pub default_model: Option<String>,
}

/// Retries of one model before its first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts per model, the first one included.
    pub max_attempts: u32,
    /// First backoff delay; doubles each retry, with jitter.
    pub base_delay_ms: u64,
    /// Cap on any single delay, Retry-After included.
    pub max_delay_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            base_delay_ms: 500,
            max_delay_ms: 8_000,
        }
    }
}

const ASSISTANT_PROMPT: &str = "You are a helpful, knowledgeable assistant. Answer clearly and \
concisely, say so when you are not sure, and ask a short clarifying question when a request is \
ambiguous. Use the user's context when it is relevant.";

const THERAPIST_PROMPT: &str = "You are a warm, supportive listener. Reflect what the user says, \
ask gentle open questions, and never judge. You are not a licensed therapist and do not diagnose \
or prescribe; if the user may be in danger, encourage them to contact local emergency services or \
a crisis line right away.";

impl Default for LlmSettings {
    fn default() -> Self {
        let demo = ProviderSettings {
            kind: ProviderKind::Demo,
            base_url: None,
            api_key: None,
            api_key_env: None,
            word_delay_ms: None,
        };
        let mut demo_model = ModelSettings::new("demo", DEMO_PROVIDER, "demo");
        demo_model.name = "Demo (offline)".to_owned();
        LlmSettings {
            providers: BTreeMap::from([(DEMO_PROVIDER.to_owned(), demo)]),
            models: vec![demo_model],
            default_model: "demo".to_owned(),
            agents: vec![
                AgentSettings {
                    id: "assistant".to_owned(),
                    name: "Assistant".to_owned(),
                    system_prompt: ASSISTANT_PROMPT.to_owned(),
                    default_model: None,
                },
                AgentSettings {
                    id: "therapist".to_owned(),
                    name: "Therapist".to_owned(),
                    system_prompt: THERAPIST_PROMPT.to_owned(),
                    default_model: None,
                },
            ],
            default_agent: "assistant".to_owned(),
            connect_timeout_ms: 10_000,
            first_token_timeout_ms: 60_000,
            idle_timeout_ms: 30_000,
            retry: RetrySettings::default(),
            apology: "Sorry, the assistant is unavailable right now. Please try again.".to_owned(),
        }
    }
}

impl LlmSettings {
    /// Adds providers from the conventional environment variables, read through `get` (so tests
    /// never touch the process environment).
    ///
    /// `OPENAI_API_KEY` or `OPENAI_BASE_URL` adds provider `openai` and model `gpt-4o-mini`
    /// (upstream `OPENAI_MODEL`, default `gpt-4o-mini`); `ANTHROPIC_API_KEY` or
    /// `ANTHROPIC_BASE_URL` adds provider `anthropic` and model `claude` (upstream
    /// `ANTHROPIC_MODEL`, default `claude-sonnet-4-5`). An added model becomes the default; when
    /// both are set OpenAI is the default. Nothing is added for a provider name already
    /// configured, and no model is added over an existing id. Empty variables count as unset.
    /// The demo model stays in the catalogue.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        let get = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        // Anthropic first, so that OpenAI, when also present, ends up the default.
        self.add_env_provider(
            "anthropic",
            ProviderKind::Anthropic,
            get("ANTHROPIC_API_KEY"),
            get("ANTHROPIC_BASE_URL"),
            ANTHROPIC_DEFAULT_BASE_URL,
            ("claude", "Claude"),
            get("ANTHROPIC_MODEL").unwrap_or_else(|| "claude-sonnet-4-5".to_owned()),
        );
        self.add_env_provider(
            "openai",
            ProviderKind::Openai,
            get("OPENAI_API_KEY"),
            get("OPENAI_BASE_URL"),
            OPENAI_DEFAULT_BASE_URL,
            ("gpt-4o-mini", "OpenAI"),
            get("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".to_owned()),
        );
    }

    #[allow(clippy::too_many_arguments)] // private helper called twice with literal arguments
    fn add_env_provider(
        &mut self,
        provider: &str,
        kind: ProviderKind,
        key: Option<String>,
        base_url: Option<String>,
        default_base_url: &str,
        (model_id, label): (&str, &str),
        upstream: String,
    ) {
        if (key.is_none() && base_url.is_none()) || self.providers.contains_key(provider) {
            return;
        }
        self.providers.insert(
            provider.to_owned(),
            ProviderSettings {
                kind,
                base_url: Some(base_url.unwrap_or_else(|| default_base_url.to_owned())),
                api_key: key.map(SecretString::from),
                api_key_env: None,
                word_delay_ms: None,
            },
        );
        if !self.models.iter().any(|model| model.id == model_id) {
            let mut model = ModelSettings::new(model_id, provider, &upstream);
            model.name = format!("{label} ({upstream})");
            self.models.push(model);
        }
        self.default_model = model_id.to_owned();
    }

    /// The provider a model names, with the built-in demo provider always resolvable.
    pub fn provider(&self, name: &str) -> Option<ProviderSettings> {
        match self.providers.get(name) {
            Some(provider) => Some(provider.clone()),
            None if name == DEMO_PROVIDER => Some(ProviderSettings {
                kind: ProviderKind::Demo,
                base_url: None,
                api_key: None,
                api_key_env: None,
                word_delay_ms: None,
            }),
            None => None,
        }
    }

    /// Checks the table as a whole.
    ///
    /// # Errors
    /// Every problem found, joined by `"; "`, each naming the entry and the field, e.g.
    /// `model "gpt": unknown provider "opnai"`.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();

        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_token_timeout_ms", self.first_token_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!("llm.{name} must be greater than 0"));
            }
        }
        if self.retry.max_attempts == 0 {
            problems.push("llm.retry.max_attempts must be at least 1".to_owned());
        }
        if self.retry.base_delay_ms > self.retry.max_delay_ms {
            problems.push(format!(
                "llm.retry.base_delay_ms ({}) must not exceed llm.retry.max_delay_ms ({})",
                self.retry.base_delay_ms, self.retry.max_delay_ms
            ));
        }

        for (name, provider) in &self.providers {
            validate_provider(name, provider, &mut problems);
        }

        let mut ids = HashSet::new();
        for model in &self.models {
            if model.id.trim().is_empty() {
                problems.push("a model has an empty id".to_owned());
            } else if !ids.insert(model.id.as_str()) {
                problems.push(format!("model id \"{}\" is used twice", model.id));
            }
            if self.provider(&model.provider).is_none() {
                problems.push(format!(
                    "model \"{}\": unknown provider \"{}\" (known: {})",
                    model.id,
                    model.provider,
                    self.provider_names()
                ));
            }
            if model.upstream.trim().is_empty() {
                problems.push(format!(
                    "model \"{}\": upstream must not be empty",
                    model.id
                ));
            }
            if model.max_output_tokens == 0 || model.context_window == 0 {
                problems.push(format!(
                    "model \"{}\": context_window and max_output_tokens must be greater than 0",
                    model.id
                ));
            }
            if let Some(fallback) = &model.fallback
                && !self.models.iter().any(|other| &other.id == fallback)
            {
                problems.push(format!(
                    "model \"{}\": fallback \"{fallback}\" is not a model id",
                    model.id
                ));
            }
        }
        problems.extend(self.fallback_cycles());

        if !self
            .models
            .iter()
            .any(|model| model.id == self.default_model)
        {
            problems.push(format!(
                "llm.default_model \"{}\" is not a model id (known: {})",
                self.default_model,
                self.model_ids()
            ));
        }

        let mut agent_ids = HashSet::new();
        for agent in &self.agents {
            if agent.id.trim().is_empty() {
                problems.push("an agent has an empty id".to_owned());
            } else if !agent_ids.insert(agent.id.as_str()) {
                problems.push(format!("agent id \"{}\" is used twice", agent.id));
            }
            if let Some(model) = &agent.default_model
                && !self.models.iter().any(|m| &m.id == model)
            {
                problems.push(format!(
                    "agent \"{}\": default_model \"{model}\" is not a model id",
                    agent.id
                ));
            }
        }
        if !self
            .agents
            .iter()
            .any(|agent| agent.id == self.default_agent)
        {
            problems.push(format!(
                "llm.default_agent \"{}\" is not an agent id (known: {})",
                self.default_agent,
                self.agents
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// One message per fallback chain that loops back on itself.
    fn fallback_cycles(&self) -> Vec<String> {
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
                        problems.push(format!("fallback chain loops: {}", cycle.join(" -> ")));
                    }
                    break;
                }
                chain.push(following.clone());
                current = following;
            }
        }
        problems
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

fn validate_provider(name: &str, provider: &ProviderSettings, problems: &mut Vec<String>) {
    if let Some(base_url) = &provider.base_url {
        match reqwest::Url::parse(base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => problems.push(format!(
                "provider \"{name}\": base_url must be http or https, not \"{}\"",
                url.scheme()
            )),
            Err(err) => problems.push(format!(
                "provider \"{name}\": base_url \"{base_url}\" is invalid: {err}"
            )),
        }
    }
    if provider.api_key.is_some() && provider.api_key_env.is_some() {
        problems.push(format!(
            "provider \"{name}\": set api_key or api_key_env, not both"
        ));
    }
    if let Some(var) = &provider.api_key_env
        && var.trim().is_empty()
    {
        problems.push(format!(
            "provider \"{name}\": api_key_env must not be empty"
        ));
    }
    match provider.kind {
        // Anthropic always wants a key; OpenAI-compatible local servers (Ollama, llama.cpp)
        // usually run without one.
        ProviderKind::Anthropic if provider.api_key.is_none() && provider.api_key_env.is_none() => {
            problems.push(format!(
                "provider \"{name}\" (anthropic) needs api_key or api_key_env"
            ));
        }
        ProviderKind::Demo if provider.base_url.is_some() || provider.api_key.is_some() => {
            problems.push(format!(
                "provider \"{name}\" (demo) takes no base_url or api_key"
            ));
        }
        _ => {}
    }
    if provider.word_delay_ms.is_some() && provider.kind != ProviderKind::Demo {
        problems.push(format!(
            "provider \"{name}\": word_delay_ms is for demo providers only"
        ));
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::field_reassign_with_default)]
mod tests {
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

        let message = settings.validate().expect_err("invalid");
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
        let message = settings.validate().expect_err("cycle");
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
}
