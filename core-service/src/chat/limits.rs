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

/// Per-user limits, kept in the core so they hold across edges. Generic over the clock so
/// tests can move time by hand.
pub struct RateLimits<C: Clock + Clone = DefaultClock> {
    messages: KeyedLimiter<C>,
    typing: KeyedLimiter<C>,
    clock: C,
}

impl RateLimits<DefaultClock> {
    pub fn new(settings: &ChatSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(settings: &ChatSettings, clock: C) -> Self {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            messages: RateLimiter::hashmap_with_clock(
                per_minute(settings.user_messages_per_minute),
                clock.clone(),
            ),
            typing: RateLimiter::hashmap_with_clock(
                per_minute(settings.typing_per_minute),
                clock.clone(),
            ),
            clock,
        }
    }

    /// 429 with the wait until the user may send another message.
    pub fn check_message(&self, user_id: &str) -> Result<(), ChatError> {
        self.check(&self.messages, user_id)
    }

    /// 429 with the wait until the user may send another typing event.
    pub fn check_typing(&self, user_id: &str) -> Result<(), ChatError> {
        self.check(&self.typing, user_id)
    }

    /// Forgets users whose buckets are full again, so the maps do not grow without bound.
    pub fn prune(&self) {
        self.messages.retain_recent();
        self.typing.retain_recent();
    }

    fn check(&self, limiter: &KeyedLimiter<C>, key: &str) -> Result<(), ChatError> {
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ChatError::RateLimited {
                retry_after_ms: wait.as_millis().max(1) as i64,
            }
        })
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
        assert!(limits.check_message("u1").is_ok());
        assert!(limits.check_message("u1").is_ok());
        match limits.check_message("u1") {
            Err(ChatError::RateLimited { retry_after_ms }) => assert_eq!(retry_after_ms, 30_000),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limits.check_message("u2").is_ok(), "limits are per user");
        assert!(
            limits.check_typing("u1").is_ok(),
            "typing has its own budget"
        );
        assert!(limits.check_typing("u1").is_err());

        clock.advance(std::time::Duration::from_secs(29));
        assert!(limits.check_message("u1").is_err(), "not yet");
        clock.advance(std::time::Duration::from_secs(1));
        assert!(
            limits.check_message("u1").is_ok(),
            "one message per 30 s refills"
        );
        assert!(limits.check_message("u1").is_err());
        limits.prune();
    }
}
