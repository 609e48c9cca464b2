//! Which alerts may go: one help alert per chat per window, one alert per critical condition
//! (a model, the database) per window, and a ceiling on all alerts per hour. The per-key
//! limit is checked first, so repeats of one chat or condition never use up the global budget.
//! Generic over the clock so tests move time by hand.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::alert::Alert;
use super::settings::NotifySettings;

type Keyed<C> =
    RateLimiter<String, HashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Which limit held an alert back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// This chat (help) or this condition (critical) already alerted inside its window.
    PerKey,
    /// The hourly ceiling of all alerts.
    Global,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerKey => "per_key",
            Self::Global => "global",
        }
    }
}

pub struct Limits<C: Clock + Clone = DefaultClock> {
    help: Keyed<C>,
    critical: Keyed<C>,
    global: Direct<C>,
}

impl Limits<DefaultClock> {
    pub fn new(settings: &NotifySettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(settings: &NotifySettings, clock: C) -> Self {
        Self {
            help: RateLimiter::hashmap_with_clock(once_per(settings.help_window()), clock.clone()),
            critical: RateLimiter::hashmap_with_clock(
                once_per(settings.critical_window()),
                clock.clone(),
            ),
            global: RateLimiter::direct_with_clock(
                Quota::per_hour(
                    NonZeroU32::new(settings.alerts_per_hour).unwrap_or(NonZeroU32::MIN),
                ),
                clock,
            ),
        }
    }

    /// `Ok` when the alert may go (its place in each limit is then taken).
    pub fn check(&self, alert: &Alert) -> Result<(), Limit> {
        let keyed = match alert {
            Alert::HelpRequested { .. } => &self.help,
            Alert::ModelFailing { .. } | Alert::DatabaseUnreachable { .. } => &self.critical,
        };
        keyed
            .check_key(&alert.limit_key())
            .map_err(|_| Limit::PerKey)?;
        self.global.check().map_err(|_| Limit::Global)
    }

    /// Forgets keys whose windows have passed, so the maps do not grow without bound.
    pub fn prune(&self) {
        self.help.retain_recent();
        self.critical.retain_recent();
    }
}

/// One cell per `window`, no burst. Validation keeps the window above zero; a zero one would
/// fall back to one per second.
fn once_per(window: Duration) -> Quota {
    Quota::with_period(window)
        .or_else(|| Quota::with_period(Duration::from_secs(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn help(chat: &str) -> Alert {
        Alert::HelpRequested {
            user_id: "u".into(),
            chat_id: chat.into(),
            reason: None,
            at: chrono::Utc::now(),
        }
    }

    fn limits(alerts_per_hour: u32) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let settings = NotifySettings {
            help_per_chat_secs: 600,
            critical_every_secs: 900,
            alerts_per_hour,
            ..NotifySettings::default()
        };
        (Limits::with_clock(&settings, clock.clone()), clock)
    }

    #[test]
    fn one_help_alert_per_chat_per_window() {
        let (limits, clock) = limits(100);
        assert_eq!(limits.check(&help("a")), Ok(()));
        assert_eq!(limits.check(&help("a")), Err(Limit::PerKey));
        assert_eq!(
            limits.check(&help("b")),
            Ok(()),
            "another chat is its own key"
        );
        clock.advance(Duration::from_secs(599));
        assert_eq!(limits.check(&help("a")), Err(Limit::PerKey));
        clock.advance(Duration::from_secs(1));
        assert_eq!(limits.check(&help("a")), Ok(()), "the window has passed");
    }

    #[test]
    fn the_global_ceiling_holds_across_chats_and_refills_over_the_hour() {
        let (limits, clock) = limits(3);
        for chat in ["a", "b", "c"] {
            assert_eq!(limits.check(&help(chat)), Ok(()));
        }
        assert_eq!(limits.check(&help("d")), Err(Limit::Global));
        // 3 per hour refill one every 20 minutes.
        clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(limits.check(&help("e")), Ok(()));
        assert_eq!(limits.check(&help("f")), Err(Limit::Global));
    }

    #[test]
    fn repeats_of_one_key_do_not_use_up_the_global_budget() {
        let (limits, _clock) = limits(2);
        assert_eq!(limits.check(&help("a")), Ok(()));
        for _ in 0..10 {
            assert_eq!(limits.check(&help("a")), Err(Limit::PerKey));
        }
        assert_eq!(limits.check(&help("b")), Ok(()));
    }

    #[test]
    fn critical_conditions_have_their_own_window() {
        let (limits, clock) = limits(100);
        let db = Alert::DatabaseUnreachable {
            at: chrono::Utc::now(),
        };
        let model = |m: &str| Alert::ModelFailing {
            model: m.into(),
            error_kind: "status",
            since: chrono::Utc::now(),
            at: chrono::Utc::now(),
        };
        assert_eq!(limits.check(&db), Ok(()));
        assert_eq!(limits.check(&model("m1")), Ok(()));
        assert_eq!(limits.check(&model("m2")), Ok(()));
        assert_eq!(limits.check(&db), Err(Limit::PerKey));
        assert_eq!(limits.check(&model("m1")), Err(Limit::PerKey));
        clock.advance(Duration::from_secs(900));
        assert_eq!(limits.check(&db), Ok(()));
        limits.prune();
    }
}
