//! Validation at the boundary: raw protobuf fields become types that cannot hold bad values,
//! so inner code never re-checks. Every failure names the protocol field it came from.

use serde_json::{Map, Value};

use super::error::ChatError;

pub use chat_proto::limits::{MAX_CONTEXT_BYTES, MAX_ID_CHARS, MAX_PAGE};

/// The page size when a client asks for none.
pub const DEFAULT_PAGE: i64 = chat_proto::limits::DEFAULT_PAGE as i64;

fn valid_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.chars().count() <= MAX_ID_CHARS
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// A syntactically valid chat id (existence and access are checked against storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatId(String);

impl ChatId {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, ChatError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ChatError::invalid(field, format!("{field} is required")));
        }
        if !valid_id(raw) {
            return Err(ChatError::invalid(
                field,
                format!("{field} is not a valid id"),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client's idempotency key for a message: 1..=64 printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, ChatError> {
        if raw.trim().is_empty() {
            return Err(ChatError::invalid(field, format!("{field} is required")));
        }
        if raw.chars().count() > MAX_ID_CHARS || raw.chars().any(char::is_control) {
            return Err(ChatError::invalid(
                field,
                format!("{field} must be at most {MAX_ID_CHARS} printable characters"),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Message content: trimmed, 1..=max characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: &str, max_chars: u32) -> Result<Self, ChatError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(ChatError::invalid(
                "data.content",
                "data.content must not be empty",
            ));
        }
        let chars = text.chars().count();
        if chars > max_chars as usize {
            return Err(ChatError::TooLarge {
                message: format!("Message too long: {chars} characters, at most {max_chars}"),
                field: Some("data.content"),
            });
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The per-message context object, at most [`MAX_CONTEXT_BYTES`] as compact JSON. An empty
/// object counts as none.
pub fn context_json(ctx: Option<Map<String, Value>>) -> Result<Option<Value>, ChatError> {
    let Some(ctx) = ctx.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let value = Value::Object(ctx);
    let size = value.to_string().len();
    if size > MAX_CONTEXT_BYTES {
        return Err(ChatError::TooLarge {
            message: format!("data.context is {size} bytes, at most {MAX_CONTEXT_BYTES}"),
            field: Some("data.context"),
        });
    }
    Ok(Some(value))
}

/// A history cursor: the `seq` of the oldest message of the previous page.
pub fn cursor(before: Option<&str>) -> Result<Option<i64>, ChatError> {
    match before.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| ChatError::invalid("data.before", "data.before is not a valid cursor")),
    }
}

/// A page size: 1..=100, default 50.
pub fn page_limit(limit: Option<u32>) -> Result<i64, ChatError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(i64::from(n)),
        Some(_) => Err(ChatError::invalid(
            "data.limit",
            format!("data.limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// A chat title from its first message: the first line, at most 60 characters.
pub fn title_from(content: &str) -> String {
    let line = content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("New chat");
    let mut title: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        title.push('…');
    }
    title
}

/// A chat title set by a client: trimmed, 1..=100 characters, no control characters.
pub fn chat_title(raw: &str) -> Result<String, ChatError> {
    let title = raw.trim();
    if title.is_empty() {
        return Err(ChatError::invalid(
            "data.title",
            "data.title must not be empty",
        ));
    }
    if title.chars().count() > 100 || title.chars().any(char::is_control) {
        return Err(ChatError::invalid(
            "data.title",
            "data.title must be at most 100 characters on one line",
        ));
    }
    Ok(title.to_string())
}

/// At most `max` characters of a client-supplied string, for error messages.
pub fn excerpt(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_trimmed_and_bounded_in_characters_not_bytes() {
        assert_eq!(
            MessageText::parse("  hi \n", 10).ok().map(|t| t.0),
            Some("hi".to_string())
        );
        assert!(matches!(
            MessageText::parse("   ", 10),
            Err(ChatError::Invalid { .. })
        ));
        assert!(MessageText::parse(&"é".repeat(10), 10).is_ok());
        assert!(matches!(
            MessageText::parse(&"é".repeat(11), 10),
            Err(ChatError::TooLarge { .. })
        ));
    }

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        assert!(ChatId::parse("0190-abc_DEF", "data.chatId").is_ok());
        assert!(ChatId::parse("", "data.chatId").is_err());
        assert!(ChatId::parse(&"a".repeat(65), "data.chatId").is_err());
        assert!(ChatId::parse("a b", "data.chatId").is_err());
        assert!(ChatId::parse("../x", "data.chatId").is_err());
        assert!(ClientMessageId::parse("temp-1", "data.messageId").is_ok());
        assert!(ClientMessageId::parse(&"x".repeat(65), "data.messageId").is_err());
    }

    #[test]
    fn cursors_and_limits_are_checked() {
        assert_eq!(cursor(Some("12")).ok(), Some(Some(12)));
        assert!(cursor(Some("abc")).is_err());
        assert!(cursor(Some("-1")).is_err());
        assert_eq!(page_limit(None).ok(), Some(50));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(101)).is_err());
    }

    #[test]
    fn titles_take_the_first_non_empty_line() {
        assert_eq!(title_from("\n  Hello there \nmore"), "Hello there");
        assert_eq!(title_from(&"x".repeat(70)).chars().count(), 61);
    }
}
