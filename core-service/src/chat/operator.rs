//! Humans in the loop: help requests and operator takeover.
//!
//! The operator lock lives on the chat row (`operator_id`, `operator_lease_until`) and is a
//! lease: the operator's connection renews it while it lives ([`Engine::renew_operator`]), and
//! housekeeping releases leases nobody renewed ([`Engine::expire_operator_leases`]), so an
//! operator who vanishes loses the chat after a grace period. While an operator holds a chat
//! the assistant stays silent; every start and end of a takeover is a durable, `seq`-numbered
//! chat event (`operator_joined` / `operator_left`, stored in `chat_events` with who and when),
//! which is also the audit trail.

use chat_auth::Principal;

use super::engine::Engine;
use super::engine::new_id;
use super::error::ChatError;
use super::event::{ChatChanges, ChatUpdate, Durable, Event, Operator, OperatorEvent, Outgoing};
use super::monitor::HelpTicket;
use super::rooms::Conn;
use super::validate::ChatId;
use super::watch::ChangeKind;
use crate::storage::{self, ChatRow};

/// Longest help request reason, in characters.
const MAX_REASON_CHARS: usize = 500;

impl Engine {
    fn lease_until(&self) -> chrono::NaiveDateTime {
        self.now()
            + chrono::Duration::from_std(self.operator_lease())
                .unwrap_or(chrono::Duration::seconds(30))
    }

