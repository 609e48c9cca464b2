//! The LLM layer: one [`Provider`] trait over the upstream APIs (OpenAI-compatible Chat
//! Completions, Anthropic Messages, Dify chat apps, and the offline demo) and [`Llm`], the catalogue the chat
//! engine talks to.
//!
//! Module map (arrows are the allowed uses; nothing here knows chats, storage or protobuf):
//!
//! - `provider`: the contract: [`Prompt`] in, [`Delta`]s out, the [`Provider`] trait.
//! - `error`: [`LlmError`] and which errors a retry may cure.
//! - `settings`: the `[llm]` table, its environment overrides and its validation.
//! - `catalogue` -> `settings`, `policy`, providers: [`Llm`], model and agent lookup, building
//!   the providers and resolving their keys.
//! - `policy` -> `provider`: retries, fallback chain, first-token and idle timeouts
//!   ([`Llm::open`]).
//! - `openai`, `anthropic`, `dify` -> `sse`, `provider`; `demo` -> `provider`: the providers.
//! - `sse`: HTTP and Server-Sent Events plumbing shared by the HTTP providers.
//! - `voice` -> `sse`, `settings`: speech to text and text to speech ([`Voice`]), on an
//!   OpenAI-compatible provider's audio endpoints.

mod anthropic;
mod catalogue;
mod demo;
mod dify;
mod error;
mod openai;
mod policy;
mod provider;
mod settings;
mod sse;
mod voice;

pub use catalogue::Llm;
pub use error::LlmError;
pub use policy::OpenedReply;
pub use provider::{
    Delta, DeltaStream, Image, Prompt, Provider, ProviderRequest, Turn, TurnRole, estimate_tokens,
};
pub use settings::{
    AgentSettings, LlmSettings, LlmSettingsError, ModelSettings, Pricing, ProviderKind,
    ProviderSettings, RetrySettings, SPEECH_FORMATS, SettingsProblem, VoiceSettings,
};
pub use voice::{Speech, Voice};

#[cfg(test)]
mod tests;
