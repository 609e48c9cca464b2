//! The contract between the LLM layer and an upstream API: what a provider is asked
//! ([`ProviderRequest`] around a [`Prompt`]) and what it streams back ([`Delta`]s).

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Serialize;

use super::LlmError;

/// Who spoke a turn of the conversation sent upstream. Serializes as the role name both
/// upstream APIs use (`user`, `assistant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnRole {
    User,
    Assistant,
}

/// One turn of the conversation sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: TurnRole,
    pub content: String,
    /// Images shown with the text (sent only to models that see images).
    pub images: Vec<Image>,
}

/// An image for a vision model, inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub mime: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub base64: String,
}

/// Everything a provider needs to answer: the assembled system prompt and the history, which
/// ends with the new user message; who asks, and the conversation ids stateful providers
/// (Dify) gave this chat before, by provider name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    pub system: String,
    pub turns: Vec<Turn>,
    pub user_id: String,
    pub conversations: std::collections::BTreeMap<String, String>,
}

/// One item of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// The next piece of the reply text (never empty).
    Text(String),
    /// Token usage as the provider reported it (once, near the end, when it does).
    Usage {
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    /// The provider's id for this chat's conversation (Dify), when it is new: the next request
    /// of the chat to the same provider carries it.
    Conversation(String),
    /// The provider stopped at the output token limit (OpenAI `finish_reason: "length"`,
    /// Anthropic `stop_reason: "max_tokens"`): the reply is whole as sent, but cut short.
    Truncated,
}

/// A streamed reply. Ends after the last delta or after the first error.
pub type DeltaStream = BoxStream<'static, Result<Delta, LlmError>>;

/// One request to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    pub upstream_model: String,
    pub prompt: Prompt,
    pub max_output_tokens: u32,
    /// Who asks (the user's id), for providers that track users.
    pub user_id: String,
    /// This chat's conversation id at this provider, if it gave one.
    pub conversation: Option<String>,
    /// Whether this model sees images (`vision` in the catalogue); without it a turn's images
    /// are left out (they are named in its text).
    pub vision: bool,
}

/// One upstream API.
///
/// `open` sends the request and returns once the response headers arrived and the status was
/// checked (a non-2xx status is [`LlmError::Status`]); the stream then yields deltas. Dropping
/// the stream drops the upstream HTTP request at once.
pub trait Provider: Send + Sync + 'static {
    fn open(&self, req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>>;
}

/// A rough token count for budgets and for usage a provider did not report: about four
/// characters a token, rounded up (so at least 1 for non-empty text).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::estimate_tokens;

    #[test]
    fn tokens_are_estimated_at_four_characters_each() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("éééé"), 1);
    }
}
