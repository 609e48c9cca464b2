//! TLS at the edge (`[tls]`): `https://` and `wss://` on `http_addr` from a PEM certificate
//! chain and private key, reloaded without a restart.
//!
//! The certificate lives behind a resolver that every handshake asks, so a reload swaps it for
//! new connections while connections already open keep the one they started with. A reload
//! happens on SIGHUP and when either file's modification time changes (checked every
//! `tls.reload_interval_ms`). A reload that fails (a half-written file, a key that does not
//! match) keeps the certificate in use and says why in the log; the start, by contrast, fails
//! on any such error, naming the file.
//!
//! Only HTTP/1.1 is offered by ALPN: the server speaks HTTP/1.1 (see `server.rs`), and a
//! WebSocket over HTTP/2 needs extended CONNECT, which browsers use only where offered.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::config::TlsSettings;

/// Why a certificate or key cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_file {path:?}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("tls.key_file {path:?}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("tls: {0}")]
    Config(#[from] rustls::Error),
}

/// The edge's TLS: the acceptor its listener hands every connection to, and the resolver
/// behind it.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    resolver: Arc<Reloading>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.resolver.cert_file)
            .field("key_file", &self.resolver.key_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate and key named by `settings`; fails naming the file at fault.
    pub fn load(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
            return Ok(None);
        };
        let key = load(cert_file, key_file)?;
        let resolver = Arc::new(Reloading {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            stamps: RwLock::new(stamps(cert_file, key_file)),
            current: RwLock::new(Arc::new(key)),
        });
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
        }))
    }

    /// Reloads now: on success new handshakes get the new certificate; on failure the one in
    /// use stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.resolver.reload()
    }

    /// Reloads on SIGHUP and when a file changes (every `interval`; zero: SIGHUP only), until
    /// `stop`.
    pub fn spawn_reloader(&self, interval: Duration, stop: CancellationToken) {
        let tls = self.clone();
        // Listening before this returns: a SIGHUP right after start must not find the default
        // action (which ends the process).
        #[cfg(unix)]
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP: the TLS certificate reloads on file changes only");
                None
            }
        };
        tokio::spawn(async move {
            let mut ticks = (!interval.is_zero()).then(|| {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks
            });
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hangups.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                let tick = async {
                    match ticks.as_mut() {
                        Some(ticks) => ticks.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let why = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = hangup => "SIGHUP",
                    _ = tick => {
                        if !tls.resolver.changed() {
                            continue;
                        }
                        "a file changed"
                    }
                };
                match tls.reload() {
                    Ok(()) => {
                        metrics::counter!("chat_edge_tls_reloads_total", "result" => "ok")
                            .increment(1);
                        tracing::info!(reason = why, "TLS certificate reloaded");
                    }
                    Err(err) => {
                        metrics::counter!("chat_edge_tls_reloads_total", "result" => "error")
                            .increment(1);
                        tracing::warn!(reason = why, error = %err, "TLS certificate not reloaded: the one in use stays");
                    }
                }
            }
        });
    }
}

/// The certificate every handshake gets, swappable.
struct Reloading {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The files' modification times when last loaded (or last seen failing).
    stamps: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Reloading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl Reloading {
    /// Whether either file's modification time moved since the last look (a failed reload is
    /// not retried until a file changes again, or SIGHUP).
    fn changed(&self) -> bool {
        let now = stamps(&self.cert_file, &self.key_file);
        let mut seen = self
            .stamps
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }

    fn reload(&self) -> Result<(), TlsError> {
        *self
            .stamps
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            stamps(&self.cert_file, &self.key_file);
        let key = load(&self.cert_file, &self.key_file)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
        Ok(())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

/// Reads a PEM chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), and checks
/// that they belong together.
fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_file.to_owned(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key_file.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|err| cert_err(pem_reason(&err)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| cert_err(pem_reason(&err)))?;
    if chain.is_empty() {
        return Err(cert_err("holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|err| key_err(pem_reason(&err)))?;
    CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider()).map_err(|err| {
        key_err(format!(
            "cannot be used with the certificate of tls.cert_file: {err}"
        ))
    })
}

fn pem_reason(err: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match err {
        Error::Io(io) => format!("cannot be read: {io}"),
        Error::NoItemsFound => "holds no PEM item of the expected kind".into(),
        other => format!("is not valid PEM: {other:?}"),
    }
}
