//! The core's closed vocabularies: who wrote a message, how a message and a chat stand, and a
//! user's presence. Each is an enum with one spelling, [`as_str`](Role::as_str), used in storage
//! columns and in logs; the gRPC adapter maps them to the protobuf enums. A leaf module: it
//! depends on nothing in the crate, and `chat`, `storage` and `grpc` all use it.

use serde::{Deserialize, Serialize};

/// The author of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    /// A human operator who took the chat over.
    Admin,
    System,
}

/// How a stored message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Complete,
    /// Cut short by `stop` or a takeover; the partial text is kept.
    Stopped,
    /// The model failed; the content is the configured apology or the partial text.
    Failed,
}

/// Whether a chat (session) still takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    Active,
    Ended,
}

/// A user's presence as members see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Away,
    Offline,
}

/// One spelling per value, shared by storage and logs.
macro_rules! spelled {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// How the value is spelled in storage and logs.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// The value a stored spelling names, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled!(Role { User => "user", Assistant => "assistant", Admin => "admin", System => "system" });
spelled!(MessageStatus { Complete => "complete", Stopped => "stopped", Failed => "failed" });
spelled!(ChatStatus { Active => "active", Ended => "ended" });
spelled!(Presence { Online => "online", Away => "away", Offline => "offline" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back_to_its_value() {
        for role in [Role::User, Role::Assistant, Role::Admin, Role::System] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        for status in [
            MessageStatus::Complete,
            MessageStatus::Stopped,
            MessageStatus::Failed,
        ] {
            assert_eq!(MessageStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ChatStatus::parse("ended"), Some(ChatStatus::Ended));
        assert_eq!(Presence::parse("away"), Some(Presence::Away));
        assert_eq!(Role::parse("operator"), None);
    }
}
