//! Per-user rate limits, kept in the core so they hold across edges (and for internal services
//! that reach the core without an edge). Generic over the clock so tests move time by hand.
//!
//! One core decides with in-memory governors. With several cores (`[cluster]`) the budgets
//! are shared through Redis ([`crate::cluster::limits`]) once [`RateLimits::share`] is called;
//! while Redis does not answer, each core falls back to governors of its own holding the
//! budget divided by the number of live cores, so the cluster as a whole still grants about
//! one budget.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::error::ChatError;
use crate::cluster::limits::{SharedLimits, Spend};
use crate::config::ChatSettings;

type KeyedLimiter<C> =
    RateLimiter<String, HashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limiter per [`Rate`], indexed by `rate as usize`.
type Limiters<C> = [KeyedLimiter<C>; Rate::ALL.len()];

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
    /// The whole budget of each rate: what one core grants.
    limiters: Limiters<C>,
    /// `chat.*_per_minute`, indexed by `rate as usize`.
    per_minute: [u32; Rate::ALL.len()],
    clock: C,
    /// With a cluster: the budgets in Redis, and this core's share while Redis is away.
    shared: OnceLock<Shared<C>>,
}

struct Shared<C: Clock + Clone> {
    redis: Arc<SharedLimits>,
    /// The fallback governors, built for the live-core count they divide by (rebuilt when
    /// the count changes).
    fallback: Mutex<Option<(usize, Arc<Limiters<C>>)>>,
}

impl RateLimits<DefaultClock> {
    pub fn new(settings: &ChatSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(settings: &ChatSettings, clock: C) -> Self {
        let () = Rate::IN_ORDER;
        let per_minute = Rate::ALL.map(|rate| rate.per_minute(settings).max(1));
        Self {
            limiters: limiters(&per_minute, 1, &clock),
            per_minute,
            clock,
            shared: OnceLock::new(),
        }
    }

    /// From now on the budgets are the cluster's, kept in Redis (set once; later calls are
    /// ignored).
    pub fn share(&self, redis: Arc<SharedLimits>) {
        let _ = self.shared.set(Shared {
            redis,
            fallback: Mutex::new(None),
        });
    }

    /// Spends `n` of the user's `rate` budget, or answers 429 with the wait until it may.
    /// Spending is all or nothing: a refused batch spends none. With a cluster the budget is
    /// shared by every core; when Redis does not answer within its timeout this core decides
    /// alone, on its share of the budget.
    pub async fn check_n(&self, rate: Rate, user_id: &str, n: u32) -> Result<(), ChatError> {
        if n == 0 {
            return Ok(());
        }
        let Some(shared) = self.shared.get() else {
            return self.check_in(&self.limiters, rate, user_id, n);
        };
        let per_minute = self.per_minute[rate as usize];
        match shared
            .redis
            .spend(rate.as_str(), per_minute, user_id, n)
            .await
        {
            Some(Spend::Granted) => Ok(()),
            Some(Spend::Wait { retry_after_ms }) => Err(refused(rate, user_id, retry_after_ms)),
            None => {
                let fallback = self.fallback(shared);
                self.check_in(&fallback, rate, user_id, n)
            }
        }
    }

    /// Spends one of the user's `rate` budget, or answers 429 with the wait until it may.
    pub async fn check(&self, rate: Rate, user_id: &str) -> Result<(), ChatError> {
        self.check_n(rate, user_id, 1).await
    }

    /// The in-memory decision, on `limiters`.
    fn check_in(
        &self,
        limiters: &Limiters<C>,
        rate: Rate,
        user_id: &str,
        n: u32,
    ) -> Result<(), ChatError> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let limiter = &limiters[rate as usize];
        match limiter.check_key_n(&user_id.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(refused(rate, user_id, wait.as_millis().max(1) as i64))
            }
            // More than a whole minute's budget at once: never allowed.
            Err(_) => Err(refused(rate, user_id, 60_000)),
        }
    }

    /// This core's share of every budget while Redis is away: divided by the live cores.
    fn fallback(&self, shared: &Shared<C>) -> Arc<Limiters<C>> {
        let cores = shared.redis.live_cores();
        let mut fallback = shared.fallback.lock().unwrap_or_else(|p| p.into_inner());
        match &*fallback {
            Some((built_for, limiters)) if *built_for == cores => limiters.clone(),
            _ => {
                let limiters = Arc::new(limiters(&self.per_minute, cores, &self.clock));
                *fallback = Some((cores, limiters.clone()));
                limiters
            }
        }
    }

    /// Forgets users whose buckets are full again, so the maps do not grow without bound.
    pub fn prune(&self) {
        for limiter in &self.limiters {
            limiter.retain_recent();
        }
        let fallback = self
            .shared
            .get()
            .and_then(|s| s.fallback.lock().unwrap_or_else(|p| p.into_inner()).clone());
        for limiter in fallback.iter().flat_map(|(_, l)| l.iter()) {
            limiter.retain_recent();
        }
    }
}

