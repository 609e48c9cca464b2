//! `chatctl migrate`: run the embedded migrations against a database.

use chat_core::storage::Db;

#[derive(clap::Args)]
pub struct Args {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    #[arg(
        long,
        env = "CHAT_DATABASE__URL",
        default_value = "sqlite://data/chat.db"
    )]
    database_url: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = Db::connect(&args.database_url, 1).await?;
    db.migrate().await?;
    println!("migrations applied ({})", db.backend());
    Ok(())
}
