//! The Kubernetes objects that run a manifest's functions as one Knative
//! Service behind Istio, and deliver their events from a Knative Eventing
//! broker (`host knative`).
//!
//! Design note. The whole host is one Knative Service ([`service`]): one
//! revision serves every function, Knative scales its pods, and the host
//! routes inside the pod. With a gateway prefix, one Istio VirtualService
//! ([`istio`]) sends each function's routes under that prefix to the
//! Service through Knative's cluster-local gateway, and the Service is made
//! cluster-local, so the VirtualService is the only way in.
//!
//! Likewise one Trigger ([`trigger`]) takes every event some function
//! takes, and the host's trigger table chooses the function.
//!
//! The VirtualService only sends; the host's router still chooses the
//! function. Every match strips the same gateway prefix and goes to the
//! same place, so the order of the matches never changes which function
//! serves a request, and a route the VirtualService lets through that no
//! function serves is the host's 404, as it would be without the mesh.
//!
//! What is derived from the manifest (each overridable):
//! - `containerConcurrency`: the sum of the functions' `max_concurrency`,
//!   capped at Knative's default ceiling ([`KNATIVE_MAX_CONTAINER_CONCURRENCY`]).
//!   Knative's queue-proxy then never holds back a request that some
//!   function could run at once, while each function's own gate keeps its
//!   limit.
//! - `timeoutSeconds`: the longest a request may take, its function's
//!   `queue_timeout` plus its `timeout`, over all functions, rounded up, so
//!   that the host, not Knative, ends a slow request with its own answer.
//! - `min-scale`: 1 when a function asks to be kept warm
//!   (`min_instances > 0`), else 0 (scale to zero).
//! - `target`: 70% of `containerConcurrency`, as Knative would derive it,
//!   or Knative's default of 100 when concurrency is unlimited.

pub mod istio;
pub mod service;
pub mod trigger;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::manifest::Manifest;
use crate::router::RoutePattern;

pub use istio::VirtualService;
pub use service::Service;
pub use trigger::Trigger;

/// The largest `containerConcurrency` Knative accepts unless its
/// `config-defaults` raise `container-concurrency-max-limit`.
pub const KNATIVE_MAX_CONTAINER_CONCURRENCY: u32 = 1000;

/// Knative's soft concurrency target when `containerConcurrency` is 0.
pub const KNATIVE_DEFAULT_TARGET: u32 = 100;

/// The share of `containerConcurrency` the autoscaler aims at, in percent
/// (Knative's `container-concurrency-target-percentage`).
pub const TARGET_PERCENTAGE: u32 = 70;

/// The namespace when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The broker a Trigger takes events from when none is given.
pub const DEFAULT_BROKER: &str = "default";

/// The Istio gateway a VirtualService binds to when none is given.
pub const DEFAULT_GATEWAY: &str = "knative-serving/knative-ingress-gateway";

/// The hosts a VirtualService answers for when none are given.
pub const DEFAULT_HOST: &str = "*";

/// CPU requested when none is given.
pub const DEFAULT_CPU_REQUEST: &str = "250m";

/// Memory requested when none is given.
pub const DEFAULT_MEMORY_REQUEST: &str = "256Mi";

/// The memory limit when none is given; the host keeps three quarters of
/// it for its functions' memory.
pub const DEFAULT_MEMORY_LIMIT: &str = "1Gi";

/// The user the container runs as when none is given: not root, and the
/// "nonroot" user of distroless images.
pub const DEFAULT_RUN_AS_USER: u32 = 65532;

/// Kubernetes' cluster DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A Kubernetes object name that is also a DNS label (RFC 1035): 1 to 63
/// of `a-z`, `0-9` and `-`, starting with a letter and ending with a letter
/// or digit. Knative Services and namespaces are named so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsLabel(String);

impl DnsLabel {
    /// The longest label.
    pub const MAX_LEN: usize = 63;

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A label made from a folder's name: lowercased, every other character
    /// turned into `-`, trimmed of `-` and cut to length. `None` when that
    /// leaves no valid label (no letters, or a leading digit).
    pub fn from_folder_name(folder: &str) -> Option<Self> {
        let mapped: String = folder
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '-',
            })
            .collect();
        let mut label = mapped.trim_matches('-').to_owned();
        label.truncate(Self::MAX_LEN);
        label.truncate(label.trim_end_matches('-').len());
        label.parse().ok()
    }
}

