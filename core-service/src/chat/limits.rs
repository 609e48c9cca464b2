//! Per-user rate limits, kept in the core so they hold across edges (and for internal services
//! that reach the core without an edge). Generic over the clock so tests move time by hand.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::error::ChatError;
use crate::config::ChatSettings;

type KeyedLimiter<C> =
    RateLimiter<String, HashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// What a user does that costs the core work or storage, each with its own per-minute budget
/// (`chat.*_per_minute`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// A message (`chat.user_messages_per_minute`).
    Message,
    /// A typing event (`chat.typing_per_minute`).
    Typing,
    /// A new chat (`chat.chats_per_minute`).
    NewChat,
    /// Joining a chat (`chat.joins_per_minute`).
    Join,
    /// A history page (`chat.history_per_minute`).
    History,
    /// One chat of a `resume` (`chat.resumes_per_minute`).
    Resume,
    /// A read receipt (`chat.read_receipts_per_minute`).
    ReadReceipt,
    /// A file upload (`chat.uploads_per_minute`).
    Upload,
}

impl Rate {
    /// Every rate, in declaration order: `ALL[rate as usize] == rate` (checked below).
    const ALL: [Rate; 8] = [
        Rate::Message,
        Rate::Typing,
        Rate::NewChat,
        Rate::Join,
        Rate::History,
        Rate::Resume,
        Rate::ReadReceipt,
        Rate::Upload,
    ];

    const IN_ORDER: () = {
        let mut i = 0;
        while i < Self::ALL.len() {
            assert!(
                Self::ALL[i] as usize == i,
                "Rate::ALL must list the rates in order"
            );
            i += 1;
        }
    };

    fn per_minute(self, settings: &ChatSettings) -> u32 {
        match self {
            Rate::Message => settings.user_messages_per_minute,
            Rate::Typing => settings.typing_per_minute,
            Rate::NewChat => settings.chats_per_minute,
            Rate::Join => settings.joins_per_minute,
            Rate::History => settings.history_per_minute,
            Rate::Resume => settings.resumes_per_minute,
            Rate::ReadReceipt => settings.read_receipts_per_minute,
            Rate::Upload => settings.uploads_per_minute,
        }
    }

    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rate::Message => "message",
            Rate::Typing => "typing",
            Rate::NewChat => "new_chat",
            Rate::Join => "join",
            Rate::History => "history",
            Rate::Resume => "resume",
            Rate::ReadReceipt => "read_receipt",
            Rate::Upload => "upload",
        }
    }
}

/// Per-user limits, kept in the core so they hold across edges. Generic over the clock so
/// tests can move time by hand.
pub struct RateLimits<C: Clock + Clone = DefaultClock> {
    /// One keyed limiter per [`Rate`], indexed by `rate as usize`.
    limiters: [KeyedLimiter<C>; Rate::ALL.len()],
    clock: C,
}

impl RateLimits<DefaultClock> {
    pub fn new(settings: &ChatSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(settings: &ChatSettings, clock: C) -> Self {
        let () = Rate::IN_ORDER;
        let limiters = Rate::ALL.map(|rate| {
            let per_minute = NonZeroU32::new(rate.per_minute(settings)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::hashmap_with_clock(Quota::per_minute(per_minute), clock.clone())
        });
        Self { limiters, clock }
    }

    /// Spends `n` of the user's `rate` budget, or answers 429 with the wait until it may.
    /// Spending is all or nothing: a refused batch spends none.
    pub fn check_n(&self, rate: Rate, user_id: &str, n: u32) -> Result<(), ChatError> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let limiter = &self.limiters[rate as usize];
        let refused = |retry_after_ms: i64| {
            tracing::info!(user = %user_id, limit = rate.as_str(), retry_after_ms, "rate limit hit");
            ChatError::RateLimited { retry_after_ms }
        };
        match limiter.check_key_n(&user_id.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(refused(wait.as_millis().max(1) as i64))
            }
            // More than a whole minute's budget at once: never allowed.
            Err(_) => Err(refused(60_000)),
        }
    }

    /// Spends one of the user's `rate` budget, or answers 429 with the wait until it may.
    pub fn check(&self, rate: Rate, user_id: &str) -> Result<(), ChatError> {
        self.check_n(rate, user_id, 1)
    }

    /// Forgets users whose buckets are full again, so the maps do not grow without bound.
    pub fn prune(&self) {
        for limiter in &self.limiters {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_limit_answers_429_with_a_retry_time_and_refills_with_time() {
        let clock = governor::clock::FakeRelativeClock::default();
        let settings = ChatSettings {
            user_messages_per_minute: 2,
            typing_per_minute: 1,
            ..ChatSettings::default()
        };
        let limits = RateLimits::with_clock(&settings, clock.clone());
        assert!(limits.check(Rate::Message, "u1").is_ok());
        assert!(limits.check(Rate::Message, "u1").is_ok());
        match limits.check(Rate::Message, "u1") {
            Err(ChatError::RateLimited { retry_after_ms }) => assert_eq!(retry_after_ms, 30_000),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(
            limits.check(Rate::Message, "u2").is_ok(),
            "limits are per user"
        );
        assert!(
            limits.check(Rate::Typing, "u1").is_ok(),
            "typing has its own budget"
        );
        assert!(limits.check(Rate::Typing, "u1").is_err());

        clock.advance(std::time::Duration::from_secs(29));
        assert!(limits.check(Rate::Message, "u1").is_err(), "not yet");
        clock.advance(std::time::Duration::from_secs(1));
        assert!(
            limits.check(Rate::Message, "u1").is_ok(),
            "one message per 30 s refills"
        );
        assert!(limits.check(Rate::Message, "u1").is_err());
        limits.prune();
    }
}
