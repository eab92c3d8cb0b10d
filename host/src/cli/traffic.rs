//! `host traffic`: split a deployed function's traffic between its
//! revisions, and pin requests that carry a header to one.

use http::Method;

use super::admin_client::{AdminArgs, AdminClient, block_on};

/// Split a deployed function's traffic between revisions (the percents
/// must add up to 100), and pin requests carrying a header value to one.
#[derive(Debug, clap::Args)]
pub struct TrafficArgs {
    /// The function.
    name: String,

    /// A revision and its percent of the requests: `hello-00002=10`.
    #[arg(value_name = "REVISION=PERCENT", required = true, value_parser = parse_share)]
    split: Vec<(String, u8)>,

    /// Requests with this header value go to this revision, whatever the
    /// split: `x-canary=true=hello-00003`. Repeat for more.
    #[arg(long = "pin", value_name = "HEADER=VALUE=REVISION", value_parser = parse_pin)]
    pins: Vec<(String, String, String)>,

    #[command(flatten)]
    admin: AdminArgs,
}

impl TrafficArgs {
    /// Sets the traffic and prints it.
    pub fn execute(self) -> anyhow::Result<()> {
        let client = AdminClient::new(&self.admin)?;
        let split: serde_json::Map<String, serde_json::Value> = self
            .split
            .iter()
            .map(|(revision, percent)| (revision.clone(), (*percent).into()))
            .collect();
        let pins: Vec<serde_json::Value> = self
            .pins
            .iter()
            .map(|(header, value, revision)| {
                serde_json::json!({ "header": header, "value": value, "revision": revision })
            })
            .collect();
        let body = serde_json::json!({ "split": split, "pins": pins });
        let path = format!("/v1/functions/{}/traffic", self.name);
        let answer = block_on(async move { client.send_json(Method::PUT, &path, &body).await })?;
        println!("function {}: traffic {}", self.name, answer["traffic"]);
        Ok(())
    }
}

fn parse_share(text: &str) -> Result<(String, u8), String> {
    let (revision, percent) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not REVISION=PERCENT"))?;
    let percent = percent
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{percent}` is not a percent"))?;
    Ok((revision.to_owned(), percent))
}

fn parse_pin(text: &str) -> Result<(String, String, String), String> {
    let mut parts = text.splitn(3, '=');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(value), Some(revision)) if !header.is_empty() => {
            Ok((header.to_owned(), value.to_owned(), revision.to_owned()))
        }
        _ => Err(format!("`{text}` is not HEADER=VALUE=REVISION")),
    }
}
