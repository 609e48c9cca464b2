//! Environment overrides of the `[llm]` table: a real provider from the conventional
//! `OPENAI_*` / `ANTHROPIC_*` variables, so a key in the environment is all a run needs.

use secrecy::SecretString;

use super::{
    ANTHROPIC_DEFAULT_BASE_URL, LlmSettings, ModelSettings, OPENAI_DEFAULT_BASE_URL, ProviderKind,
    ProviderSettings,
};

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
    ///
    /// Seed 000's `LLM_API_KEY` and `LLM_BASE_URL` (an OpenAI-compatible service) stand in for
    /// `OPENAI_API_KEY` and `OPENAI_BASE_URL` when those are unset. Returns a warning for each
    /// seed variable shadowed by a different `OPENAI_*` value.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let get = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        let mut warnings = Vec::new();
        let mut openai = |own: &str, seed: &str| match (get(own), get(seed)) {
            (Some(ours), Some(theirs)) => {
                if ours != theirs {
                    warnings.push(format!(
                        "{seed} and {own} are both set, to different values: {own} wins"
                    ));
                }
                Some(ours)
            }
            (ours, theirs) => ours.or(theirs),
        };
        let openai_key = openai("OPENAI_API_KEY", "LLM_API_KEY");
        let openai_base_url = openai("OPENAI_BASE_URL", "LLM_BASE_URL");
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
            openai_key,
            openai_base_url,
            OPENAI_DEFAULT_BASE_URL,
            ("gpt-4o-mini", "OpenAI"),
            get("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".to_owned()),
        );
        warnings
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
}
