//! The connection to the core: where it is, the operator's token on every call, and turning
//! whatever goes wrong into one line for the terminal with a distinct exit code
//! ([`exit`], documented in `chatctl --help` and the README).

use std::fmt;
use std::time::Duration;

use chat_proto::pb::admin::admin_service_client::AdminServiceClient;
use tonic::transport::{Channel, Endpoint};

/// The process exit codes, one per way a call can fail that a script may want to tell apart.
pub mod exit {
    /// Anything else (the message says what).
    pub const FAILED: u8 = 1;
    /// A bad flag or argument (clap's own code), or one the core rejected (INVALID_ARGUMENT).
    pub const USAGE: u8 = 2;
    /// The core cannot be reached at `--core`.
    pub const UNREACHABLE: u8 = 3;
    /// No token, or one the core does not accept (malformed, expired, wrong signature).
    pub const UNAUTHENTICATED: u8 = 4;
    /// A valid token without the `admin` role.
    pub const NOT_ADMIN: u8 = 5;
    /// `chatctl health`: the core answers but does not report SERVING.
    pub const NOT_SERVING: u8 = 6;
    /// The session or help request does not exist.
    pub const NOT_FOUND: u8 = 7;
    /// Someone else holds the session, or the help request is already resolved.
    pub const CONFLICT: u8 = 8;
}

/// A failure worth one line on stderr and a specific exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Where the core is and who is asking, from `--core`/`CHATCTL_CORE` and `--token`/`CHATCTL_TOKEN`.
pub struct Core {
    pub url: String,
    /// `--core-ca`: the CA of an https:// core.
    pub ca_file: Option<std::path::PathBuf>,
    pub token: Option<String>,
}

/// An open channel to the core and the caller's token, ready for admin calls.
pub struct Session {
    channel: Channel,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    url: String,
}

impl Core {
    /// Connects (failing fast with [`exit::UNREACHABLE`] when nothing answers).
    pub async fn channel(&self) -> Result<Channel, CliError> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|_| {
                CliError::new(
                    exit::USAGE,
                    format!(
                        "{:?} is not a core address (like http://127.0.0.1:50051)",
                        self.url
                    ),
                )
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let endpoint = match (&self.ca_file, self.url.starts_with("https://")) {
            (Some(path), true) => {
                let pem = std::fs::read(path).map_err(|err| {
                    CliError::new(
                        exit::USAGE,
                        format!("--core-ca {}: cannot be read: {err}", path.display()),
                    )
                })?;
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem));
                endpoint.tls_config(tls).map_err(|err| {
                    CliError::new(exit::USAGE, format!("--core-ca {}: {err}", path.display()))
                })?
            }
            (None, true) => {
                return Err(CliError::new(
                    exit::USAGE,
                    format!(
                        "{} is https://: give the CA of its certificate with --core-ca FILE or CHATCTL_CORE_CA",
                        self.url
                    ),
                ));
            }
            (Some(_), false) => {
                return Err(CliError::new(
                    exit::USAGE,
                    "--core-ca is for an https:// core address",
                ));
            }
            (None, false) => endpoint,
        };
        endpoint.connect().await.map_err(|err| {
            CliError::new(
                exit::UNREACHABLE,
                format!(
                    "cannot reach the core at {} ({}); is it running? Set --core or CHATCTL_CORE",
                    self.url,
                    root_cause(&err)
                ),
            )
        })
    }

    /// Connects and checks that a token was given ([`exit::UNAUTHENTICATED`] otherwise).
    pub async fn session(&self) -> Result<Session, CliError> {
        let token = self.token.as_deref().filter(|t| !t.trim().is_empty());
        let Some(token) = token else {
            return Err(CliError::new(
                exit::UNAUTHENTICATED,
                "no token: set CHATCTL_TOKEN or pass --token (an admin's JWT; `chatctl dev` \
                 prints an export line, `chatctl token mint --user NAME --role admin` mints one)",
            ));
        };
        let authorization = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            CliError::new(
                exit::UNAUTHENTICATED,
                "the token contains characters no JWT has (check CHATCTL_TOKEN / --token)",
            )
        })?;
        Ok(Session {
            channel: self.channel().await?,
            authorization,
            url: self.url.clone(),
        })
    }
}

impl Session {
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    /// `message` with the caller's `authorization` metadata.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// The one-line error for a failed call (`what` names it: "listing sessions").
    pub fn failure(&self, what: &str, status: &tonic::Status) -> CliError {
        failure(&self.url, what, status)
    }
}

/// A gRPC status as one line and an exit code.
pub fn failure(url: &str, what: &str, status: &tonic::Status) -> CliError {
    use tonic::Code;
    let message = status.message();
    let (code, text) = match status.code() {
        Code::Unavailable => (
            exit::UNREACHABLE,
            format!("{what}: the core at {url} is unavailable ({message})"),
        ),
        Code::Unauthenticated => (
            exit::UNAUTHENTICATED,
            format!(
                "{what}: the core refused the token ({message}); check CHATCTL_TOKEN or --token"
            ),
        ),
        Code::PermissionDenied => (
            exit::NOT_ADMIN,
            format!("{what}: the token is not an admin's ({message}); mint one with role admin"),
        ),
        Code::InvalidArgument | Code::OutOfRange => {
            let field = status
                .metadata()
                .get("x-field")
                .and_then(|v| v.to_str().ok())
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            (exit::USAGE, format!("{what}: {message}{field}"))
        }
        Code::NotFound => (exit::NOT_FOUND, format!("{what}: not found ({message})")),
        Code::AlreadyExists => (exit::CONFLICT, format!("{what}: {message}")),
        Code::Unimplemented => (
            exit::FAILED,
            format!("{what}: this core does not support the call yet ({message})"),
        ),
        other => (exit::FAILED, format!("{what}: {message} ({other:?})")),
    };
    CliError::new(code, text)
}

/// The innermost cause of a transport error ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
