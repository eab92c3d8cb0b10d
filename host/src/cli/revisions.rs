//! `host revisions`: a deployed function's revisions and traffic.

use super::admin_client::{AdminArgs, AdminClient, block_on};

/// List a deployed function's revisions, with their traffic.
#[derive(Debug, clap::Args)]
pub struct RevisionsArgs {
    /// The function.
    name: String,

    #[command(flatten)]
    admin: AdminArgs,
}

impl RevisionsArgs {
    /// Prints one line per revision, oldest first.
    pub fn execute(self) -> anyhow::Result<()> {
        let client = AdminClient::new(&self.admin)?;
        let path = format!("/v1/functions/{}/revisions", self.name);
        let answer = block_on(async move { client.get(&path).await })?;
        println!(
            "{:<20} {:>7}  {:<22} {:<20} COMPONENT",
            "REVISION", "PERCENT", "CREATED", "PINNED"
        );
        for r in answer["revisions"].as_array().into_iter().flatten() {
            let pinned: Vec<&str> = r["pinned"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .collect();
            println!(
                "{:<20} {:>6}%  {:<22} {:<20} {}",
                r["revision"].as_str().unwrap_or("?"),
                r["percent"].as_u64().unwrap_or(0),
                r["created"].as_str().unwrap_or("?"),
                if pinned.is_empty() {
                    "-".to_owned()
                } else {
                    pinned.join(", ")
                },
                r["component"].as_str().unwrap_or("?"),
            );
        }
        Ok(())
    }
}
