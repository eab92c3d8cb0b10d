//! The Knative Service (`serving.knative.dev/v1`) that runs the host.
//!
//! The image's entrypoint is `host run /shoal/shoal.toml`; the container's
//! `args` only add flags. Knative sets `$PORT`, which the host listens on,
//! to the one declared port, named `h2c` so that the queue-proxy speaks
//! HTTP/2 to it. The readiness probe asks `/`: the host answers Knative's
//! probes itself, 503 until every function is loaded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{
    KNATIVE_DEFAULT_TARGET, KNATIVE_MAX_CONTAINER_CONCURRENCY, Options, TARGET_PERCENTAGE,
};
use crate::manifest::Manifest;

/// The port the host listens on in the pod (Knative's default `$PORT`).
pub const CONTAINER_PORT: u16 = 8080;

/// The port's name: HTTP/2 without TLS, which the host speaks.
pub const PORT_NAME: &str = "h2c";

/// Where the host serves its metrics, apart from the functions' port.
pub const METRICS_LISTEN: &str = "0.0.0.0:9465";

/// The metrics port, as Prometheus' pod annotations name it.
pub const METRICS_PORT: &str = "9465";

/// The one writable folder: the host's data dir lives under it.
pub const TMP_MOUNT: &str = "/tmp";

/// The label that keeps a Knative Service off the public ingress.
pub const VISIBILITY_LABEL: &str = "networking.knative.dev/visibility";

/// A Knative Service.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `serving.knative.dev/v1`.
    pub api_version: &'static str,
    /// `Service`.
    pub kind: &'static str,
    /// Its name, namespace and labels.
    pub metadata: ObjectMeta,
    /// What it runs.
    pub spec: ServiceSpec,
}

/// The metadata written for an object.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectMeta {
    /// The object's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The metadata of an object named `name` in `namespace`, with the
    /// labels every object `host knative` writes carries.
    pub fn named(options: &Options) -> Self {
        Self {
            name: Some(options.name.to_string()),
            namespace: Some(options.namespace.to_string()),
            labels: BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_owned(),
                    options.name.to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "shoal-host".to_owned(),
                ),
            ]),
            annotations: BTreeMap::new(),
        }
    }
}

/// The Service's spec: only its revision template.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSpec {
    /// The revision every pod runs.
    pub template: RevisionTemplate,
}

/// A revision: its annotations (scaling, scraping) and its pod.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionTemplate {
    /// The revision's annotations, which its pods inherit.
    pub metadata: ObjectMeta,
    /// Its pod.
    pub spec: RevisionSpec,
}

/// The revision's pod.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// Requests one pod takes at once; 0 is unlimited.
    pub container_concurrency: u32,
    /// The longest a request may take, in seconds.
    pub timeout_seconds: u64,
    /// The one container.
    pub containers: Vec<Container>,
    /// The `/tmp` emptyDir.
    pub volumes: Vec<Volume>,
}

/// The host's container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `host`.
    pub name: &'static str,
    /// The image holding `host`, the manifest and the components.
    pub image: String,
    /// Flags added to the image's `host run /shoal/shoal.toml`.
    pub args: Vec<String>,
    /// The one port Knative sends requests to.
    pub ports: Vec<ContainerPort>,
    /// Knative's readiness check.
    pub readiness_probe: Probe,
    /// Requests and limits.
    pub resources: ResourceRequirements,
    /// Non-root, read-only, no privileges.
    pub security_context: SecurityContext,
    /// `/tmp`.
    pub volume_mounts: Vec<VolumeMount>,
}

/// A container port.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Its name; `h2c` makes Knative speak HTTP/2.
    pub name: &'static str,
    /// Its number.
    pub container_port: u16,
}

/// A readiness probe by HTTP GET, on the container's port.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// What to ask.
    pub http_get: HttpGetAction,
}

/// The request a probe sends.
#[derive(Debug, Clone, Serialize)]
pub struct HttpGetAction {
    /// Its path.
    pub path: &'static str,
}

/// Resource requests and limits, by resource name.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceRequirements {
    /// What the scheduler reserves.
    pub requests: BTreeMap<&'static str, String>,
    /// What the container may not pass.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<&'static str, String>,
}

/// The container's security settings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// Refuse to start as root.
    pub run_as_non_root: bool,
    /// The user it runs as, whatever the image says.
    pub run_as_user: u32,
    /// Only the mounted `/tmp` is writable.
    pub read_only_root_filesystem: bool,
    /// No setuid gains.
    pub allow_privilege_escalation: bool,
    /// No capabilities.
    pub capabilities: Capabilities,
    /// The runtime's default seccomp filter.
    pub seccomp_profile: SeccompProfile,
}

