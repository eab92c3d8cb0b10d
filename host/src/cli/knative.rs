//! `host knative`: the YAML that runs a manifest's functions as one Knative
//! Service, the Istio VirtualService that sends the gateway's paths to it,
//! and the Knative Trigger that delivers a broker's events to it.

use std::path::PathBuf;

use anyhow::Context;

use crate::knative::{
    DEFAULT_BROKER, DEFAULT_CPU_REQUEST, DEFAULT_GATEWAY, DEFAULT_HOST, DEFAULT_MEMORY_LIMIT,
    DEFAULT_MEMORY_REQUEST, DEFAULT_NAMESPACE, DEFAULT_RUN_AS_USER, DnsLabel, Eventing, Events,
    Gateway, GatewayPrefix, ObjectName, Objects, Options, Quantity, Resources, Scaling,
    name_from_manifest_folder, read_as_text_by_kubernetes,
};
use crate::manifest::Manifest;
use crate::router::RoutePattern;

/// Write the Knative Service (and Istio VirtualService, Knative Trigger) for
/// a manifest.
#[derive(Debug, clap::Args)]
pub struct KnativeArgs {
    /// The manifest whose functions the image serves.
    manifest: PathBuf,

    /// The container image (built with the manifest at /shoal/shoal.toml).
    #[arg(long, value_name = "IMAGE", value_parser = text)]
    image: String,

    /// The Knative Service's name. Defaults to the manifest's folder name,
    /// made a DNS label (lowercase, other characters become `-`).
    #[arg(long, value_name = "NAME")]
    name: Option<DnsLabel>,

    /// The namespace of every object written.
    #[arg(long, value_name = "NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    namespace: DnsLabel,

    /// Requests one pod takes at once; 0 is unlimited. Defaults to the sum
    /// of the functions' `max_concurrency`, at most 1000 (Knative's
    /// default ceiling).
    #[arg(long, value_name = "N")]
    container_concurrency: Option<u32>,

    /// The longest request, in seconds. Defaults to the largest
    /// `queue_timeout` + `timeout` of the functions, rounded up.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_seconds: Option<u64>,

    /// Pods kept when there is no traffic. Defaults to 1 if a function has
    /// `min_instances` above 0, else 0.
    #[arg(long, value_name = "N")]
    min_scale: Option<u32>,

    /// The most pods; 0 is unlimited.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_scale: u32,

    /// Concurrent requests per pod the autoscaler aims at. Defaults to 70%
    /// of the container concurrency, or 100 when it is unlimited.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    target: Option<u32>,

    /// CPU requested for the container.
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_CPU_REQUEST)]
    cpu_request: Quantity,

    /// Memory requested for the container.
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_MEMORY_REQUEST)]
    memory_request: Quantity,

    /// CPU limit; none by default.
    #[arg(long, value_name = "QUANTITY")]
    cpu_limit: Option<Quantity>,

    /// Memory limit; the host sizes its memory budget from it.
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_MEMORY_LIMIT)]
    memory_limit: Quantity,

    /// The user id the container runs as (not root).
    #[arg(long, value_name = "UID", default_value_t = DEFAULT_RUN_AS_USER,
          value_parser = clap::value_parser!(u32).range(1..))]
    run_as_user: u32,

    /// Write a VirtualService serving each function's routes under this
    /// path prefix (e.g. `/faas/api`), and make the Service cluster-local.
    /// Without it, only the Service is written.
    #[arg(long, value_name = "PATH")]
    gateway_prefix: Option<GatewayPrefix>,

    /// The Istio gateway the VirtualService binds to; repeat for several.
    /// Default: knative-serving/knative-ingress-gateway.
    #[arg(
        long = "gateway",
        value_name = "NAMESPACE/NAME",
        requires = "gateway_prefix"
    )]
    gateways: Vec<String>,

    /// A host the VirtualService answers for; repeat for several.
    /// Default: `*`.
    #[arg(long = "host", value_name = "HOST", requires = "gateway_prefix", value_parser = text)]
    hosts: Vec<String>,

    /// One more route to send, written like a manifest route (`/x` or
    /// `/x/...`), for functions deployed to the running host; repeat for
    /// several.
    #[arg(long = "route", value_name = "ROUTE", requires = "gateway_prefix",
          value_parser = parse_route)]
    routes: Vec<RoutePattern>,

    /// The Knative Eventing broker whose events the Trigger takes (a
    /// Kubernetes object name: a-z, 0-9, `-` and `.`). A Trigger is written
    /// when some function declares `events`.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_BROKER)]
    broker: ObjectName,

    /// Have the Trigger take every event of the broker, not only those the
    /// manifest's functions take (for functions deployed to the running
    /// host); written even if no function declares `events`.
    #[arg(long)]
    all_events: bool,

    /// Write the YAML to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn parse_route(text: &str) -> Result<RoutePattern, String> {
    RoutePattern::try_from(text.to_owned())
}

/// Free text that will be written into the YAML as it is.
fn text(text: &str) -> Result<String, String> {
    read_as_text_by_kubernetes(text)?;
    Ok(text.to_owned())
}

impl KnativeArgs {
    /// Writes the YAML stream.
    pub fn execute(self) -> anyhow::Result<()> {
        let manifest = Manifest::load(&self.manifest)?;
        let name = match self.name {
            Some(name) => name,
            None => name_from_manifest_folder(&self.manifest).with_context(|| {
                format!(
                    "cannot make a Service name from the folder of {}: give one with --name",
                    self.manifest.display()
                )
            })?,
        };
        let or_default = |given: Vec<String>, default: &str| {
            if given.is_empty() {
                vec![default.to_owned()]
            } else {
                given
            }
        };
        let options = Options {
            name,
            namespace: self.namespace,
            image: self.image,
            scaling: Scaling {
                container_concurrency: self.container_concurrency,
                timeout_seconds: self.timeout_seconds,
                min_scale: self.min_scale,
                max_scale: self.max_scale,
                target: self.target,
            },
            resources: Resources {
                cpu_request: self.cpu_request,
                memory_request: self.memory_request,
                cpu_limit: self.cpu_limit,
                memory_limit: Some(self.memory_limit),
            },
            run_as_user: self.run_as_user,
            gateway: self.gateway_prefix.map(|prefix| Gateway {
                prefix,
                gateways: or_default(self.gateways, DEFAULT_GATEWAY),
                hosts: or_default(self.hosts, DEFAULT_HOST),
                extra_routes: self.routes,
            }),
            eventing: Eventing {
                broker: self.broker,
                events: if self.all_events {
                    Events::All
                } else {
                    Events::OfTheManifest
                },
            },
        };
        let yaml = Objects::new(&manifest, &options)
            .map_err(|why| anyhow::anyhow!("{}: {why}", self.manifest.display()))?
            .to_yaml()
            .context("cannot write the objects as YAML")?;
        match &self.out {
            Some(file) => std::fs::write(file, yaml)
                .with_context(|| format!("cannot write {}", file.display()))?,
            None => print!("{yaml}"),
        }
        Ok(())
    }
}
