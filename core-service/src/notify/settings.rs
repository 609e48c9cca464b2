//! The `[notify]` table: where operator alerts go (`[notify.smtp]`, `[notify.sms]`), how
//! often they may go (per chat, per critical condition, in all), and how delivery retries.
//! Nothing configured means notifications are off. The SMTP password and the SMS token are
//! secrets: like `auth.secret` they are meant to come only from the environment
//! (`CHAT_NOTIFY__SMTP__PASSWORD`, `CHAT_NOTIFY__SMS__TOKEN`) and are never logged.

use std::time::Duration;

use chat_runtime::InvalidSetting;
use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::Deserialize;

/// The placeholder of [`NotifySettings::session_link`] replaced by the chat id.
pub const CHAT_ID_PLACEHOLDER: &str = "{chatId}";

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    /// The link to a session put into help alerts, `{chatId}` replaced by the chat id, e.g.
    /// `http://127.0.0.1:8080/admin/#/sessions/{chatId}`. Unset: alerts carry no link.
    pub session_link: Option<String>,
    /// Alerts waiting for delivery; one more is dropped (logged and counted), never waited for.
    pub queue_capacity: usize,
    /// Deliveries running at once (each channel of each alert is one).
    pub max_in_flight: usize,
    /// At most one help alert per chat in this window.
    pub help_per_chat_secs: u64,
    /// At most one alert per critical condition (one model failing, the database) in this window.
    pub critical_every_secs: u64,
    /// At most this many alerts of every kind together per hour.
    pub alerts_per_hour: u32,
    /// A model whose replies keep failing for this long raises an alert; a reply that
    /// succeeds starts the clock again. 0 alerts on the first failure.
    pub provider_failure_secs: u64,
    pub retry: NotifyRetry,
    /// Email over SMTP; unset sends no email.
    pub smtp: Option<SmtpSettings>,
    /// SMS through a Twilio-style HTTP API; unset sends no SMS.
    pub sms: Option<SmsSettings>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            session_link: None,
            queue_capacity: 64,
            max_in_flight: 4,
            help_per_chat_secs: 600,
            critical_every_secs: 900,
            alerts_per_hour: 20,
            provider_failure_secs: 300,
            retry: NotifyRetry::default(),
            smtp: None,
            sms: None,
        }
    }
}

/// Retries of one delivery, with exponential backoff and jitter, on errors that may pass
/// (connection failures, timeouts, SMTP 4xx, HTTP 429 and 5xx); others fail at once.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyRetry {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for NotifyRetry {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay_ms: 1_000,
            max_delay_ms: 30_000,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on the same host or network).
    #[default]
    None,
    /// Plain connect, then STARTTLS, required (typically port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, typically port 465).
    Tls,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The sender, `alerts@example.com` or `Chat alerts <alerts@example.com>`.
    pub from: String,
    /// Recipients, at least one (a list, or in the environment `a@x.com,b@x.com`).
    #[serde(deserialize_with = "list_or_commas")]
    pub to: Vec<String>,
    /// Login user, when the server wants one (the password then comes from
    /// `CHAT_NOTIFY__SMTP__PASSWORD`).
    pub user: Option<String>,
    /// Environment only: `CHAT_NOTIFY__SMTP__PASSWORD`.
    pub password: Option<SecretString>,
    /// Limit of each SMTP command (connect included).
    pub timeout_ms: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 25,
            security: SmtpSecurity::None,
            from: String::new(),
            to: Vec::new(),
            user: None,
            password: None,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsSettings {
    /// The API's root; messages are posted to
    /// `{base_url}/2010-04-01/Accounts/{account}/Messages.json`.
    pub base_url: String,
    /// Account id (also the basic-auth user).
    pub account: String,
    /// Sending number, `+15550100`.
    pub from: String,
    /// Recipients' numbers, at least one; one message each (a list, or in the environment
    /// `+15550199,+15550198`).
    #[serde(deserialize_with = "list_or_commas")]
    pub to: Vec<String>,
    /// Environment only: `CHAT_NOTIFY__SMS__TOKEN` (the basic-auth password).
    pub token: Option<SecretString>,
    /// Limit of each request.
    pub timeout_ms: u64,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.twilio.com".into(),
            account: String::new(),
            from: String::new(),
            to: Vec::new(),
            token: None,
            timeout_ms: 10_000,
        }
    }
}

