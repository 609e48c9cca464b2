//! Subcommands, one per file, plus what they share: the [`Context`] of the operator commands
//! and the development secret.

pub mod dev;
pub mod encryption;
pub mod files;
pub mod health;
pub mod help_requests;
pub mod migrate;
pub mod sessions;
pub mod takeover;
pub mod token;
pub mod usage;
pub mod watch;

use std::path::Path;

use anyhow::Context as _;
use chat_auth::AuthSettings;

/// What every operator command gets: the core to ask and how to print.
pub struct Context {
    pub core: crate::client::Core,
    /// `--json`: print JSON (the admin REST routes' objects) instead of tables.
    pub json: bool,
}

/// The environment variable that holds the HS256 secret everywhere.
pub const SECRET_ENV: &str = "CHAT_AUTH__SECRET";

/// HS256 auth settings for local use: the secret from `CHAT_AUTH__SECRET`, else the one kept
/// in `<data_dir>/.jwt-secret` (created, random, on first use) so `chatctl dev` and
/// `chatctl token mint` agree without configuration.
/// A secret from the environment is used as given: one shorter than
/// [`chat_auth::MIN_HS256_SECRET_BYTES`] is refused when the verifier or minter is built, naming
/// the variable. A stored secret that short (an old data directory) is replaced by a new one.
pub fn dev_auth(data_dir: &Path) -> anyhow::Result<AuthSettings> {
    dev_auth_from(std::env::var(SECRET_ENV).ok(), data_dir)
}

fn dev_auth_from(env_secret: Option<String>, data_dir: &Path) -> anyhow::Result<AuthSettings> {
    if let Some(secret) = env_secret {
        return Ok(AuthSettings::hs256(secret));
    }
    let path = data_dir.join(".jwt-secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= chat_auth::MIN_HS256_SECRET_BYTES => s.trim().to_string(),
        _ => {
            // 64 hex digits: 32 bytes of text, 244 random bits.
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let secret = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            write_private(&path, &secret)?;
            secret
        }
    };
    Ok(AuthSettings::hs256(secret))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn the_generated_dev_secret_is_long_enough_and_a_short_stored_one_is_replaced() {
        let dir = std::env::temp_dir().join(format!("chatctl-test-{}", uuid::Uuid::new_v4()));
        let auth = dev_auth_from(None, &dir).expect("dev secret");
        assert!(chat_auth::Verifier::new(&auth).is_ok());
        assert!(chat_auth::Minter::new(&auth).is_ok());
        let stored = std::fs::read_to_string(dir.join(".jwt-secret")).expect("stored");
        assert!(
            stored.len() >= chat_auth::MIN_HS256_SECRET_BYTES,
            "{}",
            stored.len()
        );
        // The same secret on the next run (so minted tokens keep working)...
        let again = dev_auth_from(None, &dir).expect("dev secret");
        let same = |a: &AuthSettings| a.secret.as_ref().map(|s| s.expose_secret().to_string());
        assert_eq!(same(&auth), same(&again));
        // ...unless it is too short for HS256, then a new one.
        std::fs::write(dir.join(".jwt-secret"), "short-old-secret").expect("write");
        let renewed = dev_auth_from(None, &dir).expect("dev secret");
        assert!(chat_auth::Verifier::new(&renewed).is_ok());
        // A too-short secret from the environment is refused, naming the variable.
        let short = dev_auth_from(Some("sixteen-bytes-xx".into()), &dir).expect("settings");
        let err = chat_auth::Verifier::new(&short)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains(SECRET_ENV)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
