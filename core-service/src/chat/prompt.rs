//! Prompt assembly for a reply: the agent's system prompt, the asking user's context document,
//! the triggering message's context, and as much recent history as fits the model's token budget, as provider-neutral turns.

use super::engine::Engine;
use super::event::{StoredAttachment, StoredMetadata};
use crate::llm::{Image, Prompt, Turn, TurnRole, estimate_tokens};
use crate::storage::{self, ChatRow, MessageRow};
use crate::types::{MessageStatus, Role};

/// Agent system prompt + the user's context document ([`super::context::render`]) + the
/// message's context + recent history within the model's token budget, ending with the
/// triggering message.
pub(super) async fn build_prompt(
    engine: &Engine,
    chat: &ChatRow,
    trigger: &MessageRow,
) -> Result<Prompt, storage::StorageError> {
    let settings = engine.llm.settings();
    let agent = engine
        .llm
        .agent(&chat.agent_id)
        .or_else(|| engine.llm.agent(&settings.default_agent));
    let mut system = agent.map(|a| a.system_prompt.clone()).unwrap_or_default();
    if let Some(document) = engine.prompt_context(&trigger.sender_id).await {
        system.push_str("\n\nWhat is known about the user (their context document):\n");
        system.push_str(&document);
    }
    if let Some(context) = StoredMetadata::parse(&trigger.metadata).context {
        system.push_str("\n\nContext the application attached to the latest message (JSON):\n");
        system.push_str(&context.to_string());
    }
    let (window, max_output) = engine
        .llm
        .model(&chat.model)
        .map_or((8192, 1024), |m| (m.context_window, m.max_output_tokens));
    let budget = window
        .saturating_sub(max_output)
        .saturating_sub(estimate_tokens(&system));

    let (rows, _) = storage::history(
        &engine.db,
        &chat.id,
        Some(trigger.seq + 1),
        engine.settings.prompt_history_messages,
    )
    .await?;
    if rows.iter().any(|r| r.role == Role::Admin.as_str()) {
        system.push_str(
            "\n\nNote: a human support operator took over this conversation for a while. Assistant \
             turns that start with \"[Human operator\" were written by that person, not by you; \
             continue the conversation from where they left off.",
        );
    }
    // Stateful providers' conversation ids, read only when such a provider is configured:
    // without them a Dify app starts afresh and forgets, so a failed read is logged, not fatal.
    let conversations = if engine.llm.has_stateful_providers() {
        storage::conversations_of(&engine.db, &chat.id)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "conversation ids not read");
                Default::default()
            })
    } else {
        Default::default()
    };
    let mut turns = fit_turns(&rows, budget);
    let vision = engine.llm.model(&chat.model).is_some_and(|m| m.vision);
    if let Some(last) = turns
        .last_mut()
        .filter(|t| matches!(t.role, TurnRole::User))
    {
        attach_files(engine, trigger, last, vision).await;
    }
    Ok(Prompt {
        system,
        turns,
        user_id: trigger.sender_id.clone(),
        conversations,
    })
}

/// Images sent to a vision model with one message, at most.
const MAX_IMAGES: usize = 4;
/// The largest image sent to a vision model (larger ones are only named).
const MAX_IMAGE_BYTES: i64 = 5 * 1024 * 1024;
/// The largest text file whose content is put into the prompt (larger ones are only named).
const MAX_INLINE_TEXT_BYTES: i64 = 32 * 1024;

