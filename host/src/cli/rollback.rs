//! `host rollback`: all of a deployed function's traffic back to one
//! revision.

use http::Method;

use super::admin_client::{AdminArgs, AdminClient, block_on};

/// Send all of a deployed function's traffic to a revision: the one named,
/// or the one before the revision serving most of it now.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The function.
    name: String,

    /// The revision to go back to (`hello-00002`).
    revision: Option<String>,

    #[command(flatten)]
    admin: AdminArgs,
}

impl RollbackArgs {
    /// Rolls back and prints where to.
    pub fn execute(self) -> anyhow::Result<()> {
        let client = AdminClient::new(&self.admin)?;
        let body = serde_json::json!({ "revision": self.revision });
        let path = format!("/v1/functions/{}/rollback", self.name);
        let answer = block_on(async move { client.send_json(Method::POST, &path, &body).await })?;
        println!(
            "function {}: all traffic to {}",
            self.name,
            answer["revision"].as_str().unwrap_or("?")
        );
        Ok(())
    }
}
