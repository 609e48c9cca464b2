//! Operator notifications: help requests and critical errors (a model failing for too long,
//! the database unreachable) alerted by email ([`email`]) and SMS ([`sms`]).
//!
//! The [`Notifier`] never makes its caller wait: raising an alert checks the rate limits
//! ([`limiter`]) and puts it on a bounded queue with `try_send`; a full queue drops the alert
//! (logged and counted). One background task, owned by the notifier's `TaskTracker`, takes
//! alerts off the queue and starts one delivery per channel (and per SMS recipient), at most
//! `notify.max_in_flight` at once; each delivery retries with backoff on errors that may
//! pass. Shutdown ([`Notifier::shutdown`]) lets queued and running deliveries finish within
//! a grace period.
//!
//! Every outcome is counted in `chat_core_notifications_total{channel,outcome}` (`sent`,
//! `failed`, `rate_limited`, `dropped`), logged once with ids, channel and error kind (never
//! the alert's text, which holds the user's reason), and published as a [`Report`] to
//! [`Notifier::subscribe`]rs.
//!
//! With no channel configured (the default) the notifier is disabled: no task, every call a
//! no-op.

mod alert;
mod email;
mod failures;
mod limiter;
mod settings;
mod sms;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use alert::{Alert, AlertKind, rfc3339};
pub use limiter::{Limit, Limits};
pub use settings::{
    CHAT_ID_PLACEHOLDER, NotifyRetry, NotifySettings, SmsSettings, SmtpSecurity, SmtpSettings,
};

use email::Email;
use failures::Failures;
use sms::Sms;

/// Reports buffered per subscriber; a subscriber that lags misses the oldest.
const REPORT_BUFFER: usize = 256;
/// Alerts checked between two prunings of the per-key limiters.
const PRUNE_EVERY: u32 = 256;

/// A channel cannot be set up (bad address, TLS parameters); names the key to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// Why one try of a delivery failed: a kind (`timeout`, `connection`, `smtp_transient`,
/// `status`, ...), the SMTP or HTTP status when there was one, and whether to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryError {
    pub kind: &'static str,
    pub status: Option<u16>,
    pub retryable: bool,
}

impl DeliveryError {
    fn retryable(kind: &'static str) -> Self {
        Self {
            kind,
            status: None,
            retryable: true,
        }
    }

    fn permanent(kind: &'static str) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(kind)
        }
    }

    fn with_status(mut self, status: Option<u16>) -> Self {
        self.status = status;
        self
    }
}

/// Where an alert goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }
}

/// What became of an alert on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        attempts: u32,
    },
    Failed {
        attempts: u32,
        error: DeliveryError,
    },
    /// Held back by a limit, never queued.
    RateLimited(Limit),
    /// The queue was full (or closed for shutdown).
    Dropped,
}

impl Outcome {
    /// The `outcome` label of `chat_core_notifications_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Failed { .. } => "failed",
            Self::RateLimited(_) => "rate_limited",
            Self::Dropped => "dropped",
        }
    }
}

/// One outcome, as published to subscribers (ids only, no text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub alert: AlertKind,
    pub chat_id: Option<String>,
    pub channel: Channel,
    pub outcome: Outcome,
}

/// Raises alerts for operators. Cheap to clone; [`Notifier::default`] is disabled.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

