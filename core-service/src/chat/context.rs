//! User context documents: one JSON object per user (tasks, groups, preferences, any fields),
//! set by internal services (`service` role) or admins, read by them and by the user, and
//! rendered into the system prompt of every reply to that user ([`render`]). A user with no
//! pushed document may have one fetched from `chat.context_url` ([`ContextSource`]), cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chat_auth::{Principal, ROLE_SERVICE};
use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use super::engine::Engine;
use super::error::ChatError;
use super::validate::ChatId;
use crate::storage;

pub use chat_proto::limits::MAX_CONTEXT_DOCUMENT_BYTES;

/// A user's document as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UserContext {
    pub user_id: String,
    pub document: Map<String, Value>,
    pub updated_by: String,
    pub updated_at: NaiveDateTime,
}

fn may_write(who: &Principal) -> bool {
    who.is_admin() || who.has_role(ROLE_SERVICE)
}

impl Engine {
    /// Replaces `user_id`'s document. Admins and the `service` role only; at most
    /// [`MAX_CONTEXT_DOCUMENT_BYTES`].
    pub async fn set_user_context(
        &self,
        who: &Principal,
        user_id: &str,
        document: Map<String, Value>,
    ) -> Result<UserContext, ChatError> {
        if !may_write(who) {
            return Err(ChatError::Forbidden(
                "Only admins and services can set a user's context".into(),
            ));
        }
        let user = ChatId::parse(user_id, "userId")?;
        let text = Value::Object(document.clone()).to_string();
        if text.len() > MAX_CONTEXT_DOCUMENT_BYTES {
            return Err(ChatError::TooLarge {
                message: format!(
                    "the context document is {} bytes, at most {MAX_CONTEXT_DOCUMENT_BYTES}",
                    text.len()
                ),
                field: Some("document"),
            });
        }
        let now = self.now();
        storage::set_user_context(&self.db, user.as_str(), &text, &who.user_id, now).await?;
        tracing::info!(user = %user.as_str(), by = %who.user_id, bytes = text.len(), "user context set");
        Ok(UserContext {
            user_id: user.as_str().to_owned(),
            document,
            updated_by: who.user_id.clone(),
            updated_at: now,
        })
    }

    /// `user_id`'s document: for admins, the `service` role and the user themself. 404 when
    /// none was set.
    pub async fn user_context(
        &self,
        who: &Principal,
        user_id: &str,
    ) -> Result<UserContext, ChatError> {
        let user = ChatId::parse(user_id, "userId")?;
        if !may_write(who) && who.user_id != user.as_str() {
            return Err(ChatError::Forbidden(
                "Only the user, admins and services can read a user's context".into(),
            ));
        }
        let row = storage::get_user_context(&self.db, user.as_str())
            .await?
            .ok_or_else(|| ChatError::NotFound("No context for this user".into()))?;
        Ok(UserContext {
            user_id: row.user_id,
            document: parse(&row.document),
            updated_by: row.updated_by,
            updated_at: row.updated_at,
        })
    }

    /// The document rendered for `user_id`'s prompt: the pushed one, else the fetched one
    /// (when `chat.context_url` is set), else None. A failed read or fetch never holds up a
    /// reply: it is logged and the reply goes on without the document.
    pub(super) async fn prompt_context(&self, user_id: &str) -> Option<String> {
        match storage::get_user_context(&self.db, user_id).await {
            Ok(Some(row)) => Some(render(&parse(&row.document))).filter(|r| !r.is_empty()),
            Ok(None) => match &self.context_source {
                Some(source) => source.rendered(user_id).await,
                None => None,
            },
            Err(err) => {
                tracing::warn!(user = %user_id, error = %err, "user context not read; replying without it");
                None
            }
        }
    }
}

/// Fetches users' documents from `chat.context_url` and keeps each (rendered), or the failure
/// to get it, for `chat.context_cache_secs`: a slow or failing service costs each user at most
/// one timeout per period.
pub struct ContextSource {
    client: reqwest::Client,
    template: String,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

/// Users whose documents are kept at once; past it, expired entries (then all) are dropped.
const CACHE_USERS: usize = 10_000;

impl ContextSource {
    pub fn from_settings(settings: &crate::config::ChatSettings) -> Option<Self> {
        if settings.context_url.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.context_fetch_timeout_ms))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Some(Self {
            client,
            template: settings.context_url.clone(),
            ttl: Duration::from_secs(settings.context_cache_secs),
            cache: Mutex::new(HashMap::new()),
        })
    }

    async fn rendered(&self, user_id: &str) -> Option<String> {
        let now = Instant::now();
        if let Some((at, kept)) = self.lock().get(user_id)
            && now.duration_since(*at) < self.ttl
        {
            return kept.clone();
        }
        let fetched = self.fetch(user_id).await;
        let mut cache = self.lock();
        if cache.len() >= CACHE_USERS {
            cache.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if cache.len() >= CACHE_USERS {
                cache.clear();
            }
        }
        cache.insert(user_id.to_owned(), (now, fetched.clone()));
        fetched
    }

    async fn fetch(&self, user_id: &str) -> Option<String> {
        let url = self
            .template
            .replace("{userId}", &chat_runtime::percent_encode(user_id));
        let answer = async {
            let response = self.client.get(&url).send().await?.error_for_status()?;
            response.json::<Value>().await
        };
        match answer.await {
            Ok(Value::Object(document)) => Some(render(&document)).filter(|r| !r.is_empty()),
            Ok(_) => {
                tracing::warn!(user = %user_id, "fetched user context is not a JSON object; replying without it");
                None
            }
            // The reason without the URL (its query may carry a key).
            Err(err) => {
                tracing::warn!(user = %user_id, error = %err.without_url(), "user context not fetched; replying without it");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<String>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stored text back to an object (only objects are stored; anything else reads as empty).
fn parse(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The document as lines a model reads easily: one `- key: value` line per field, lists of
/// plain values joined with commas, nested objects and lists of objects as compact JSON.
pub fn render(document: &Map<String, Value>) -> String {
    document
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| format!("- {key}: {}", plain(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            items.iter().map(plain).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_percent_encoded_for_the_url() {
        assert_eq!(chat_runtime::percent_encode("ada-1_x.y~z"), "ada-1_x.y~z");
        assert_eq!(chat_runtime::percent_encode("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(chat_runtime::percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn documents_render_as_one_line_per_field() {
        let doc = json!({
            "tasks": ["Finish the essay", "Read chapter 4"],
            "groups": [{"id": "g1", "name": "Physics"}],
            "preferences": {"tone": "brief"},
            "level": 3,
            "name": "Ada",
            "ignored": null,
        });
        let Value::Object(doc) = doc else {
            unreachable!()
        };
        assert_eq!(
            render(&doc),
            "- groups: [{\"id\":\"g1\",\"name\":\"Physics\"}]\n- level: 3\n- name: Ada\n\
             - preferences: {\"tone\":\"brief\"}\n- tasks: Finish the essay, Read chapter 4"
        );
    }
}
