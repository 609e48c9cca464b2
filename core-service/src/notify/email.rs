//! Alerts as email over SMTP (lettre on tokio, rustls): plain, STARTTLS or implicit TLS,
//! optional login. One message per alert to every configured recipient.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use super::alert::Alert;
use super::settings::{SmtpSecurity, SmtpSettings};
use super::{DeliveryError, NotifyError};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: std::time::Duration,
}

impl Email {
    /// Builds the transport (no connection yet). Fails on addresses that do not parse or TLS
    /// parameters that cannot be built.
    pub fn new(settings: &SmtpSettings) -> Result<Self, NotifyError> {
        let bad = |what: &str| NotifyError(format!("notify.smtp.{what}"));
        let from = settings
            .from
            .parse::<Mailbox>()
            .map_err(|e| bad(&format!("from: {e}")))?;
        let to = settings
            .to
            .iter()
            .map(|to| to.parse::<Mailbox>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&format!("to: {e}")))?;
        let host = settings.host.as_str();
        let builder = match settings.security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| bad(&format!("security: {e}")))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| bad(&format!("security: {e}")))?,
        };
        let mut builder = builder
            .port(settings.port)
            .timeout(Some(settings.timeout()));
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
            timeout: settings.timeout(),
        })
    }

    /// The alert as a plain-text message.
    pub fn message(&self, alert: &Alert, link: Option<&str>) -> Result<Message, DeliveryError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(alert.email_body(link))
            .map_err(|_| DeliveryError::permanent("message"))
    }

    /// One try. lettre's own timeout covers the connect only, so the whole exchange is
    /// bounded here too (a server that accepts and never answers ends as `timeout`).
    pub async fn send(&self, alert: &Alert, link: Option<&str>) -> Result<(), DeliveryError> {
        let message = self.message(alert, link)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(DeliveryError::retryable("timeout")),
            Ok(Err(err)) => Err(classify(&err)),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// The kind of an SMTP failure and whether another try may pass. The error's text is not
/// kept: a server may quote what it was sent.
fn classify(err: &lettre::transport::smtp::Error) -> DeliveryError {
    if err.is_timeout() {
        DeliveryError::retryable("timeout")
    } else if err.is_transient() {
        DeliveryError::retryable("smtp_transient").with_status(err.status().map(code))
    } else if err.is_permanent() {
        DeliveryError::permanent("smtp_permanent").with_status(err.status().map(code))
    } else if err.is_tls() {
        DeliveryError::permanent("tls")
    } else if err.is_client() {
        DeliveryError::permanent("client")
    } else if err.is_response() {
        DeliveryError::retryable("response")
    } else {
        // Connection refused or reset, name resolution, the transport shutting down.
        DeliveryError::retryable("connection")
    }
}

fn code(code: lettre::transport::smtp::response::Code) -> u16 {
    code.to_string().parse().unwrap_or(0)
}
