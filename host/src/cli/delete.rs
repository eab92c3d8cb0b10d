//! `host delete`: take a deployed function out of a running host.

use http::Method;

use super::admin_client::{AdminArgs, AdminClient, block_on, empty};

/// Take a function deployed through the admin API out, with its revisions.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The function.
    name: String,

    #[command(flatten)]
    admin: AdminArgs,
}

impl DeleteArgs {
    /// Deletes and says so.
    pub fn execute(self) -> anyhow::Result<()> {
        let client = AdminClient::new(&self.admin)?;
        let path = format!("/v1/functions/{}", self.name);
        block_on(async move { client.send(Method::DELETE, &path, None, empty()).await })?;
        println!("function {} deleted", self.name);
        Ok(())
    }
}