/// Governors for every rate, each granting `per_minute / cores` (at least one) a minute.
fn limiters<C: Clock + Clone>(
    per_minute: &[u32; Rate::ALL.len()],
    cores: usize,
    clock: &C,
) -> Limiters<C> {
    let cores = u32::try_from(cores.max(1)).unwrap_or(u32::MAX);
    Rate::ALL.map(|rate| {
        let share = NonZeroU32::new(per_minute[rate as usize] / cores).unwrap_or(NonZeroU32::MIN);
        RateLimiter::hashmap_with_clock(Quota::per_minute(share), clock.clone())
    })
}

fn refused(rate: Rate, user_id: &str, retry_after_ms: i64) -> ChatError {
    tracing::info!(user = %user_id, limit = rate.as_str(), retry_after_ms, "rate limit hit");
    ChatError::RateLimited { retry_after_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_message_limit_answers_429_with_a_retry_time_and_refills_with_time() {
        let clock = governor::clock::FakeRelativeClock::default();
        let settings = ChatSettings {
            user_messages_per_minute: 2,
            typing_per_minute: 1,
            ..ChatSettings::default()
        };
        let limits = RateLimits::with_clock(&settings, clock.clone());
        assert!(limits.check(Rate::Message, "u1").await.is_ok());
        assert!(limits.check(Rate::Message, "u1").await.is_ok());
        match limits.check(Rate::Message, "u1").await {
            Err(ChatError::RateLimited { retry_after_ms }) => assert_eq!(retry_after_ms, 30_000),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(
            limits.check(Rate::Message, "u2").await.is_ok(),
            "limits are per user"
        );
        assert!(
            limits.check(Rate::Typing, "u1").await.is_ok(),
            "typing has its own budget"
        );
        assert!(limits.check(Rate::Typing, "u1").await.is_err());

        clock.advance(std::time::Duration::from_secs(29));
        assert!(limits.check(Rate::Message, "u1").await.is_err(), "not yet");
        clock.advance(std::time::Duration::from_secs(1));
        assert!(
            limits.check(Rate::Message, "u1").await.is_ok(),
            "one message per 30 s refills"
        );
        assert!(limits.check(Rate::Message, "u1").await.is_err());
        limits.prune();
    }

    #[tokio::test]
    async fn without_redis_a_core_of_a_cluster_grants_its_share_of_the_budget() {
        let clock = governor::clock::FakeRelativeClock::default();
        let settings = ChatSettings {
            user_messages_per_minute: 4,
            resumes_per_minute: 3,
            ..ChatSettings::default()
        };
        let limits = RateLimits::with_clock(&settings, clock.clone());
        limits.share(SharedLimits::unreachable(2));
        assert!(limits.check(Rate::Message, "u1").await.is_ok());
        assert!(limits.check(Rate::Message, "u1").await.is_ok());
        match limits.check(Rate::Message, "u1").await {
            Err(ChatError::RateLimited { retry_after_ms }) => assert_eq!(retry_after_ms, 30_000),
            other => panic!("two cores: half of 4 a minute, got {other:?}"),
        }
        // Half of 3 rounds down to 1 (never 0): a batch of 2 is more than that share.
        match limits.check_n(Rate::Resume, "u1", 2).await {
            Err(ChatError::RateLimited { retry_after_ms }) => assert_eq!(retry_after_ms, 60_000),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limits.check_n(Rate::Resume, "u1", 1).await.is_ok());
        assert!(limits.check_n(Rate::Resume, "u1", 0).await.is_ok());
        limits.prune();
    }
}
