//! `host functions`: the functions a running host serves.

use super::admin_client::{AdminArgs, AdminClient, block_on};

/// List the functions a running host serves.
#[derive(Debug, clap::Args)]
pub struct FunctionsArgs {
    #[command(flatten)]
    admin: AdminArgs,
}

impl FunctionsArgs {
    /// Prints one line per function.
    pub fn execute(self) -> anyhow::Result<()> {
        let client = AdminClient::new(&self.admin)?;
        let functions = block_on(async move { client.get("/v1/functions").await })?;
        println!(
            "{:<24} {:<9} {:<18} {:<10} ROUTES",
            "NAME", "SOURCE", "REVISION", "STATE"
        );
        for f in functions.as_array().into_iter().flatten() {
            let routes: Vec<&str> = f["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            println!(
                "{:<24} {:<9} {:<18} {:<10} {}",
                f["name"].as_str().unwrap_or("?"),
                f["source"].as_str().unwrap_or("?"),
                f["revision"].as_str().unwrap_or("-"),
                f["state"].as_str().unwrap_or("?"),
                routes.join(" ")
            );
        }
        Ok(())
    }
}