/// Capabilities dropped.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// `ALL`.
    pub drop: Vec<&'static str>,
}

/// A seccomp profile by type.
#[derive(Debug, Clone, Serialize)]
pub struct SeccompProfile {
    /// `RuntimeDefault`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A volume mounted into the container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The volume's name.
    pub name: &'static str,
    /// Where it is mounted.
    pub mount_path: &'static str,
}

/// A pod volume: an emptyDir.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Its name.
    pub name: &'static str,
    /// An empty folder on the node, gone with the pod.
    pub empty_dir: EmptyDir,
}

/// An emptyDir with the node's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct EmptyDir {}

impl Service {
    /// The Service running `manifest`'s functions.
    pub fn new(manifest: &Manifest, options: &Options) -> Self {
        let scaling = &options.scaling;
        let container_concurrency = scaling
            .container_concurrency
            .unwrap_or_else(|| derived_container_concurrency(manifest));
        let target = scaling
            .target
            .unwrap_or_else(|| derived_target(container_concurrency));
        let min_scale = scaling
            .min_scale
            .unwrap_or_else(|| derived_min_scale(manifest));

        let mut metadata = ObjectMeta::named(options);
        if options.gateway.is_some() {
            metadata
                .labels
                .insert(VISIBILITY_LABEL.to_owned(), "cluster-local".to_owned());
        }
        let annotations = [
            ("autoscaling.knative.dev/min-scale", min_scale.to_string()),
            (
                "autoscaling.knative.dev/max-scale",
                scaling.max_scale.to_string(),
            ),
            ("autoscaling.knative.dev/target", target.to_string()),
            ("prometheus.io/scrape", "true".to_owned()),
            ("prometheus.io/port", METRICS_PORT.to_owned()),
            ("prometheus.io/path", "/metrics".to_owned()),
        ];
        let template_metadata = ObjectMeta {
            annotations: annotations
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
            ..ObjectMeta::default()
        };

        let resources = &options.resources;
        let mut limits = BTreeMap::new();
        if let Some(cpu) = &resources.cpu_limit {
            limits.insert("cpu", cpu.as_str().to_owned());
        }
        if let Some(memory) = &resources.memory_limit {
            limits.insert("memory", memory.as_str().to_owned());
        }
        let container = Container {
            name: "host",
            image: options.image.clone(),
            args: vec!["--metrics-listen".to_owned(), METRICS_LISTEN.to_owned()],
            ports: vec![ContainerPort {
                name: PORT_NAME,
                container_port: CONTAINER_PORT,
            }],
            readiness_probe: Probe {
                http_get: HttpGetAction { path: "/" },
            },
            resources: ResourceRequirements {
                requests: BTreeMap::from([
                    ("cpu", resources.cpu_request.as_str().to_owned()),
                    ("memory", resources.memory_request.as_str().to_owned()),
                ]),
                limits,
            },
            security_context: SecurityContext {
                run_as_non_root: true,
                run_as_user: options.run_as_user,
                read_only_root_filesystem: true,
                allow_privilege_escalation: false,
                capabilities: Capabilities { drop: vec!["ALL"] },
                seccomp_profile: SeccompProfile {
                    kind: "RuntimeDefault",
                },
            },
            volume_mounts: vec![VolumeMount {
                name: "tmp",
                mount_path: TMP_MOUNT,
            }],
        };

        Self {
            api_version: "serving.knative.dev/v1",
            kind: "Service",
            metadata,
            spec: ServiceSpec {
                template: RevisionTemplate {
                    metadata: template_metadata,
                    spec: RevisionSpec {
                        container_concurrency,
                        timeout_seconds: scaling
                            .timeout_seconds
                            .unwrap_or_else(|| derived_timeout_seconds(manifest)),
                        containers: vec![container],
                        volumes: vec![Volume {
                            name: "tmp",
                            empty_dir: EmptyDir {},
                        }],
                    },
                },
            },
        }
    }
}

/// The sum of the functions' concurrency limits, at most Knative's
/// ceiling.
pub fn derived_container_concurrency(manifest: &Manifest) -> u32 {
    manifest
        .functions
        .iter()
        .fold(0_u32, |sum, f| sum.saturating_add(f.gate.max_concurrency))
        .min(KNATIVE_MAX_CONTAINER_CONCURRENCY)
}

