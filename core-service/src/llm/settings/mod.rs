//! Typed settings of the LLM layer: the `[llm]` table of the config file, and its defaults.
//!
//! Holds the providers (upstream APIs and their keys), the model catalogue users choose from,
//! the agents (personas), the timeouts and the retry policy. Everything has a default, so an
//! empty `[llm]` table runs the offline `demo` model. [`LlmSettings::apply_env`] (in `env`) adds
//! a real provider when the usual `OPENAI_*` / `ANTHROPIC_*` variables are set, and
//! [`LlmSettings::validate`] (in `validate`) checks the whole table once, at start, with
//! messages that name the offending entry.

mod env;
mod validate;

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

pub use validate::{LlmSettingsError, SettingsProblem};

/// Name of the built-in offline provider. It is always available, even when a config file
/// replaces the `providers` table without listing it.
pub const DEMO_PROVIDER: &str = "demo";

/// Default base URL of the OpenAI API (the Chat Completions path is appended).
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Default base URL of the Anthropic API (`/v1/messages` is appended).
pub const ANTHROPIC_DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// Dify Cloud's API root; self-hosted Dify is `http://<host>/v1`.
pub const DIFY_DEFAULT_BASE_URL: &str = "https://api.dify.ai/v1";

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
    /// Currency of the models' `pricing` (shown with usage costs).
    pub currency: String,
    /// Speech to text and text to speech (`[llm.voice]`); off unless it names a provider.
    pub voice: VoiceSettings,
}

/// `[llm.voice]`: an OpenAI-compatible provider's audio endpoints. `POST
/// {base_url}/audio/transcriptions` turns a voice message into its text; `POST
/// {base_url}/audio/speech` speaks the replies of chats that ask for spoken replies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceSettings {
    /// A provider of kind `openai` (its base URL and key are used); empty: voice is off.
    pub provider: String,
    /// Model of `/audio/transcriptions`.
    pub transcription_model: String,
    /// Model of `/audio/speech`.
    pub speech_model: String,
    /// Voice of `/audio/speech`.
    pub speech_voice: String,
    /// Audio format of spoken replies: `mp3`, `wav`, `opus` or `flac`.
    pub speech_format: String,
    /// Longest reply spoken, in characters (the API's own limit is 4096); a longer reply is
    /// spoken up to there.
    pub max_speech_chars: usize,
    /// Bound on one transcription or speech request, start to end.
    pub timeout_ms: u64,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        VoiceSettings {
            provider: String::new(),
            transcription_model: "whisper-1".to_owned(),
            speech_model: "tts-1".to_owned(),
            speech_voice: "alloy".to_owned(),
            speech_format: "mp3".to_owned(),
            max_speech_chars: 4096,
            timeout_ms: 60_000,
        }
    }
}

/// The speech formats and the type each is stored as.
pub const SPEECH_FORMATS: &[(&str, &str)] = &[
    ("mp3", "audio/mpeg"),
    ("wav", "audio/wav"),
    ("opus", "audio/ogg"),
    ("flac", "audio/flac"),
];

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM, llama.cpp, LiteLLM).
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
    /// A Dify chat app (its chat-messages streaming API; the app's key is the provider's key).
    Dify,
    /// The built-in offline demo.
    Demo,
}

/// One upstream API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    /// Defaults per kind: [`OPENAI_DEFAULT_BASE_URL`], [`ANTHROPIC_DEFAULT_BASE_URL`],
    /// [`DIFY_DEFAULT_BASE_URL`].
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Prices per million tokens, in [`LlmSettings::currency`], for usage reports' cost.
    pub pricing: Option<Pricing>,
}

/// What a model costs, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    pub prompt_per_million: f64,
    pub completion_per_million: f64,
}

impl Pricing {
    /// The cost of a number of prompt and completion tokens.
    pub fn cost(&self, prompt_tokens: i64, completion_tokens: i64) -> f64 {
        (prompt_tokens as f64 * self.prompt_per_million
            + completion_tokens as f64 * self.completion_per_million)
            / 1_000_000.0
    }
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
    #[serde(default)]
    pricing: Option<Pricing>,
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
            pricing: file.pricing,
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
            pricing: None,
        }
    }
}

/// A persona: the system prompt a chat starts from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

impl ProviderSettings {
    /// The built-in offline demo with its default pacing.
    fn demo() -> Self {
        ProviderSettings {
            kind: ProviderKind::Demo,
            base_url: None,
            api_key: None,
            api_key_env: None,
            word_delay_ms: None,
        }
    }
}

impl Default for LlmSettings {
    fn default() -> Self {
        let demo = ProviderSettings::demo();
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
            currency: "USD".to_owned(),
            voice: VoiceSettings::default(),
        }
    }
}

impl LlmSettings {
    /// The provider a model names, with the built-in demo provider always resolvable.
    pub fn provider(&self, name: &str) -> Option<ProviderSettings> {
        match self.providers.get(name) {
            Some(provider) => Some(provider.clone()),
            None if name == DEMO_PROVIDER => Some(ProviderSettings::demo()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests;
