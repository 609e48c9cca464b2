//! `chatctl files delete ID`: deletes an uploaded file now (`AdminService.DeleteFile`); its
//! download URLs answer 404 from then on.

use chat_proto::pb::admin as pb;

use super::Context;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Delete a file: its bytes and record go, its URLs answer 404.
    Delete {
        /// The file's id (the `id` of the upload, or of a message's attachment).
        id: String,
    },
}

pub async fn run(cmd: Command, cx: &Context) -> anyhow::Result<()> {
    let Command::Delete { id } = cmd;
    let session = cx.core.session().await?;
    session
        .admin()
        .delete_file(session.request(pb::DeleteFileRequest { id: id.clone() }))
        .await
        .map_err(|s| session.failure(&format!("deleting file {id}"), &s))?;
    if cx.json {
        output::print_json(&serde_json::json!({ "deleted": id }));
    } else {
        println!("deleted file {id}");
    }
    Ok(())
}
