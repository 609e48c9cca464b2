//! What an alert says: the kinds of alert, and their text as an email (subject and body) and
//! as an SMS. The help request's reason is the user's own text: it goes into the alert, which
//! is its point, and nowhere else (never into logs: log with [`Alert::kind`] and ids only).

use chrono::{DateTime, SecondsFormat, Utc};

use super::settings::CHAT_ID_PLACEHOLDER;

/// Longest reason quoted in an SMS, in characters (the email carries all of it).
const SMS_REASON_CHARS: usize = 200;

/// One thing operators should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alert {
    /// A user asked for a human.
    HelpRequested {
        user_id: String,
        chat_id: String,
        /// The user's words, when given.
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// A model's replies have kept failing since `since`.
    ModelFailing {
        model: String,
        /// The kind of the last error (`timeout`, `status`, ...), never provider text.
        error_kind: &'static str,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The database stopped answering.
    DatabaseUnreachable { at: DateTime<Utc> },
}

/// The kind of an alert, as logged and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    HelpRequest,
    ModelFailing,
    DatabaseUnreachable,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HelpRequest => "help_request",
            Self::ModelFailing => "model_failing",
            Self::DatabaseUnreachable => "database_unreachable",
        }
    }
}

impl Alert {
    pub fn kind(&self) -> AlertKind {
        match self {
            Self::HelpRequested { .. } => AlertKind::HelpRequest,
            Self::ModelFailing { .. } => AlertKind::ModelFailing,
            Self::DatabaseUnreachable { .. } => AlertKind::DatabaseUnreachable,
        }
    }

    /// The chat the alert is about, if any (logged; never secret).
    pub fn chat_id(&self) -> Option<&str> {
        match self {
            Self::HelpRequested { chat_id, .. } => Some(chat_id),
            _ => None,
        }
    }

    /// The user the alert is about, if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Self::HelpRequested { user_id, .. } => Some(user_id),
            _ => None,
        }
    }

    /// What the per-key rate limit counts: the chat for help, the condition for the rest.
    pub(super) fn limit_key(&self) -> String {
        match self {
            Self::HelpRequested { chat_id, .. } => format!("chat:{chat_id}"),
            Self::ModelFailing { model, .. } => format!("model:{model}"),
            Self::DatabaseUnreachable { .. } => "database".into(),
        }
    }

    /// The link to the session, from the configured template (help alerts only).
    pub fn link(&self, template: Option<&str>) -> Option<String> {
        let template = template?;
        self.chat_id()
            .map(|chat| template.replace(CHAT_ID_PLACEHOLDER, chat))
    }

    pub fn subject(&self) -> String {
        match self {
            Self::HelpRequested { user_id, .. } => format!("Help requested by {user_id}"),
            Self::ModelFailing { model, .. } => format!("Model {model} is failing"),
            Self::DatabaseUnreachable { .. } => "Database unreachable".into(),
        }
    }

    /// The email's plain-text body: one `Label: value` line per field, then the reason.
    pub fn email_body(&self, link_template: Option<&str>) -> String {
        let mut lines = Vec::new();
        match self {
            Self::HelpRequested {
                user_id,
                chat_id,
                reason,
                at,
            } => {
                lines.push("A user asked for a human operator.".to_string());
                lines.push(String::new());
                lines.push(format!("User: {user_id}"));
                lines.push(format!("Session: {chat_id}"));
                lines.push(format!("Time: {}", rfc3339(at)));
                if let Some(link) = self.link(link_template) {
                    lines.push(format!("Link: {link}"));
                }
                lines.push(String::new());
                lines.push("Reason:".into());
                lines.push(
                    reason
                        .as_deref()
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .unwrap_or("(none given)")
                        .to_string(),
                );
            }
            Self::ModelFailing {
                model,
                error_kind,
                since,
                at,
            } => {
                lines.push(format!("Replies from model {model} keep failing."));
                lines.push(String::new());
                lines.push(format!("Model: {model}"));
                lines.push(format!("Failing since: {}", rfc3339(since)));
                lines.push(format!("Last error: {error_kind}"));
                lines.push(format!("Time: {}", rfc3339(at)));
            }
            Self::DatabaseUnreachable { at } => {
                lines.push(
                    "The chat core cannot reach its database; readiness is NOT_SERVING.".into(),
                );
                lines.push(String::new());
                lines.push(format!("Time: {}", rfc3339(at)));
            }
        }
        let mut body = lines.join("\n");
        body.push('\n');
        body
    }

    /// The SMS: short, one line per field, the reason cut to [`SMS_REASON_CHARS`].
    pub fn sms_body(&self, link_template: Option<&str>) -> String {
        match self {
            Self::HelpRequested {
                user_id,
                chat_id,
                reason,
                at,
            } => {
                let mut text = format!(
                    "Help requested\nUser: {user_id}\nSession: {chat_id}\nTime: {}",
                    rfc3339(at)
                );
                if let Some(link) = self.link(link_template) {
                    text.push_str(&format!("\n{link}"));
                }
                if let Some(reason) = reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
                    text.push_str("\nReason: ");
                    text.push_str(&cut(reason, SMS_REASON_CHARS));
                }
                text
            }
            Self::ModelFailing {
                model,
                error_kind,
                since,
                ..
            } => format!(
                "Model {model} failing since {} (last error: {error_kind})",
                rfc3339(since)
            ),
            Self::DatabaseUnreachable { at } => {
                format!("Chat core: database unreachable at {}", rfc3339(at))
            }
        }
    }
}

