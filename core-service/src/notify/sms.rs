//! Alerts as SMS through a Twilio-style HTTP API: a form POST of `From`, `To` and `Body` to
//! `{base_url}/2010-04-01/Accounts/{account}/Messages.json` with basic auth
//! `account:token`, one request per recipient.

use secrecy::{ExposeSecret, SecretString};

use super::alert::Alert;
use super::settings::SmsSettings;
use super::{DeliveryError, NotifyError};

pub struct Sms {
    client: reqwest::Client,
    url: String,
    account: String,
    token: SecretString,
    from: String,
}

impl Sms {
    pub fn new(settings: &SmsSettings) -> Result<Self, NotifyError> {
        let token = settings
            .token
            .clone()
            .ok_or_else(|| NotifyError("notify.sms.token: set CHAT_NOTIFY__SMS__TOKEN".into()))?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout())
            .connect_timeout(settings.timeout())
            .build()
            .map_err(|e| NotifyError(format!("notify.sms: HTTP client: {e}")))?;
        Ok(Self {
            client,
            url: settings.messages_url(),
            account: settings.account.clone(),
            token,
            from: settings.from.clone(),
        })
    }

    /// One try for one recipient; any 2xx is success.
    pub async fn send(
        &self,
        alert: &Alert,
        link: Option<&str>,
        to: &str,
    ) -> Result<(), DeliveryError> {
        let body = alert.sms_body(link);
        let response = self
            .client
            .post(&self.url)
            .basic_auth(&self.account, Some(self.token.expose_secret()))
            .form(&[("From", self.from.as_str()), ("To", to), ("Body", &body)])
            .send()
            .await
            .map_err(|err| classify(&err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let error = if status.as_u16() == 429 || status.is_server_error() {
            DeliveryError::retryable("status")
        } else {
            DeliveryError::permanent("status")
        };
        Err(error.with_status(Some(status.as_u16())))
    }
}

fn classify(err: &reqwest::Error) -> DeliveryError {
    if err.is_timeout() {
        DeliveryError::retryable("timeout")
    } else if err.is_connect() {
        DeliveryError::retryable("connection")
    } else if err.is_builder() {
        DeliveryError::permanent("request")
    } else {
        DeliveryError::retryable("network")
    }
}
