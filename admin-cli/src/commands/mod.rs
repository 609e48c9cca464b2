//! Subcommands, one per file, plus what they share: the [`Context`] of the operator commands
//! and the development secret.

pub mod dev;
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
pub fn dev_auth(data_dir: &Path) -> anyhow::Result<AuthSettings> {
    if let Ok(secret) = std::env::var(SECRET_ENV) {
        return Ok(AuthSettings::hs256(secret));
    }
    let path = data_dir.join(".jwt-secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => s.trim().to_string(),
        _ => {
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