/// `2025-01-31T12:00:00Z`.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// At most `max` characters, an ellipsis marking a cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-03-04T05:06:07Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn help(reason: Option<&str>) -> Alert {
        Alert::HelpRequested {
            user_id: "alice".into(),
            chat_id: "c-42".into(),
            reason: reason.map(str::to_string),
            at: at(),
        }
    }

    const LINK: Option<&str> = Some("http://127.0.0.1:8080/admin/#/sessions/{chatId}");

    #[test]
    fn a_help_email_carries_user_session_time_link_and_reason() {
        let alert = help(Some("  The bot keeps looping  "));
        assert_eq!(alert.subject(), "Help requested by alice");
        let body = alert.email_body(LINK);
        assert!(body.contains("\nUser: alice\n"), "{body}");
        assert!(body.contains("\nSession: c-42\n"), "{body}");
        assert!(body.contains("\nTime: 2025-03-04T05:06:07Z\n"), "{body}");
        assert!(
            body.contains("\nLink: http://127.0.0.1:8080/admin/#/sessions/c-42\n"),
            "{body}"
        );
        assert!(body.ends_with("Reason:\nThe bot keeps looping\n"), "{body}");
    }

    #[test]
    fn without_a_template_or_reason_the_lines_say_so() {
        let body = help(None).email_body(None);
        assert!(!body.contains("Link:"), "{body}");
        assert!(body.ends_with("Reason:\n(none given)\n"), "{body}");
        assert_eq!(help(Some("x")).link(None), None);
    }

    #[test]
    fn an_sms_is_short_and_cuts_a_long_reason() {
        let long = "a".repeat(1000);
        let sms = help(Some(&long)).sms_body(LINK);
        assert!(sms.starts_with("Help requested\nUser: alice\nSession: c-42\nTime: 2025-03-04T05:06:07Z\nhttp://127.0.0.1:8080/admin/#/sessions/c-42\nReason: "), "{sms}");
        assert!(sms.chars().count() < 400, "{}", sms.chars().count());
        assert!(sms.ends_with('…'));
        assert!(!help(None).sms_body(None).contains("Reason"));
    }

    #[test]
    fn critical_alerts_name_the_condition_and_no_chat() {
        let model = Alert::ModelFailing {
            model: "gpt".into(),
            error_kind: "timeout",
            since: at(),
            at: at(),
        };
        assert_eq!(model.subject(), "Model gpt is failing");
        assert!(model.email_body(LINK).contains("Last error: timeout"));
        assert!(!model.email_body(LINK).contains("Link:"));
        assert_eq!(model.limit_key(), "model:gpt");
        assert_eq!(model.chat_id(), None);
        let db = Alert::DatabaseUnreachable { at: at() };
        assert_eq!(db.kind().as_str(), "database_unreachable");
        assert!(db.sms_body(None).contains("2025-03-04T05:06:07Z"));
        assert_eq!(help(None).limit_key(), "chat:c-42");
    }
}
