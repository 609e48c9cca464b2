//! [`Llm`], the model catalogue the chat engine talks to: model and agent lookup, and the
//! providers built from the settings (one shared HTTP client, keys resolved at start).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::policy::Policy;
use super::settings::{self, SettingsProblem};
use super::{
    AgentSettings, LlmError, LlmSettings, LlmSettingsError, ModelSettings, OpenedReply, Prompt,
    Provider, ProviderKind, ProviderSettings, Voice, anthropic, demo, dify, openai,
};

/// A catalogue entry: the model and the provider serving it.
pub(super) struct Entry {
    pub(super) provider: Arc<dyn Provider>,
    pub(super) model: ModelSettings,
}

/// The model catalogue with its providers, shared by all chats.
pub struct Llm {
    settings: LlmSettings,
    catalogue: HashMap<String, Entry>,
    policy: Policy,
    /// Some model's provider keeps conversations itself (Dify).
    stateful: bool,
    /// The audio endpoints, when `[llm.voice]` names a provider.
    voice: Option<Voice>,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Llm {
    /// Builds the providers over one shared HTTP client (connect timeout, no overall timeout:
    /// streams are long; the first-token and idle timeouts bound them instead).
    ///
    /// # Errors
    /// The settings are invalid ([`LlmSettings::validate`]), a provider's `api_key_env` names an
    /// unset variable, or the HTTP client cannot be built.
    pub fn new(settings: &LlmSettings) -> Result<Llm, LlmSettingsError> {
        Self::with_providers(settings, BTreeMap::new())
    }

    /// Like [`Llm::new`], but the providers named in `overrides` are used instead of the ones
    /// the settings describe (tests script their own provider this way).
    ///
    /// # Errors
    /// As [`Llm::new`].
    pub fn with_providers(
        settings: &LlmSettings,
        overrides: BTreeMap<String, Arc<dyn Provider>>,
    ) -> Result<Llm, LlmSettingsError> {
        settings.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .tcp_nodelay(true)
            .user_agent(concat!("chat-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| LlmSettingsError::HttpClient(err.to_string()))?;

        // One provider per name, shared by its models; an override wins over the settings.
        let mut providers = overrides;
        for model in &settings.models {
            if providers.contains_key(&model.provider) {
                continue;
            }
            // validate() checked that every model's provider resolves.
            if let Some(provider_settings) = settings.provider(&model.provider) {
                let provider = build_provider(&model.provider, &provider_settings, &client)?;
                providers.insert(model.provider.clone(), provider);
            }
        }
        let catalogue = settings
            .models
            .iter()
            .filter_map(|model| {
                let provider = Arc::clone(providers.get(&model.provider)?);
                let entry = Entry {
                    provider,
                    model: model.clone(),
                };
                Some((model.id.clone(), entry))
            })
            .collect();
        let stateful = settings.models.iter().any(|model| {
            settings
                .provider(&model.provider)
                .is_some_and(|p| p.kind == ProviderKind::Dify)
        });
        let voice = match settings.provider(&settings.voice.provider) {
            Some(provider) if !settings.voice.provider.is_empty() => Some(Voice::new(
                client.clone(),
                provider
                    .base_url
                    .as_deref()
                    .unwrap_or(settings::OPENAI_DEFAULT_BASE_URL),
                resolve_key(&settings.voice.provider, &provider)?,
                settings.voice.clone(),
            )),
            _ => None,
        };
        Ok(Llm {
            settings: settings.clone(),
            catalogue,
            policy: Policy::new(settings),
            stateful,
            voice,
        })
    }

    /// Whether some model's provider keeps conversations itself (Dify): only then are a
    /// chat's conversation ids worth reading for its prompt.
    pub fn has_stateful_providers(&self) -> bool {
        self.stateful
    }

    /// Speech to text and text to speech, when configured (`[llm.voice]`).
    pub fn voice(&self) -> Option<&Voice> {
        self.voice.as_ref()
    }

    pub fn model(&self, id: &str) -> Option<&ModelSettings> {
        self.catalogue.get(id).map(|entry| &entry.model)
    }

    /// The catalogue, in configuration order.
    pub fn models(&self) -> &[ModelSettings] {
        &self.settings.models
    }

    pub fn agent(&self, id: &str) -> Option<&AgentSettings> {
        self.settings.agents.iter().find(|agent| agent.id == id)
    }

    pub fn agents(&self) -> &[AgentSettings] {
        &self.settings.agents
    }

    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// Opens a reply on `model_id`.
    ///
    /// Each model gets up to `retry.max_attempts` attempts; an attempt succeeds once the first
    /// text delta arrived (within `first_token_timeout_ms` of sending), which is re-emitted at
    /// the head of the returned stream, so failures before the first token are retried
    /// (retryable ones only, with backoff, honouring Retry-After capped at `max_delay_ms`) and
    /// failures after it are not: they end the stream with an `Err`. When a model fails, its
    /// fallback chain is walked. The returned stream yields `Err(IdleTimeout)` and ends when no
    /// delta arrives for `idle_timeout_ms`. A reply that ends without any text is returned as
    /// is (it may still carry usage). The stream belongs to the caller; dropping it drops the
    /// upstream HTTP request at once, which is how "stop" works.
    ///
    /// # Errors
    /// [`LlmError::UnknownModel`] when `model_id` is not in the catalogue; otherwise the last
    /// error of the last model tried.
    pub async fn open(&self, model_id: &str, prompt: Prompt) -> Result<OpenedReply, LlmError> {
        self.policy
            .open(model_id, |id| self.catalogue.get(id), prompt)
            .await
    }
}

fn build_provider(
    name: &str,
    settings: &ProviderSettings,
    client: &reqwest::Client,
) -> Result<Arc<dyn Provider>, LlmSettingsError> {
    let key = resolve_key(name, settings)?;
    Ok(match settings.kind {
        ProviderKind::Openai => Arc::new(openai::OpenAiProvider::new(
            client.clone(),
            settings
                .base_url
                .as_deref()
                .unwrap_or(settings::OPENAI_DEFAULT_BASE_URL),
            key,
        )),
        ProviderKind::Anthropic => {
            // validate() checked that an Anthropic provider names a key; resolve_key that the
            // variable holding it is set.
            let Some(key) = key else {
                return Err(LlmSettingsError::Invalid(vec![
                    SettingsProblem::AnthropicWithoutKey(name.to_owned()),
                ]));
            };
            Arc::new(anthropic::AnthropicProvider::new(
                client.clone(),
                settings
                    .base_url
                    .as_deref()
                    .unwrap_or(settings::ANTHROPIC_DEFAULT_BASE_URL),
                key,
            ))
        }
        ProviderKind::Dify => {
            // As for Anthropic: validate() and resolve_key make sure there is a key.
            let Some(key) = key else {
                return Err(LlmSettingsError::Invalid(vec![
                    SettingsProblem::DifyWithoutKey(name.to_owned()),
                ]));
            };
            Arc::new(dify::DifyProvider::new(
                client.clone(),
                settings
                    .base_url
                    .as_deref()
                    .unwrap_or(settings::DIFY_DEFAULT_BASE_URL),
                key,
            ))
        }
        ProviderKind::Demo => Arc::new(demo::DemoProvider::new(Duration::from_millis(
            settings
                .word_delay_ms
                .unwrap_or(settings::DEMO_DEFAULT_WORD_DELAY_MS),
        ))),
    })
}

/// The key of a provider: inline, or read from the variable `api_key_env` names.
fn resolve_key(
    name: &str,
    settings: &ProviderSettings,
) -> Result<Option<SecretString>, LlmSettingsError> {
    if let Some(key) = &settings.api_key {
        return Ok(Some(key.clone()));
    }
    let Some(var) = &settings.api_key_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(SecretString::from(value))),
        _ => Err(LlmSettingsError::KeyNotSet {
            provider: name.to_owned(),
            var: var.clone(),
        }),
    }
}
