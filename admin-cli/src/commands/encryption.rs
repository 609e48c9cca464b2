//! `chatctl encryption reencrypt`: after a key rotation, rewrites everything stored under
//! the core's current key (`AdminService.Reencrypt`), on the live system, and prints per
//! part how many were looked at, rewritten and could not be read. Safe to run again: an
//! interrupted run resumes, what is under the current key is skipped.

use chat_proto::pb::admin as pb;

use super::Context;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Re-encrypt message text, replies in progress, context documents, help reasons and
    /// files under the current key (the first of CHAT_ENCRYPTION__KEYS on the core).
    Reencrypt {
        /// Rows read per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
    },
}

pub async fn run(cmd: Command, cx: &Context) -> anyhow::Result<()> {
    let Command::Reencrypt { batch_size } = cmd;
    let session = cx.core.session().await?;
    let done = session
        .admin()
        .reencrypt(session.request(pb::ReencryptRequest { batch_size }))
        .await
        .map_err(|s| session.failure("re-encrypting", &s))?
        .into_inner();
    let failed: u64 = done.parts.iter().map(|p| p.failed).sum();
    if cx.json {
        output::print_json(&serde_json::json!({
            "keyId": done.key_id,
            "parts": done.parts.iter().map(|p| serde_json::json!({
                "part": p.part,
                "scanned": p.scanned,
                "rewritten": p.rewritten,
                "failed": p.failed,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!("re-encrypted under key {}", done.key_id);
        println!(
            "{:<26} {:>10} {:>10} {:>8}",
            "part", "scanned", "rewritten", "failed"
        );
        for p in &done.parts {
            println!(
                "{:<26} {:>10} {:>10} {:>8}",
                p.part, p.scanned, p.rewritten, p.failed
            );
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} rows or files could not be read and were left as they were (the core's log \
             names each); add their keys back to CHAT_ENCRYPTION__KEYS and run it again"
        );
    }
    Ok(())
}