/// The triggering message's files, beyond their names: images for a model that sees them
/// (`vision`), and the text of small text files. A file that cannot be read stays named only.
async fn attach_files(engine: &Engine, trigger: &MessageRow, turn: &mut Turn, vision: bool) {
    use base64::Engine as _;
    let Ok(files) = engine.files() else {
        return;
    };
    for file in StoredAttachment::parse_list(&trigger.attachments) {
        let image = matches!(
            file.mime.as_str(),
            "image/png" | "image/jpeg" | "image/gif" | "image/webp"
        );
        let text = crate::files::content::is_text(&file.mime);
        let wanted =
            (image && vision && file.size <= MAX_IMAGE_BYTES && turn.images.len() < MAX_IMAGES)
                || (text && file.size <= MAX_INLINE_TEXT_BYTES);
        if !wanted {
            continue;
        }
        let bytes = match files.read(&engine.db, &file.id).await {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(file = %file.id, error = %err, "attachment not read for the prompt");
                continue;
            }
        };
        if image {
            turn.images.push(Image {
                mime: file.mime.clone(),
                base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
        } else {
            turn.content.push_str(&format!(
                "\n\n[Content of {}]\n{}",
                file.name,
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
}

/// History rows to prompt turns: newest first until the budget is spent (the newest always
/// kept), failed replies left out, consecutive turns of one role merged, starting with a user.
fn fit_turns(rows: &[MessageRow], budget: u32) -> Vec<Turn> {
    let mut picked: Vec<Turn> = Vec::new();
    let mut used = 0u32;
    for row in rows.iter().rev() {
        let role = match (Role::parse(&row.role), MessageStatus::parse(&row.status)) {
            (_, Some(MessageStatus::Failed)) | (Some(Role::System) | None, _) => continue,
            (Some(Role::Assistant | Role::Admin), _) => TurnRole::Assistant,
            (Some(Role::User), _) => TurnRole::User,
        };
        let content = if row.role == Role::Admin.as_str() {
            let name = StoredMetadata::parse(&row.metadata)
                .operator_name
                .unwrap_or_default();
            format!("[Human operator {name}]: {}", row.content)
        } else {
            row.content.clone()
        };
        // Attached files are named, so the model knows they are there.
        let mut content = content;
        for file in StoredAttachment::parse_list(&row.attachments) {
            content.push_str(&format!(
                "\n[Attached file: {} ({}, {} bytes)]",
                file.name, file.mime, file.size
            ));
        }
        let cost = estimate_tokens(&content);
        if !picked.is_empty() && used + cost > budget {
            break;
        }
        used += cost;
        picked.push(Turn {
            role,
            content,
            images: Vec::new(),
        });
    }
    picked.reverse();
    let mut turns: Vec<Turn> = Vec::with_capacity(picked.len());
    for turn in picked {
        match turns.last_mut() {
            Some(last) if same_role(&last.role, &turn.role) => {
                last.content.push_str("\n\n");
                last.content.push_str(&turn.content);
            }
            None if matches!(turn.role, TurnRole::Assistant) => {}
            _ => turns.push(turn),
        }
    }
    turns
}

fn same_role(a: &TurnRole, b: &TurnRole) -> bool {
    matches!(
        (a, b),
        (TurnRole::User, TurnRole::User) | (TurnRole::Assistant, TurnRole::Assistant)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, role: &str, status: &str, content: &str) -> MessageRow {
        MessageRow {
            id: format!("m{seq}"),
            chat_id: "c".into(),
            seq,
            sender_id: "u".into(),
            role: role.into(),
            agent_id: "assistant".into(),
            content: content.into(),
            status: status.into(),
            client_message_id: None,
            attachments: "[]".into(),
            metadata: "{}".into(),
            created_at: chrono::Utc::now().naive_utc(),
            ordinal: seq,
        }
    }

    #[test]
    fn turns_skip_failed_replies_merge_roles_and_start_with_the_user() {
        let rows = vec![
            row(1, "assistant", "complete", "welcome"),
            row(2, "user", "complete", "a"),
            row(3, "assistant", "failed", "sorry"),
            row(4, "user", "complete", "b"),
            row(5, "assistant", "stopped", "partial"),
            row(6, "user", "complete", "c"),
        ];
        let turns = fit_turns(&rows, 10_000);
        let shape: Vec<(bool, &str)> = turns
            .iter()
            .map(|t| (matches!(t.role, TurnRole::User), t.content.as_str()))
            .collect();
        assert_eq!(
            shape,
            vec![(true, "a\n\nb"), (false, "partial"), (true, "c")]
        );
    }

    #[test]
    fn the_budget_keeps_the_newest_turns_and_always_the_last() {
        let rows = vec![
            row(1, "user", "complete", &"x".repeat(400)),
            row(2, "user", "complete", "last"),
        ];
        let turns = fit_turns(&rows, 5);
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].content, "last");
        let turns = fit_turns(&rows[..1], 1);
        assert_eq!(
            turns.len(),
            1,
            "the newest message is kept even over budget"
        );
    }
}
