//! The engine's clock: what "now" is for everything the engine stores and compares (activity,
//! leases, idle sessions). Production reads the system clock; tests can make it follow tokio's
//! clock, so `tokio::time::pause()` and `advance()` move stored time too and timeouts are
//! tested without waiting.

use chrono::{NaiveDateTime, Utc};

#[derive(Debug, Clone)]
pub enum Clock {
    /// The system's UTC wall clock.
    System,
    /// The wall clock at creation plus tokio's elapsed time since.
    Tokio {
        wall: NaiveDateTime,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's (paused or not) from now on.
    pub fn following_tokio() -> Self {
        Self::Tokio {
            wall: Utc::now().naive_utc(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, UTC, as stored.
    pub fn now(&self) -> NaiveDateTime {
        match self {
            Self::System => Utc::now().naive_utc(),
            Self::Tokio { wall, start } => {
                *wall + chrono::Duration::from_std(start.elapsed()).unwrap_or(chrono::Duration::MAX)
            }
        }
    }
}