impl NotifySettings {
    /// Keys whose environment variables are read as written (the loader would otherwise make
    /// `0123` a number and drop the `+` of `+15550100`). The recipient lists are also
    /// accepted there as one comma-separated string.
    pub const VERBATIM_KEYS: &'static [&'static str] = &[
        "notify.smtp.user",
        "notify.smtp.password",
        "notify.smtp.from",
        "notify.smtp.to",
        "notify.sms.account",
        "notify.sms.from",
        "notify.sms.to",
        "notify.sms.token",
    ];

    /// Whether any channel is configured.
    pub fn enabled(&self) -> bool {
        self.smtp.is_some() || self.sms.is_some()
    }

    pub fn help_window(&self) -> Duration {
        Duration::from_secs(self.help_per_chat_secs)
    }

    pub fn critical_window(&self) -> Duration {
        Duration::from_secs(self.critical_every_secs)
    }

    /// Checks ranges and addresses; the first problem found is returned, naming its key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = "must be greater than 0";
        if let Some(link) = &self.session_link {
            InvalidSetting::check(
                link.contains(CHAT_ID_PLACEHOLDER),
                "notify.session_link",
                "must contain {chatId}",
            )?;
        }
        InvalidSetting::check(self.queue_capacity > 0, "notify.queue_capacity", positive)?;
        InvalidSetting::check(self.max_in_flight > 0, "notify.max_in_flight", positive)?;
        InvalidSetting::check(
            self.help_per_chat_secs > 0,
            "notify.help_per_chat_secs",
            positive,
        )?;
        InvalidSetting::check(
            self.critical_every_secs > 0,
            "notify.critical_every_secs",
            positive,
        )?;
        InvalidSetting::check(self.alerts_per_hour > 0, "notify.alerts_per_hour", positive)?;
        InvalidSetting::check(
            self.retry.max_attempts > 0,
            "notify.retry.max_attempts",
            positive,
        )?;
        InvalidSetting::check(
            self.retry.base_delay_ms <= self.retry.max_delay_ms,
            "notify.retry.base_delay_ms",
            "must not exceed notify.retry.max_delay_ms",
        )?;
        if let Some(smtp) = &self.smtp {
            smtp.validate()?;
        }
        if let Some(sms) = &self.sms {
            sms.validate()?;
        }
        Ok(())
    }
}

impl SmtpSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::check(
            !self.host.trim().is_empty(),
            "notify.smtp.host",
            "is required",
        )?;
        InvalidSetting::check(self.port > 0, "notify.smtp.port", "must be greater than 0")?;
        InvalidSetting::check(
            self.from.parse::<Mailbox>().is_ok(),
            "notify.smtp.from",
            "must be an email address",
        )?;
        InvalidSetting::check(
            !self.to.is_empty(),
            "notify.smtp.to",
            "needs at least one address",
        )?;
        InvalidSetting::check(
            self.to.iter().all(|to| to.parse::<Mailbox>().is_ok()),
            "notify.smtp.to",
            "must hold email addresses",
        )?;
        InvalidSetting::check(
            self.password.is_none() || self.user.is_some(),
            "notify.smtp.user",
            "is required when CHAT_NOTIFY__SMTP__PASSWORD is set",
        )?;
        InvalidSetting::check(
            self.user.is_none() || self.password.is_some(),
            "notify.smtp.password",
            "is required with notify.smtp.user: set CHAT_NOTIFY__SMTP__PASSWORD",
        )?;
        InvalidSetting::check(
            self.timeout_ms > 0,
            "notify.smtp.timeout_ms",
            "must be greater than 0",
        )
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl SmsSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::check(
            self.base_url.starts_with("http://") || self.base_url.starts_with("https://"),
            "notify.sms.base_url",
            "must be an http:// or https:// URL",
        )?;
        InvalidSetting::check(
            !self.account.is_empty()
                && self
                    .account
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "notify.sms.account",
            "is required (letters, digits, - and _)",
        )?;
        InvalidSetting::check(!self.from.is_empty(), "notify.sms.from", "is required")?;
        InvalidSetting::check(
            !self.to.is_empty(),
            "notify.sms.to",
            "needs at least one number",
        )?;
        InvalidSetting::check(
            self.token.is_some(),
            "notify.sms.token",
            "is required: set CHAT_NOTIFY__SMS__TOKEN",
        )?;
        InvalidSetting::check(
            self.timeout_ms > 0,
            "notify.sms.timeout_ms",
            "must be greater than 0",
        )
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Where messages are posted.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url.trim_end_matches('/'),
            self.account
        )
    }
}