impl FromStr for DnsLabel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && !text.ends_with('-');
        if valid {
            read_as_text_by_kubernetes(text)?;
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid name `{text}`: use 1 to {} of a-z, 0-9 and `-`, starting with a letter and not ending with `-`",
                Self::MAX_LEN
            ))
        }
    }
}

impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kubernetes object name of the general kind, a DNS subdomain (RFC
/// 1123): 1 to 253 of `a-z`, `0-9`, `-` and `.`, in parts separated by
/// `.`, each starting and ending with a letter or digit. Brokers, like
/// most objects, are named so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName(String);

impl ObjectName {
    /// The longest name.
    pub const MAX_LEN: usize = 253;
}

impl FromStr for ObjectName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let valid = text.len() <= Self::MAX_LEN
            && text.split('.').all(|part| {
                part.starts_with(alphanumeric)
                    && part.ends_with(alphanumeric)
                    && part.chars().all(|c| alphanumeric(c) || c == '-')
            });
        if valid {
            read_as_text_by_kubernetes(text)?;
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid name `{text}`: use 1 to {} of a-z, 0-9, `-` and `.`, each part between dots starting and ending with a letter or digit",
                Self::MAX_LEN
            ))
        }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Refuses text that Kubernetes would not read back as the same text.
///
/// Its YAML reader follows YAML 1.1, where a plain `yes`, `no`, `on`,
/// `off`, `y` or `n` (in any case) is a boolean and digits with `_` a
/// number; the YAML writer quotes only what YAML 1.2 would misread, so
/// those would be written plain and read back wrong. Empty text is refused
/// too: every field that takes free text needs some.
pub fn read_as_text_by_kubernetes(text: &str) -> Result<(), String> {
    const BOOLEANS: [&str; 6] = ["y", "n", "yes", "no", "on", "off"];
    let boolean = BOOLEANS.iter().any(|word| word.eq_ignore_ascii_case(text));
    let number = text.contains('_')
        && text.chars().all(|c| c.is_ascii_digit() || c == '_')
        && text.chars().any(|c| c.is_ascii_digit());
    if text.is_empty() {
        Err("it must not be empty".to_owned())
    } else if boolean || number {
        Err(format!(
            "`{text}` would be read back as a {} by Kubernetes' YAML reader",
            if boolean { "boolean" } else { "number" }
        ))
    } else {
        Ok(())
    }
}

/// A Kubernetes resource quantity as the flags take it: a decimal number
/// and an optional suffix, `250m`, `0.5`, `512Mi`, `1G`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(String);

impl Quantity {
    const SUFFIXES: [&str; 14] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];

    /// The quantity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Quantity {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(digits_end);
        let number_ok = !number.is_empty()
            && number.matches('.').count() <= 1
            && number.chars().any(|c| c.is_ascii_digit());
        if number_ok && Self::SUFFIXES.contains(&suffix) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "invalid quantity `{text}`: write a number with an optional suffix, like 250m, 0.5, 512Mi or 1Gi"
            ))
        }
    }
}

/// The path prefix under which the gateway serves the functions:
/// `/faas/api`, or `/` for none. Kept without a trailing `/`, so `/` is
/// the empty prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPrefix(String);

impl GatewayPrefix {
    /// The prefix, empty for `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for GatewayPrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // A prefix is written like a route; `/...` would be meaningless.
        match RoutePattern::try_from(text.to_owned()) {
            Ok(RoutePattern::Exact(path)) => Ok(Self(path.trim_end_matches('/').to_owned())),
            Ok(RoutePattern::Prefix(_)) => Err(format!(
                "invalid gateway prefix `{text}`: write the path alone, without `/...`"
            )),
            Err(why) => Err(why.replace("route", "gateway prefix")),
        }
    }
}

/// Everything `host knative` writes beyond what the manifest says.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Knative Service's name.
    pub name: DnsLabel,
    /// The namespace of every object.
    pub namespace: DnsLabel,
    /// The container image holding `host`, the manifest and the components.
    pub image: String,
    /// Overrides of what is derived from the manifest.
    pub scaling: Scaling,
    /// The container's resources.
    pub resources: Resources,
    /// The user the container runs as.
    pub run_as_user: u32,
    /// Where the mesh's gateway sends the functions' routes; `None` writes
    /// no VirtualService and leaves the Service's visibility alone.
    pub gateway: Option<Gateway>,
    /// Where the functions' events come from.
    pub eventing: Eventing,
}

