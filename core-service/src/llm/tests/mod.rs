//! Tests of the LLM layer, one file per concern; the HTTP providers and the policy run
//! against the workspace's fake LLM (`chat-fake-llm`) over real loopback HTTP.

#![allow(clippy::expect_used, clippy::field_reassign_with_default)]

mod anthropic;
mod catalogue;
mod error;
mod fake;
mod openai;
mod policy;

use futures::StreamExt as _;

use super::{Delta, DeltaStream, LlmError, Prompt, Turn, TurnRole};

fn prompt() -> Prompt {
    Prompt {
        system: "Be brief.".to_owned(),
        turns: vec![Turn {
            role: TurnRole::User,
            content: "Hello?".to_owned(),
            images: Vec::new(),
        }],
        ..Default::default()
    }
}

async fn drain(stream: DeltaStream) -> (String, Vec<Result<Delta, LlmError>>) {
    let items: Vec<_> = stream.collect().await;
    let text = items
        .iter()
        .filter_map(|item| match item {
            Ok(Delta::Text(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    (text, items)
}