/// A list of strings, or one string of comma-separated items.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Items::deserialize(de)? {
        Items::List(items) => items,
        Items::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp() -> SmtpSettings {
        SmtpSettings {
            host: "mail.example.com".into(),
            from: "Alerts <alerts@example.com>".into(),
            to: vec!["ops@example.com".into()],
            ..SmtpSettings::default()
        }
    }

    fn sms() -> SmsSettings {
        SmsSettings {
            account: "AC123".into(),
            from: "+15550100".into(),
            to: vec!["+15550199".into()],
            token: Some(SecretString::from("token")),
            ..SmsSettings::default()
        }
    }

    fn error(settings: &NotifySettings) -> String {
        settings
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn nothing_configured_is_off_and_valid() {
        let settings = NotifySettings::default();
        assert!(!settings.enabled());
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn each_bad_value_is_named() {
        let mut s = NotifySettings {
            smtp: Some(smtp()),
            sms: Some(sms()),
            ..NotifySettings::default()
        };
        assert!(s.enabled());
        assert!(s.validate().is_ok());

        s.session_link = Some("http://admin/sessions".into());
        assert!(error(&s).contains("notify.session_link"));
        s.session_link = Some("http://admin/#/sessions/{chatId}".into());
        assert!(s.validate().is_ok());

        let mut bad = s.clone();
        bad.alerts_per_hour = 0;
        assert!(error(&bad).contains("notify.alerts_per_hour"));

        let mut bad = s.clone();
        bad.smtp = Some(SmtpSettings {
            to: vec!["not an address".into()],
            ..smtp()
        });
        assert!(error(&bad).contains("notify.smtp.to"));

        let mut bad = s.clone();
        bad.smtp = Some(SmtpSettings {
            user: Some("alerts".into()),
            ..smtp()
        });
        assert!(error(&bad).contains("CHAT_NOTIFY__SMTP__PASSWORD"));

        let mut bad = s.clone();
        bad.sms = Some(SmsSettings {
            token: None,
            ..sms()
        });
        assert!(error(&bad).contains("CHAT_NOTIFY__SMS__TOKEN"));

        let mut bad = s;
        bad.sms = Some(SmsSettings {
            account: "../x".into(),
            ..sms()
        });
        assert!(error(&bad).contains("notify.sms.account"));
    }

    #[test]
    fn secrets_come_from_the_environment_beside_the_file() {
        use secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("core.toml");
        std::fs::write(
            &path,
            "[notify]\nalerts_per_hour = 5\n[notify.smtp]\nhost = \"mail.example.com\"\n\
             port = 587\nsecurity = \"starttls\"\nfrom = \"alerts@example.com\"\n\
             to = [\"ops@example.com\", \"oncall@example.com\"]\nuser = \"alerts\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let env = [
            ("CHAT_AUTH__SECRET", "a-secret-of-at-least-thirty-two-bytes"),
            ("CHAT_NOTIFY__SMTP__PASSWORD", "12345678"),
            ("CHAT_NOTIFY__SMS__ACCOUNT", "AC1"),
            ("CHAT_NOTIFY__SMS__FROM", "+15550100"),
            ("CHAT_NOTIFY__SMS__TO", "+15550199, +15550198"),
            ("CHAT_NOTIFY__SMS__TOKEN", "tok"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let settings =
            crate::Settings::load_from(Some(&path), env).unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.validate().is_ok());
        let notify = &settings.notify;
        assert_eq!(notify.alerts_per_hour, 5);
        let smtp = notify.smtp.as_ref().unwrap_or_else(|| panic!("smtp"));
        assert_eq!(smtp.security, SmtpSecurity::Starttls);
        assert_eq!(smtp.to.len(), 2);
        assert_eq!(
            smtp.password
                .as_ref()
                .map(|p| p.expose_secret().to_string()),
            Some("12345678".into()),
            "a password of digits stays a string"
        );
        let sms = notify.sms.as_ref().unwrap_or_else(|| panic!("sms"));
        assert_eq!(sms.base_url, "https://api.twilio.com");
        assert_eq!(sms.from, "+15550100");
        assert_eq!(sms.to, ["+15550199", "+15550198"]);
        assert!(
            !format!("{settings:?}").contains("12345678"),
            "secrets never show"
        );
    }

    #[test]
    fn the_example_file_shows_the_notify_defaults() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/core.example.toml"
        ));
        let settings =
            crate::Settings::load_from(Some(path), Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let (file, defaults) = (settings.notify, NotifySettings::default());
        assert!(!file.enabled(), "the example sends nothing");
        assert_eq!(file.queue_capacity, defaults.queue_capacity);
        assert_eq!(file.max_in_flight, defaults.max_in_flight);
        assert_eq!(file.help_per_chat_secs, defaults.help_per_chat_secs);
        assert_eq!(file.critical_every_secs, defaults.critical_every_secs);
        assert_eq!(file.alerts_per_hour, defaults.alerts_per_hour);
        assert_eq!(file.provider_failure_secs, defaults.provider_failure_secs);
        assert_eq!(file.retry.max_attempts, defaults.retry.max_attempts);
        assert_eq!(file.retry.base_delay_ms, defaults.retry.base_delay_ms);
        assert_eq!(file.retry.max_delay_ms, defaults.retry.max_delay_ms);
    }

    #[test]
    fn the_messages_url_follows_the_twilio_layout() {
        let s = SmsSettings {
            base_url: "http://127.0.0.1:9/".into(),
            ..sms()
        };
        assert_eq!(
            s.messages_url(),
            "http://127.0.0.1:9/2010-04-01/Accounts/AC123/Messages.json"
        );
    }
}