/// Scaling and timing; `None` derives the value from the manifest.
#[derive(Debug, Clone, Default)]
pub struct Scaling {
    /// Requests one pod takes at once (0: unlimited).
    pub container_concurrency: Option<u32>,
    /// The longest request, in seconds.
    pub timeout_seconds: Option<u64>,
    /// Pods kept when idle.
    pub min_scale: Option<u32>,
    /// The most pods (0: unlimited).
    pub max_scale: u32,
    /// Concurrent requests per pod the autoscaler aims at.
    pub target: Option<u32>,
}

/// The container's requests and limits.
#[derive(Debug, Clone)]
pub struct Resources {
    /// CPU requested.
    pub cpu_request: Quantity,
    /// Memory requested.
    pub memory_request: Quantity,
    /// CPU limit; none by default (throttling a host hurts every function).
    pub cpu_limit: Option<Quantity>,
    /// Memory limit; the host sizes its memory budget from it.
    pub memory_limit: Option<Quantity>,
}

/// How the mesh reaches the functions.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The path prefix the gateway serves the functions under.
    pub prefix: GatewayPrefix,
    /// The Istio gateways the VirtualService binds to.
    pub gateways: Vec<String>,
    /// The hosts it answers for.
    pub hosts: Vec<String>,
    /// More routes to send, for functions deployed to the running host
    /// (not in the manifest).
    pub extra_routes: Vec<RoutePattern>,
}

/// Which broker's events the Trigger takes, and which of them.
#[derive(Debug, Clone)]
pub struct Eventing {
    /// The broker, in the Trigger's namespace.
    pub broker: ObjectName,
    /// Which of its events.
    pub events: Events,
}

/// Which events the Trigger takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// Those the manifest's functions take; no Trigger if none takes any.
    OfTheManifest,
    /// Every event of the broker: for functions deployed to the running
    /// host, whose triggers the manifest does not list.
    All,
}

/// What `host knative` writes.
#[derive(Debug, Clone)]
pub struct Objects {
    /// The Knative Service running the host.
    pub service: Service,
    /// The VirtualService sending the gateway's paths to it, if asked for.
    pub virtual_service: Option<VirtualService>,
    /// The Trigger delivering a broker's events to it, if some function
    /// takes events (or all were asked for).
    pub trigger: Option<Trigger>,
}

impl Objects {
    /// The objects for `manifest`'s functions; refused if a trigger's
    /// condition cannot be written for Knative.
    pub fn new(manifest: &Manifest, options: &Options) -> Result<Self, String> {
        Ok(Self {
            service: Service::new(manifest, options),
            virtual_service: options
                .gateway
                .as_ref()
                .map(|gateway| VirtualService::new(manifest, options, gateway)),
            trigger: Trigger::new(manifest, options)?,
        })
    }

    /// A YAML stream, one document per object, separated by `---`.
    pub fn to_yaml(&self) -> Result<String, yaml_serde::Error> {
        let mut documents = vec![yaml_serde::to_string(&self.service)?];
        if let Some(virtual_service) = &self.virtual_service {
            documents.push(yaml_serde::to_string(virtual_service)?);
        }
        if let Some(trigger) = &self.trigger {
            documents.push(yaml_serde::to_string(trigger)?);
        }
        Ok(documents.join("---\n"))
    }
}

/// The Service's address inside the cluster, which Knative's local gateway
/// routes by: `NAME.NAMESPACE.svc.cluster.local`.
pub fn cluster_host(options: &Options) -> String {
    format!(
        "{}.{}.svc.{CLUSTER_DOMAIN}",
        options.name, options.namespace
    )
}