    /// Flags the chat for a human (persisted) and tells the chat. Asking twice is a 409.
    pub async fn help_request(
        &self,
        who: &Principal,
        chat_id: &str,
        reason: Option<&str>,
    ) -> Result<(), ChatError> {
        let chat = self.chat_named(who, chat_id, "data.chatId").await?;
        if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(ChatError::TooLarge {
                message: format!("data.reason must be at most {MAX_REASON_CHARS} characters"),
                field: Some("data.reason"),
            });
        }
        if !storage::set_needs_help(&self.db, &chat.id, true).await? {
            return Err(ChatError::Conflict(
                "Help already requested for this chat".into(),
            ));
        }
        let ticket = storage::insert_help_request(
            &self.db,
            storage::NewHelpRequest {
                id: &new_id(),
                chat_id: &chat.id,
                user_id: &who.user_id,
                reason,
                now: self.now(),
            },
        )
        .await?;
        // Ids only: the reason is the user's text and is never logged.
        tracing::info!(chat = %chat.id, user = %who.user_id, request = %ticket.id, "help requested");
        self.notifier.help_requested(&who.user_id, &chat.id, reason);
        let changes = ChatChanges {
            needs_help: Some(true),
            ..ChatChanges::default()
        };
        self.announce_change(&chat, ChangeKind::NeedsHelp, changes)
            .await?;
        self.audit(&chat.id, "help_requested", (&who.user_id, &who.name))
            .await;
        Ok(())
    }

    /// An admin resolves a help request: stored with who and when; when it was the chat's last
    /// open one, the chat's help flag clears (members told). 404 for an unknown id, 409 when
    /// already resolved.
    pub async fn resolve_help_request(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<HelpTicket, ChatError> {
        require_admin(who)?;
        let id = ChatId::parse(id, "id")?;
        let Some(row) =
            storage::resolve_help_request(&self.db, id.as_str(), &who.user_id, self.now()).await?
        else {
            return Err(
                match storage::get_help_request(&self.db, id.as_str()).await? {
                    Some(_) => ChatError::Conflict("Help request already resolved".into()),
                    None => ChatError::NotFound("Help request not found".into()),
                },
            );
        };
        self.audit(&row.chat_id, "help_resolved", (&who.user_id, &who.name))
            .await;
        let open = storage::help_requests_of_chat(&self.db, &row.chat_id)
            .await?
            .iter()
            .any(|r| r.resolved_at.is_none());
        if !open {
            self.clear_help_flag(&row.chat_id).await?;
        }
        Ok(HelpTicket::of(&row))
    }

    /// Clears a chat's help flag and tells its members and the operators' feed.
    async fn clear_help_flag(&self, chat_id: &str) -> Result<(), ChatError> {
        if !storage::set_needs_help(&self.db, chat_id, false).await? {
            return Ok(());
        }
        let changes = ChatChanges {
            needs_help: Some(false),
            ..ChatChanges::default()
        };
        // The flag was just cleared, so the chat exists (unless deleted this very moment).
        let Some(chat) = storage::get_chat(&self.db, chat_id).await? else {
            return Ok(());
        };
        self.announce_change(&chat, ChangeKind::HelpResolved, changes)
            .await
    }

    /// An admin takes the chat over: acquires the lock (409 if another operator holds it),
    /// stops any reply in flight and waits until it is stored as `stopped`, then announces the
    /// operator, so no assistant text reaches members after `operator_joined`. Taking over a
    /// chat one already holds (after a reconnect) re-attaches this connection.
    pub async fn takeover(
        &self,
        who: &Principal,
        chat_id: &str,
        conn: &Conn,
    ) -> Result<(), ChatError> {
        require_admin(who)?;
        let chat = self.chat_named(who, chat_id, "data.chatId").await?;
        let already_mine = chat.operator_id.as_deref() == Some(who.user_id.as_str());
        if !storage::acquire_operator(
            &self.db,
            &chat.id,
            &who.user_id,
            &who.name,
            self.lease_until(),
            self.now(),
        )
        .await?
        {
            return Err(ChatError::Conflict(
                "Chat is held by another operator".into(),
            ));
        }
        self.rooms.join(&chat.id, &conn.id);
        if already_mine {
            conn.push(operator_change(&chat.id, Some(operator(who))));
            return Ok(());
        }
        self.silence_assistant(&chat.id).await;
        let op = operator(who);
        // The feed hears of the change as soon as it is stored and before any member does, so
        // nothing a member does in answer can reach the feed ahead of it.
        self.session_changed(
            &chat,
            ChangeKind::OperatorJoined,
            changes_operator(Some(op.clone())),
            None,
        );
        self.publish(
            &chat.id,
            Durable::OperatorJoined(OperatorEvent {
                chat_id: chat.id.clone(),
                operator: op.clone(),
            }),
        )
        .await?;
        self.publish_change(&chat.id, changes_operator(Some(op.clone())))
            .await?;
        self.audit(&chat.id, "takeover", (&who.user_id, &who.name))
            .await;
        // A human has the session now: the help request is answered.
        if chat.needs_help {
            storage::resolve_open_help_requests(&self.db, &chat.id, &who.user_id, self.now())
                .await?;
            self.clear_help_flag(&chat.id).await?;
        }
        tracing::info!(chat = %chat.id, user = %chat.owner_id, operator = %who.user_id, "takeover started");
        Ok(())
    }

    /// The operator hands the chat back to the assistant.
    pub async fn release(&self, who: &Principal, chat_id: &str) -> Result<(), ChatError> {
        require_admin(who)?;
        let chat = self.chat_named(who, chat_id, "data.chatId").await?;
        if !storage::release_operator(&self.db, &chat.id, &who.user_id, None).await? {
            return Err(ChatError::Conflict("You do not hold this chat".into()));
        }
        self.announce_release(
            &chat,
            &who.user_id,
            chat.operator_name
                .clone()
                .unwrap_or_else(|| who.name.clone()),
            "release",
        )
        .await
    }

    /// Keeps the leases of the chats a live operator connection holds.
    pub async fn renew_operator(&self, who: &Principal, chat_ids: &[String]) -> Vec<String> {
        let mut lost = Vec::new();
        for chat_id in chat_ids {
            match storage::renew_operator(&self.db, chat_id, &who.user_id, self.lease_until()).await
            {
                Ok(true) => {}
                Ok(false) => lost.push(chat_id.clone()),
                Err(err) => tracing::warn!(chat = %chat_id, error = %err, "lease renewal failed"),
            }
        }
        lost
    }

    /// Releases every lease nobody renewed in time (the operator vanished).
    pub async fn expire_operator_leases(&self) -> Result<(), ChatError> {
        let at = self.now();
        for chat in storage::expired_operator_leases(&self.db, at).await? {
            let Some(op_id) = chat.operator_id.clone() else {
                continue;
            };
            if storage::release_operator(&self.db, &chat.id, &op_id, Some(at)).await? {
                tracing::info!(chat = %chat.id, operator = %op_id, "operator lease expired");
                let name = chat.operator_name.clone().unwrap_or_else(|| op_id.clone());
                self.announce_release(&chat, &op_id, name, "lease_expired")
                    .await?;
            }
        }
        Ok(())
    }

    async fn announce_release(
        &self,
        chat: &ChatRow,
        op_id: &str,
        name: String,
        action: &str,
    ) -> Result<(), ChatError> {
        let op = Operator {
            id: op_id.to_string(),
            name,
        };
        // Stored already; the feed hears first (see `takeover`).
        self.session_changed(chat, ChangeKind::OperatorLeft, changes_operator(None), None);
        self.publish(
            &chat.id,
            Durable::OperatorLeft(OperatorEvent {
                chat_id: chat.id.clone(),
                operator: op.clone(),
            }),
        )
        .await?;
        self.publish_change(&chat.id, changes_operator(None))
            .await?;
        self.audit(&chat.id, action, (op_id, &op.name)).await;
        tracing::info!(chat = %chat.id, user = %chat.owner_id, operator = %op_id, how = action, "takeover ended");
        Ok(())
    }

    /// Cancels the reply in flight, if any, and waits until it is stored. Cancelling under the
    /// chunk lock means no chunk is delivered after this returns (the turn checks the token
    /// under the same lock); waiting for the turn's slot means its final `stopped` message is
    /// delivered before anything the caller publishes next. Turns queued behind it see the
    /// operator and stay silent.
    async fn silence_assistant(&self, chat_id: &str) {
        if let Some(reply) = self.active_reply(chat_id) {
            let _chunks = reply.chunks.lock().unwrap_or_else(|p| p.into_inner());
            reply.cancel.cancel();
        }
        self.reply_order.join(chat_id).ready().await;
    }
}

impl Engine {
    /// Whether an operator currently holds the chat (the assistant must stay silent).
    pub(super) fn held(&self, chat: &ChatRow) -> bool {
        chat.operator_id.is_some()
            && chat
                .operator_lease_until
                .is_some_and(|until| until >= self.now())
    }
}

/// 403 unless the caller is an admin.
pub(super) fn require_admin(who: &Principal) -> Result<(), ChatError> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(ChatError::Forbidden("Admin role required".into()))
    }
}

fn operator(who: &Principal) -> Operator {
    Operator {
        id: who.user_id.clone(),
        name: who.name.clone(),
    }
}

fn changes_operator(op: Option<Operator>) -> ChatChanges {
    ChatChanges {
        operator: Some(op),
        ..ChatChanges::default()
    }
}

fn operator_change(chat_id: &str, op: Option<Operator>) -> Outgoing {
    Outgoing::now(Event::ChatUpdate(ChatUpdate {
        chat_id: chat_id.to_string(),
        changes: changes_operator(op),
    }))
}
