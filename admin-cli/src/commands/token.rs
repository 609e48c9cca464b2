//! `chatctl token mint`: sign a JWT for a user, an admin or a service.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chat_auth::{MintRequest, Minter};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print a signed token (HS256 with CHAT_AUTH__SECRET, else the dev secret in --data-dir).
    Mint(MintArgs),
}

#[derive(clap::Args)]
pub struct MintArgs {
    /// The user id (`sub`).
    #[arg(long)]
    user: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// A role (repeatable): `admin`, `service`, ...
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Lifetime: seconds, or with a unit: 30m, 12h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Where `chatctl dev` keeps its secret.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let Command::Mint(args) = cmd;
    let auth = super::dev_auth(&args.data_dir)?;
    let minter = Minter::new(&auth).context("cannot mint")?;
    let token = minter.mint(&MintRequest {
        user_id: args.user,
        name: args.name,
        roles: args.roles,
        ttl_secs: args.ttl.as_secs(),
    })?;
    println!("{token}");
    Ok(())
}

/// `3600`, `90s`, `30m`, `12h`, `7d`.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (digits, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 3600, 30m, 12h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{raw:?}: unit must be s, m, h or d")),
    };
    if secs == 0 || secs > 366 * 86_400 {
        return Err("ttl must be between 1 second and 366 days".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_with_units() {
        assert_eq!(parse_ttl("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("2d").ok(), Some(Duration::from_secs(172_800)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