/// The caller's side: limits, the queue's sending end, and what shutdown needs.
struct Inner {
    queue: mpsc::Sender<Alert>,
    channels: Vec<Channel>,
    limits: Limits,
    checked: AtomicU32,
    failures: Failures,
    reports: broadcast::Sender<Report>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// The delivering side, shared by the queue's task and the deliveries it starts.
struct Worker {
    email: Option<Email>,
    sms: Option<(Sms, Vec<String>)>,
    link: Option<String>,
    retry: NotifyRetry,
    in_flight: Arc<Semaphore>,
    reports: broadcast::Sender<Report>,
    tasks: TaskTracker,
}

/// One delivery: the email, or the SMS to one number.
enum Target {
    Email,
    Sms(String),
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the background task when a channel is configured (must run inside a tokio
    /// runtime); disabled otherwise. Fails on settings that do not validate or a channel that
    /// cannot be set up.
    pub fn start(settings: &NotifySettings) -> Result<Self, NotifyError> {
        if !settings.enabled() {
            return Ok(Self::disabled());
        }
        settings
            .validate()
            .map_err(|e| NotifyError(e.to_string()))?;
        let email = settings.smtp.as_ref().map(Email::new).transpose()?;
        let sms = match &settings.sms {
            Some(s) => Some((Sms::new(s)?, s.to.clone())),
            None => None,
        };
        let mut channels = Vec::new();
        if email.is_some() {
            channels.push(Channel::Email);
        }
        if sms.is_some() {
            channels.push(Channel::Sms);
        }
        let (queue, rx) = mpsc::channel(settings.queue_capacity);
        let (reports, _) = broadcast::channel(REPORT_BUFFER);
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let worker = Arc::new(Worker {
            email,
            sms,
            link: settings.session_link.clone(),
            retry: settings.retry.clone(),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            reports: reports.clone(),
            tasks: tasks.clone(),
        });
        tasks.spawn(worker.run(rx, stop.clone()));
        tracing::info!(
            channels = ?channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "operator notifications on"
        );
        Ok(Self {
            inner: Some(Arc::new(Inner {
                queue,
                channels,
                limits: Limits::new(settings),
                checked: AtomicU32::new(0),
                failures: Failures::new(Duration::from_secs(settings.provider_failure_secs)),
                reports,
                tasks,
                stop,
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A user asked for a human in `chat_id`. `reason` is the user's text: it goes into the
    /// alert and nowhere else.
    pub fn help_requested(&self, user_id: &str, chat_id: &str, reason: Option<&str>) {
        if let Some(inner) = &self.inner {
            inner.raise(Alert::HelpRequested {
                user_id: user_id.to_string(),
                chat_id: chat_id.to_string(),
                reason: reason.map(str::to_string),
                at: chrono::Utc::now(),
            });
        }
    }

    /// A reply from `model` failed (after its retries and fallbacks). Alerts once the model
    /// has been failing for `notify.provider_failure_secs`.
    pub fn model_failed(&self, model: &str, error_kind: &'static str) {
        let Some(inner) = &self.inner else { return };
        if let Some(since) = inner.failures.failed(model, tokio::time::Instant::now()) {
            inner.raise(Alert::ModelFailing {
                model: model.to_string(),
                error_kind,
                since,
                at: chrono::Utc::now(),
            });
        }
    }

    /// A reply from `model` succeeded: its failure clock starts again.
    pub fn model_succeeded(&self, model: &str) {
        if let Some(inner) = &self.inner {
            inner.failures.succeeded(model);
        }
    }

    /// The database stopped answering.
    pub fn database_unreachable(&self) {
        if let Some(inner) = &self.inner {
            inner.raise(Alert::DatabaseUnreachable {
                at: chrono::Utc::now(),
            });
        }
    }

    /// Every outcome from now on; `None` when disabled.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Report>> {
        self.inner.as_ref().map(|inner| inner.reports.subscribe())
    }

    /// Stops taking alerts and waits up to `grace` for queued and running deliveries.
    /// Returns whether everything finished; what is left is dropped with the runtime.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        inner.stop.cancel();
        inner.tasks.close();
        let finished = tokio::time::timeout(grace, inner.tasks.wait())
            .await
            .is_ok();
        if !finished {
            tracing::warn!("notifications still being delivered after the grace period");
        }
        finished
    }
}

impl Inner {
    /// Limits, then the queue; never waits.
    fn raise(&self, alert: Alert) {
        if self.checked.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limits.prune();
        }
        if let Err(limit) = self.limits.check(&alert) {
            for channel in &self.channels {
                report(&self.reports, &alert, *channel, Outcome::RateLimited(limit));
            }
            return;
        }
        if let Err(err) = self.queue.try_send(alert) {
            let alert = match err {
                mpsc::error::TrySendError::Full(alert)
                | mpsc::error::TrySendError::Closed(alert) => alert,
            };
            for channel in &self.channels {
                report(&self.reports, &alert, *channel, Outcome::Dropped);
            }
        }
    }
}

impl Worker {
    /// Serves the queue until shutdown, then starts what is still queued and returns (the
    /// deliveries it started run on, tracked).
    async fn run(self: Arc<Self>, mut queue: mpsc::Receiver<Alert>, stop: CancellationToken) {
        loop {
            let alert = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = queue.recv() => match next {
                    Some(alert) => alert,
                    None => return,
                },
            };
            self.dispatch(alert).await;
        }
        queue.close();
        while let Some(alert) = queue.recv().await {
            self.dispatch(alert).await;
        }
    }

    /// Starts one delivery per target, waiting for a free slot before each.
    async fn dispatch(self: &Arc<Self>, alert: Alert) {
        let alert = Arc::new(alert);
        let mut targets = Vec::new();
        if self.email.is_some() {
            targets.push(Target::Email);
        }
        if let Some((_, numbers)) = &self.sms {
            targets.extend(numbers.iter().cloned().map(Target::Sms));
        }
        for target in targets {
            let Ok(slot) = self.in_flight.clone().acquire_owned().await else {
                return;
            };
            let worker = self.clone();
            let alert = alert.clone();
            self.tasks.spawn(async move {
                worker.deliver(&target, &alert).await;
                drop(slot);
            });
        }
    }

    /// Tries until sent, a permanent error, or the attempts are used up; reports the outcome.
    async fn deliver(&self, target: &Target, alert: &Alert) {
        let channel = match target {
            Target::Email => Channel::Email,
            Target::Sms(_) => Channel::Sms,
        };
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(self.retry.base_delay_ms))
            .with_max_delay(Duration::from_millis(self.retry.max_delay_ms))
            .with_max_times(self.retry.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let attempts = AtomicU32::new(0);
        let attempt = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.send(target, alert)
        };
        let sent = attempt
            .retry(backoff)
            .when(|err: &DeliveryError| err.retryable)
            .notify(|err: &DeliveryError, delay: Duration| {
                tracing::debug!(
                    alert = alert.kind().as_str(),
                    chat = alert.chat_id(),
                    channel = channel.as_str(),
                    error_kind = err.kind,
                    status = err.status,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "notification attempt failed, retrying"
                );
            })
            .await;
        let attempts = attempts.load(Ordering::Relaxed);
        let outcome = match sent {
            Ok(()) => Outcome::Sent { attempts },
            Err(error) => Outcome::Failed { attempts, error },
        };
        report(&self.reports, alert, channel, outcome);
    }

    async fn send(&self, target: &Target, alert: &Alert) -> Result<(), DeliveryError> {
        let link = self.link.as_deref();
        match (target, &self.email, &self.sms) {
            (Target::Email, Some(email), _) => email.send(alert, link).await,
            (Target::Sms(to), _, Some((sms, _))) => sms.send(alert, link, to).await,
            // Targets are made from the configured channels only.
            _ => Err(DeliveryError::permanent("unconfigured")),
        }
    }
}

/// Counts, logs (ids, channel and error kind only) and publishes one outcome.
fn report(reports: &broadcast::Sender<Report>, alert: &Alert, channel: Channel, outcome: Outcome) {
    metrics::counter!(
        "chat_core_notifications_total",
        "channel" => channel.as_str(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
    let kind = alert.kind().as_str();
    let (chat, user, ch) = (alert.chat_id(), alert.user_id(), channel.as_str());
    match outcome {
        Outcome::Sent { attempts } => tracing::info!(
            alert = kind,
            chat,
            user,
            channel = ch,
            attempts,
            outcome = "sent",
            "notification sent"
        ),
        Outcome::Failed { attempts, error } => tracing::warn!(
            alert = kind,
            chat,
            user,
            channel = ch,
            attempts,
            outcome = "failed",
            error_kind = error.kind,
            status = error.status,
            "notification failed"
        ),
        Outcome::RateLimited(limit) => tracing::info!(
            alert = kind,
            chat,
            user,
            channel = ch,
            outcome = "rate_limited",
            limit = limit.as_str(),
            "notification rate limited, not sent"
        ),
        Outcome::Dropped => tracing::warn!(
            alert = kind,
            chat,
            user,
            channel = ch,
            outcome = "dropped",
            "notification queue full, alert dropped"
        ),
    }
    // No subscriber is the normal case.
    let _ = reports.send(Report {
        alert: alert.kind(),
        chat_id: alert.chat_id().map(str::to_string),
        channel,
        outcome,
    });
}