/// The autoscaler's target for `container_concurrency`, as Knative would
/// derive it: 70% of it (at least 1), or Knative's default when unlimited.
pub fn derived_target(container_concurrency: u32) -> u32 {
    if container_concurrency == 0 {
        KNATIVE_DEFAULT_TARGET
    } else {
        (container_concurrency * TARGET_PERCENTAGE).div_ceil(100)
    }
}

/// 1 when a function must stay warm, else 0.
pub fn derived_min_scale(manifest: &Manifest) -> u32 {
    u32::from(manifest.functions.iter().any(|f| f.min_instances > 0))
}

/// The longest a request may wait and run, over all functions, in whole
/// seconds rounded up.
pub fn derived_timeout_seconds(manifest: &Manifest) -> u64 {
    let longest = manifest
        .functions
        .iter()
        .map(|f| f.gate.queue_timeout + f.limits.timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    longest.as_secs() + u64::from(longest.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{manifest, options};
    use super::*;

    fn three() -> Manifest {
        manifest(
            r#"
[[function]]
name = "a"
component = "a.wasm"
routes = ["/a"]
max_concurrency = 10
timeout = "2500ms"
queue_timeout = "1s"

[[function]]
name = "b"
component = "b.wasm"
routes = ["/b/..."]
max_concurrency = 20
timeout = "30s"
queue_timeout = "500ms"

[[function]]
name = "c"
component = "c.wasm"
routes = ["/c"]
"#,
        )
    }

    #[test]
    fn scaling_and_timeout_are_derived_from_the_functions() {
        let manifest = three();
        // 10 + 20 + the default 100.
        assert_eq!(derived_container_concurrency(&manifest), 130);
        // c: the default 60s timeout and 5s queue; b: 30.5s, rounded up.
        assert_eq!(derived_timeout_seconds(&manifest), 65);
        assert_eq!(derived_min_scale(&manifest), 0);
        assert_eq!(derived_target(130), 91);
        assert_eq!(derived_target(1), 1);
        assert_eq!(derived_target(0), KNATIVE_DEFAULT_TARGET);

        let spec = Service::new(&manifest, &options(None)).spec.template;
        assert_eq!(spec.spec.container_concurrency, 130);
        assert_eq!(spec.spec.timeout_seconds, 65);
        assert_eq!(
            spec.metadata.annotations["autoscaling.knative.dev/target"],
            "91"
        );
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        let manifest = manifest(
            "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/a\"]\n\
             timeout = \"2001ms\"\nqueue_timeout = \"1s\"\n",
        );
        assert_eq!(derived_timeout_seconds(&manifest), 4);
    }

    #[test]
    fn concurrency_is_capped_at_knatives_ceiling_and_warm_functions_keep_a_pod() {
        let functions: String = (0..12)
            .map(|i| {
                format!(
                    "[[function]]\nname = \"f{i}\"\ncomponent = \"f.wasm\"\nroutes = [\"/f{i}\"]\n\
                     min_instances = {}\n",
                    u32::from(i == 3)
                )
            })
            .collect();
        let manifest = manifest(&functions);
        assert_eq!(
            derived_container_concurrency(&manifest),
            KNATIVE_MAX_CONTAINER_CONCURRENCY
        );
        assert_eq!(derived_min_scale(&manifest), 1);
    }

    #[test]
    fn flags_override_what_is_derived() {
        let mut options = options(Some("/faas/api"));
        options.scaling = super::super::Scaling {
            container_concurrency: Some(0),
            timeout_seconds: Some(600),
            min_scale: Some(2),
            max_scale: 9,
            target: Some(50),
        };
        let service = Service::new(&three(), &options);
        let template = &service.spec.template;
        assert_eq!(template.spec.container_concurrency, 0);
        assert_eq!(template.spec.timeout_seconds, 600);
        let annotation = |key: &str| template.metadata.annotations[key].as_str();
        assert_eq!(annotation("autoscaling.knative.dev/min-scale"), "2");
        assert_eq!(annotation("autoscaling.knative.dev/max-scale"), "9");
        assert_eq!(annotation("autoscaling.knative.dev/target"), "50");
        assert_eq!(service.metadata.labels[VISIBILITY_LABEL], "cluster-local");
    }

    #[test]
    fn without_a_gateway_the_service_stays_public() {
        let service = Service::new(&three(), &options(None));
        assert!(!service.metadata.labels.contains_key(VISIBILITY_LABEL));
        let container = &service.spec.template.spec.containers[0];
        assert_eq!(container.args, ["--metrics-listen", METRICS_LISTEN]);
        assert_eq!(container.resources.limits["memory"], "1Gi");
        assert!(!container.resources.limits.contains_key("cpu"));
    }
}