/// The folder name a manifest at `file` lends the Service, if it makes a
/// valid name.
pub fn name_from_manifest_folder(file: &Path) -> Option<DnsLabel> {
    let file = std::fs::canonicalize(file).ok()?;
    DnsLabel::from_folder_name(file.parent()?.file_name()?.to_str()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Options for `shop` in `apps`, with a gateway prefix if given.
    pub(crate) fn options(prefix: Option<&str>) -> Options {
        Options {
            name: "shop".parse().unwrap(),
            namespace: "apps".parse().unwrap(),
            image: "registry.example/shop:1".to_owned(),
            scaling: Scaling::default(),
            resources: Resources {
                cpu_request: DEFAULT_CPU_REQUEST.parse().unwrap(),
                memory_request: DEFAULT_MEMORY_REQUEST.parse().unwrap(),
                cpu_limit: None,
                memory_limit: Some(DEFAULT_MEMORY_LIMIT.parse().unwrap()),
            },
            run_as_user: DEFAULT_RUN_AS_USER,
            gateway: prefix.map(|prefix| Gateway {
                prefix: prefix.parse().unwrap(),
                gateways: vec![DEFAULT_GATEWAY.to_owned()],
                hosts: vec![DEFAULT_HOST.to_owned()],
                extra_routes: Vec::new(),
            }),
            eventing: Eventing {
                broker: DEFAULT_BROKER.parse().unwrap(),
                events: Events::OfTheManifest,
            },
        }
    }

    /// A manifest parsed from `text`.
    pub(crate) fn manifest(text: &str) -> Manifest {
        Manifest::parse(text, Path::new("shop/shoal.toml")).unwrap()
    }

    #[test]
    fn names_are_dns_labels() {
        assert!("shop-2".parse::<DnsLabel>().is_ok());
        for bad in ["", "Shop", "2shop", "shop-", "shop_x", &"a".repeat(64)] {
            assert!(bad.parse::<DnsLabel>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            DnsLabel::from_folder_name("My_Shop.v2").unwrap().as_str(),
            "my-shop-v2"
        );
        assert_eq!(
            DnsLabel::from_folder_name(&format!("{}-x", "a".repeat(62)))
                .unwrap()
                .as_str(),
            "a".repeat(62)
        );
        assert_eq!(DnsLabel::from_folder_name("2026"), None);
        assert_eq!(DnsLabel::from_folder_name("No"), None);
        assert_eq!(DnsLabel::from_folder_name("..."), None);
    }

    #[test]
    fn broker_names_are_dns_subdomains() {
        for good in ["default", "shop.events", "2-brokers", &"a".repeat(253)] {
            assert!(good.parse::<ObjectName>().is_ok(), "{good:?} was refused");
        }
        for bad in [
            "",
            "Events",
            "shop_events",
            "-shop",
            "shop-",
            ".shop",
            "shop.",
            "shop..events",
            "shop.-events",
            "no",
            &"a".repeat(254),
        ] {
            assert!(bad.parse::<ObjectName>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn text_kubernetes_would_misread_is_refused() {
        for bad in ["no", "NO", "On", "y", "off", "1_000", ""] {
            assert!(
                read_as_text_by_kubernetes(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        for good in [
            "nope",
            "one",
            "1000",
            "a_b",
            "_",
            "true-ish",
            "registry/no:1",
        ] {
            assert!(
                read_as_text_by_kubernetes(good).is_ok(),
                "{good:?} was refused"
            );
        }
        assert!("no".parse::<DnsLabel>().unwrap_err().contains("boolean"));
    }

    #[test]
    fn quantities_take_kubernetes_suffixes() {
        for good in ["250m", "0.5", "1", "512Mi", "1G", "2Gi"] {
            assert!(good.parse::<Quantity>().is_ok(), "{good} was refused");
        }
        for bad in ["", "m", "1.2.3", "512MB", "-1", "1 Gi"] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn gateway_prefixes_are_paths_without_trailing_slash() {
        let prefix = |s: &str| s.parse::<GatewayPrefix>().map(|p| p.0);
        assert_eq!(prefix("/faas/api").unwrap(), "/faas/api");
        assert_eq!(prefix("/faas/api/").unwrap(), "/faas/api");
        assert_eq!(prefix("/").unwrap(), "");
        assert!(prefix("faas").unwrap_err().contains("gateway prefix"));
        assert!(prefix("/faas/...").is_err());
        assert!(prefix("/a b").is_err());
    }

    #[test]
    fn the_yaml_stream_has_one_document_per_object() {
        let manifest =
            manifest("[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/a\"]\n");
        let alone = Objects::new(&manifest, &options(None))
            .unwrap()
            .to_yaml()
            .unwrap();
        assert!(!alone.contains("---"));
        assert!(alone.starts_with("apiVersion: serving.knative.dev/v1\n"));
        let both = Objects::new(&manifest, &options(Some("/faas/api")))
            .unwrap()
            .to_yaml()
            .unwrap();
        let documents: Vec<&str> = both.split("---\n").collect();
        assert_eq!(documents.len(), 2);
        assert!(documents[1].starts_with("apiVersion: networking.istio.io/v1\n"));
        // Istio's string match is a one-key map, not a YAML tag.
        assert!(
            documents[1].contains("    - uri:\n        exact: /faas/api/a\n"),
            "{}",
            documents[1]
        );
    }
}
