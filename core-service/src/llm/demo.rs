//! The built-in demo model: offline, deterministic, for local runs and demos only.
//!
//! It streams a fixed reply word by word (each word with its following space as one delta,
//! `word_delay` apart), says plainly that it is the demo, quotes the start of the user's last
//! message so the round trip is visible, and reports usage estimated with
//! [`estimate_tokens`](super::estimate_tokens). Given the start of its answer (a last
//! assistant turn: a reply continued on another core), it streams the rest of that same text.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt as _};

use super::{
    Delta, DeltaStream, LlmError, Prompt, Provider, ProviderRequest, TurnRole, estimate_tokens,
};

/// How much of the user's message the demo quotes back.
const QUOTE_CHARS: usize = 200;

/// The offline demo provider.
pub struct DemoProvider {
    word_delay: Duration,
}

impl DemoProvider {
    /// `word_delay` is the pause between two words (zero in tests).
    pub fn new(word_delay: Duration) -> Self {
        DemoProvider { word_delay }
    }
}

/// The demo's reply to `prompt`: the same prompt always gets the same text.
fn reply_text(prompt: &Prompt) -> String {
    let last_user = prompt
        .turns
        .iter()
        .rev()
        .find(|turn| turn.role == TurnRole::User)
        .map(|turn| turn.content.as_str())
        .unwrap_or_default();
    // Collapse whitespace so the quote streams as ordinary words.
    let quote: String = last_user
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(QUOTE_CHARS)
        .collect();
    format!(
        "This is the built-in demo model, running offline. You said: \"{quote}\". Configure an \
         OpenAI-compatible or Anthropic provider for real answers."
    )
}

/// `text` as deltas: each word with the space after it.
fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

impl Provider for DemoProvider {
    fn open(&self, req: ProviderRequest) -> BoxFuture<'_, Result<DeltaStream, LlmError>> {
        let mut text = reply_text(&req.prompt);
        if let Some(start) = req
            .prompt
            .turns
            .last()
            .filter(|t| t.role == TurnRole::Assistant)
            && let Some(rest) = text.strip_prefix(start.content.as_str())
        {
            text = rest.to_owned();
        }
        let prompt_tokens = estimate_tokens(&req.prompt.system).saturating_add(
            req.prompt
                .turns
                .iter()
                .map(|turn| estimate_tokens(&turn.content))
                .fold(0, u32::saturating_add),
        );
        let usage = Delta::Usage {
            prompt_tokens,
            completion_tokens: estimate_tokens(&text),
        };
        let delay = self.word_delay;
        let words = stream::iter(words(&text).into_iter().enumerate()).then(
            move |(index, word)| async move {
                if index > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Delta::Text(word))
            },
        );
        let stream: DeltaStream = words.chain(stream::once(async move { Ok(usage) })).boxed();
        Box::pin(async move { Ok(stream) })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::llm::Turn;

    fn request(message: &str) -> ProviderRequest {
        ProviderRequest {
            upstream_model: "demo".to_owned(),
            prompt: Prompt {
                system: "You are helpful.".to_owned(),
                turns: vec![Turn {
                    role: TurnRole::User,
                    content: message.to_owned(),
                    images: Vec::new(),
                }],
                ..Default::default()
            },
            max_output_tokens: 100,
            user_id: String::new(),
            conversation: None,
            vision: false,
        }
    }

    async fn run(message: &str) -> Vec<Delta> {
        let stream = DemoProvider::new(Duration::ZERO)
            .open(request(message))
            .await
            .expect("opened");
        stream
            .map(|delta| delta.expect("demo never fails"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn the_demo_is_deterministic_and_says_it_is_the_demo() {
        let first = run("What is   the\nweather?").await;
        let second = run("What is   the\nweather?").await;
        assert_eq!(first, second);

        let text: String = first
            .iter()
            .filter_map(|d| match d {
                Delta::Text(t) => Some(t.as_str()),
                Delta::Usage { .. } | Delta::Conversation(_) | Delta::Truncated => None,
            })
            .collect();
        assert_eq!(
            text,
            "This is the built-in demo model, running offline. You said: \"What is the weather?\". \
             Configure an OpenAI-compatible or Anthropic provider for real answers."
        );
        assert_eq!(first[0], Delta::Text("This ".to_owned()));
        assert!(first.iter().filter(|d| matches!(d, Delta::Text(_))).count() > 10);
        assert_eq!(
            first.last(),
            Some(&Delta::Usage {
                prompt_tokens: estimate_tokens("You are helpful.")
                    + estimate_tokens("What is   the\nweather?"),
                completion_tokens: estimate_tokens(&text),
            })
        );
    }

    #[tokio::test]
    async fn the_demo_quotes_at_most_200_characters() {
        let long = "é".repeat(500);
        let text = reply_text(&request(&long).prompt);
        assert!(text.contains(&format!("\"{}\"", "é".repeat(200))));
        assert!(!text.contains(&"é".repeat(201)));
    }

    #[tokio::test]
    async fn the_demo_paces_its_words() {
        let started = std::time::Instant::now();
        let stream = DemoProvider::new(Duration::from_millis(5))
            .open(request("hi"))
            .await
            .expect("opened");
        let deltas: Vec<_> = stream.collect().await;
        let words = u32::try_from(deltas.len() - 1).expect("few words"); // the last item is the usage
        assert!(started.elapsed() >= Duration::from_millis(5) * (words - 1));
    }

    #[tokio::test]
    async fn given_the_start_of_its_answer_the_demo_streams_the_rest() {
        let mut req = request("hi");
        let whole = reply_text(&req.prompt);
        req.prompt.turns.push(Turn {
            role: TurnRole::Assistant,
            content: "This is the built-in demo".to_owned(),
            images: Vec::new(),
        });
        let stream = DemoProvider::new(Duration::ZERO)
            .open(req)
            .await
            .expect("opened");
        let rest: String = stream
            .filter_map(|d| async move {
                match d.expect("demo never fails") {
                    Delta::Text(t) => Some(t),
                    _ => None,
                }
            })
            .collect()
            .await;
        assert_eq!(format!("This is the built-in demo{rest}"), whole);
    }
}
