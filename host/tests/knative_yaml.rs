//! `host knative`, run as a user would: the YAML it writes for a manifest,
//! checked against the published Knative Service and Istio VirtualService
//! CRD schemas (vendored in `tests/data/crds`), and what it refuses.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};

use common::write;

/// Runs `host knative <args>`.
fn knative(args: &[&str]) -> Output {
    Command::new(common::host_binary())
        .arg("knative")
        .args(args)
        .output()
        .expect("cannot run the host binary")
}

/// Its standard error, after checking it failed with `code`.
fn refused(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(output.stdout.is_empty(), "it wrote YAML anyway");
    stderr
}

/// The standard error of `host knative` refusing a manifest of `text`,
/// written to `dir/file`, with an image and a name that are fine.
fn refused_manifest(dir: &Path, file: &str, text: &str) -> String {
    let manifest = write(dir, file, text);
    refused(
        &knative(&[path(&manifest), "--image", "img:1", "--name", "shop"]),
        1,
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The documents of a YAML stream, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

/// The JSON Schema of `version` of the CRD in `tests/data/crds/FILE`,
/// made strict the way the API server's field validation is: a field the
/// schema does not list is refused, unless the schema preserves unknown
/// fields there.
fn crd_schema(file: &str, version: &str) -> jsonschema::Validator {
    let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/crds")
        .join(file);
    let crd = documents(&std::fs::read_to_string(crd).unwrap()).remove(0);
    let mut schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone();
    // The API server takes these at the root whether a CRD lists them or not.
    let root = schema["properties"].as_object_mut().unwrap();
    for (field, kind) in [
        ("apiVersion", "string"),
        ("kind", "string"),
        ("metadata", "object"),
    ] {
        root.entry(field).or_insert_with(|| json!({ "type": kind }));
    }
    refuse_unknown_fields(&mut schema);
    jsonschema::draft4::new(&schema).unwrap()
}

fn refuse_unknown_fields(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserves
            {
                map.insert("additionalProperties".to_owned(), json!(false));
            }
            map.values_mut().for_each(refuse_unknown_fields);
        }
        Value::Array(items) => items.iter_mut().for_each(refuse_unknown_fields),
        _ => {}
    }
}

fn knative_service_schema() -> jsonschema::Validator {
    crd_schema("knative-serving-service.yaml", "v1")
}

fn virtual_service_schema() -> jsonschema::Validator {
    crd_schema("istio-virtualservice.yaml", "v1")
}

/// The schema's complaints about `object`, one per line.
fn complaints(schema: &jsonschema::Validator, object: &Value) -> String {
    schema
        .iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Three functions: an exact route, a wildcard (`/fn/...`) whose name is a
/// prefix of the next function's route, and a function with both.
const THREE: &str = r#"
[[function]]
name = "hello"
component = "hello.wasm"
routes = ["/hello"]
timeout = "10s"

[[function]]
name = "fn"
component = "fn.wasm"
routes = ["/fn/..."]
max_concurrency = 20
timeout = "2500ms"

[[function]]
name = "fnord"
component = "fnord.wasm"
routes = ["/fnord", "/api/fnord/..."]
timeout = "90s"
queue_timeout = "1s"
"#;

/// `(rule name, match kind, path, rewritten path)` for every rule of a
/// VirtualService.
fn rules(virtual_service: &Value) -> Vec<(String, String, String, String)> {
    let mut rules = Vec::new();
    for rule in virtual_service["spec"]["http"].as_array().unwrap() {
        for matched in rule["match"].as_array().unwrap() {
            let (kind, path) = matched["uri"].as_object().unwrap().iter().next().unwrap();
            rules.push((
                rule["name"].as_str().unwrap().to_owned(),
                kind.clone(),
                path.as_str().unwrap().to_owned(),
                rule["rewrite"]["uri"].as_str().unwrap().to_owned(),
            ));
        }
    }
    rules
}

#[test]
fn three_functions_become_one_cluster_local_service_and_a_virtual_service() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "shoal.toml", THREE);
    let yaml = common::succeeded(&knative(&[
        path(&manifest),
        "--image",
        "registry.example/shop:1",
        "--name",
        "shop",
        "--namespace",
        "apps",
        "--gateway-prefix",
        "/faas/api",
    ]));
    let objects = documents(&yaml);
    assert_eq!(objects.len(), 2, "{yaml}");
    let (service, virtual_service) = (&objects[0], &objects[1]);

    let problems = complaints(&knative_service_schema(), service);
    assert!(problems.is_empty(), "{problems}\n{yaml}");
    let problems = complaints(&virtual_service_schema(), virtual_service);
    assert!(problems.is_empty(), "{problems}\n{yaml}");

    // The Service.
    assert_eq!(service["apiVersion"], "serving.knative.dev/v1");
    assert_eq!(service["metadata"]["name"], "shop");
    assert_eq!(service["metadata"]["namespace"], "apps");
    assert_eq!(
        service["metadata"]["labels"]["networking.knative.dev/visibility"],
        "cluster-local"
    );
    let template = &service["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    for (key, value) in [
        ("autoscaling.knative.dev/min-scale", "0"),
        ("autoscaling.knative.dev/max-scale", "0"),
        // 70% of 100 + 20 + 100.
        ("autoscaling.knative.dev/target", "154"),
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "9465"),
        ("prometheus.io/path", "/metrics"),
    ] {
        assert_eq!(annotations[key], value, "{key}");
    }
    let spec = &template["spec"];
    assert_eq!(spec["containerConcurrency"], 220);
    // fnord's 1s queue + 90s.
    assert_eq!(spec["timeoutSeconds"], 91);
    let container = &spec["containers"][0];
    assert_eq!(container["image"], "registry.example/shop:1");
    assert_eq!(
        container["args"],
        json!(["--metrics-listen", "0.0.0.0:9465"])
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "h2c", "containerPort": 8080}])
    );
    assert_eq!(
        container["readinessProbe"],
        json!({"httpGet": {"path": "/"}})
    );
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "tmp", "mountPath": "/tmp"}])
    );
    assert_eq!(spec["volumes"], json!([{"name": "tmp", "emptyDir": {}}]));

    // The VirtualService.
    assert_eq!(virtual_service["apiVersion"], "networking.istio.io/v1");
    assert_eq!(virtual_service["metadata"]["namespace"], "apps");
    assert_eq!(virtual_service["spec"]["hosts"], json!(["*"]));
    assert_eq!(
        virtual_service["spec"]["gateways"],
        json!(["knative-serving/knative-ingress-gateway"])
    );
    // In the router's order: exact routes, exact matches of wildcards,
    // prefixes longest first.
    let expected = [
        ("hello", "exact", "/faas/api/hello", "/hello"),
        ("fnord", "exact", "/faas/api/fnord", "/fnord"),
        ("fn", "exact", "/faas/api/fn", "/fn"),
        ("fnord", "exact", "/faas/api/api/fnord", "/api/fnord"),
        ("fnord", "prefix", "/faas/api/api/fnord/", "/api/fnord/"),
        ("fn", "prefix", "/faas/api/fn/", "/fn/"),
    ];
    let rules = rules(virtual_service);
    let as_str: Vec<_> = rules
        .iter()
        .map(|(n, k, p, r)| (n.as_str(), k.as_str(), p.as_str(), r.as_str()))
        .collect();
    assert_eq!(as_str, expected);
    // `/faas/api/fnord` is taken by fnord's rule alone, not by fn's prefix.
    let takers: Vec<&str> = rules
        .iter()
        .filter(|(_, kind, path, _)| match kind.as_str() {
            "exact" => path == "/faas/api/fnord",
            _ => "/faas/api/fnord".starts_with(path.as_str()),
        })
        .map(|(name, ..)| name.as_str())
        .collect();
    assert_eq!(takers, ["fnord"]);
    for rule in virtual_service["spec"]["http"].as_array().unwrap() {
        assert_eq!(
            rule["rewrite"]["authority"], "shop.apps.svc.cluster.local",
            "{rule}"
        );
        assert_eq!(
            rule["route"],
            json!([{"destination": {
                "host": "knative-local-gateway.istio-system.svc.cluster.local",
                "port": {"number": 80}
            }}])
        );
    }
}

#[test]
fn the_schema_check_refuses_a_broken_object() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "shoal.toml", THREE);
    let objects = documents(&common::succeeded(&knative(&[
        path(&manifest),
        "--image",
        "img:1",
        "--name",
        "shop",
        "--gateway-prefix",
        "/faas/api",
    ])));
    let (service_schema, vs_schema) = (knative_service_schema(), virtual_service_schema());
    assert!(service_schema.is_valid(&objects[0]));
    assert!(vs_schema.is_valid(&objects[1]));

    let broken = |object: &Value, pointer: &str, value: Value| {
        let mut object = object.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        object.pointer_mut(parent).unwrap()[field] = value;
        object
    };
    let template = "/spec/template/spec";
    for (object, why) in [
        (
            broken(
                &objects[0],
                &format!("{template}/containerConcurrency"),
                json!("many"),
            ),
            "a string for an integer",
        ),
        (
            broken(
                &objects[0],
                &format!("{template}/containers/0/imagePullPolicyy"),
                json!("Always"),
            ),
            "a misspelt container field",
        ),
        (
            broken(
                &objects[0],
                &format!("{template}/containers/0/ports/0/containerPort"),
                json!("h2c"),
            ),
            "a port that is not a number",
        ),
    ] {
        assert!(!service_schema.is_valid(&object), "{why} was accepted");
    }
    for (object, why) in [
        (
            broken(
                &objects[1],
                "/spec/http/0/match/0/uri/prefix",
                json!("/faas/api/"),
            ),
            "a match both exact and prefix",
        ),
        (
            broken(&objects[1], "/spec/http/0/rewrite/url", json!("/x")),
            "a misspelt rewrite field",
        ),
        (
            broken(
                &objects[1],
                "/spec/http/0/route/0/destination/port/number",
                json!("80"),
            ),
            "a port given as a string",
        ),
    ] {
        assert!(!vs_schema.is_valid(&object), "{why} was accepted");
    }
}

#[test]
fn without_a_gateway_prefix_only_the_service_is_written_named_after_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("My_Shop.v2");
    std::fs::create_dir(&folder).unwrap();
    let manifest = write(&folder, "shoal.toml", THREE);
    let out: PathBuf = dir.path().join("shop.yaml");
    let stdout = common::succeeded(&knative(&[
        path(&manifest),
        "--image",
        "img:1",
        "--out",
        path(&out),
        "--container-concurrency",
        "0",
        "--min-scale",
        "1",
        "--max-scale",
        "4",
        "--timeout-seconds",
        "300",
        "--cpu-limit",
        "2",
        "--memory-limit",
        "2Gi",
    ]));
    assert!(stdout.is_empty(), "{stdout}");
    let objects = documents(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(objects.len(), 1);
    let service = &objects[0];
    let problems = complaints(&knative_service_schema(), service);
    assert!(problems.is_empty(), "{problems}");

    assert_eq!(service["metadata"]["name"], "my-shop-v2");
    assert_eq!(service["metadata"]["namespace"], "default");
    assert!(service["metadata"]["labels"]["networking.knative.dev/visibility"].is_null());
    let template = &service["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/min-scale"], "1");
    assert_eq!(annotations["autoscaling.knative.dev/max-scale"], "4");
    // Unlimited concurrency: Knative's default soft target.
    assert_eq!(annotations["autoscaling.knative.dev/target"], "100");
    assert_eq!(template["spec"]["containerConcurrency"], 0);
    assert_eq!(template["spec"]["timeoutSeconds"], 300);
    assert_eq!(
        template["spec"]["containers"][0]["resources"],
        json!({
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        })
    );
}

#[test]
fn extra_routes_hosts_and_gateways_are_sent_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "shoal.toml", THREE);
    let objects = documents(&common::succeeded(&knative(&[
        path(&manifest),
        "--image",
        "img:1",
        "--name",
        "shop",
        "--gateway-prefix",
        "/faas/api/",
        "--gateway",
        "mesh-gw/public",
        "--host",
        "api.example.com",
        "--host",
        "api.example.org",
        "--route",
        "/uploads/...",
    ])));
    let virtual_service = &objects[1];
    let problems = complaints(&virtual_service_schema(), virtual_service);
    assert!(problems.is_empty(), "{problems}");
    assert_eq!(
        virtual_service["spec"]["gateways"],
        json!(["mesh-gw/public"])
    );
    assert_eq!(
        virtual_service["spec"]["hosts"],
        json!(["api.example.com", "api.example.org"])
    );
    let rules = rules(virtual_service);
    let deployed: Vec<_> = rules
        .iter()
        .filter(|(name, ..)| name == "deployed")
        .collect();
    assert_eq!(deployed.len(), 2);
    assert_eq!(deployed[0].2, "/faas/api/uploads");
    assert_eq!(deployed[0].1, "exact");
    assert_eq!(
        (deployed[1].2.as_str(), deployed[1].3.as_str()),
        ("/faas/api/uploads/", "/uploads/")
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "shoal.toml", THREE);
    let manifest = path(&manifest);
    let named = ["--image", "img:1", "--name", "shop"];

    let with = |extra: &[&str]| {
        let mut args = vec![manifest];
        for pair in named.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend_from_slice(pair);
            }
        }
        args.extend_from_slice(extra);
        knative(&args)
    };
    // Each refused flag beside its accepted twin.
    for (good, bad, reason) in [
        (
            &["--name", "shop-2"][..],
            &["--name", "Shop_2"][..],
            "invalid name `Shop_2`",
        ),
        (
            &["--namespace", "apps"],
            &["--namespace", "apps."],
            "invalid name `apps.`",
        ),
        (
            &["--cpu-request", "500m"],
            &["--cpu-request", "1MB"],
            "invalid quantity `1MB`",
        ),
        (
            &["--gateway-prefix", "/faas"],
            &["--gateway-prefix", "faas"],
            "must start with `/`",
        ),
        (
            &["--gateway-prefix", "/faas"],
            &["--gateway-prefix", "/faas/..."],
            "without `/...`",
        ),
        (
            &["--gateway-prefix", "/f", "--route", "/x/..."],
            &["--gateway-prefix", "/f", "--route", "x"],
            "invalid route `x`",
        ),
        (
            &["--gateway-prefix", "/f", "--host", "a"],
            &["--host", "a"],
            "--gateway-prefix",
        ),
        (&["--target", "1"], &["--target", "0"], "--target"),
        // Kubernetes' YAML reader would take these for booleans.
        (
            &["--name", "noa"],
            &["--name", "no"],
            "read back as a boolean",
        ),
        (
            &["--image", "img:1"],
            &["--image", "ON"],
            "read back as a boolean",
        ),
        (
            &["--gateway-prefix", "/f", "--host", "off.example"],
            &["--gateway-prefix", "/f", "--host", "off"],
            "boolean",
        ),
    ] {
        common::succeeded(&with(good));
        let stderr = refused(&with(bad), 2);
        assert!(stderr.contains(reason), "{bad:?}: {stderr}");
    }

    let stderr = refused(&knative(&[manifest, "--name", "shop"]), 2);
    assert!(stderr.contains("--image"), "{stderr}");

    // A folder whose name makes no Service name needs --name.
    let folder = dir.path().join("2026");
    std::fs::create_dir(&folder).unwrap();
    let unnamed = write(&folder, "shoal.toml", THREE);
    let stderr = refused(&knative(&[path(&unnamed), "--image", "img:1"]), 1);
    assert!(stderr.contains("give one with --name"), "{stderr}");
    common::succeeded(&knative(&[
        path(&unnamed),
        "--image",
        "img:1",
        "--name",
        "y2026",
    ]));

    // A bad manifest is refused as `host run` refuses it.
    let stderr = refused_manifest(
        dir.path(),
        "bad.toml",
        "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"a\"]\n",
    );
    assert!(
        stderr.contains("bad.toml:4") && stderr.contains("must start with `/`"),
        "{stderr}"
    );
}

/// Two functions taking events (exact, prefix, two conditions) and one
/// serving routes.
const EVENTS: &str = r#"
[[function]]
name = "orders"
component = "orders.wasm"
events = [
    { type = "com.example.order.created" },
    { type = "com.example.refund.*", source = "/shop/*" },
]

[[function]]
name = "audit"
component = "audit.wasm"
routes = ["/audit"]
events = [{ source = "/shop/admin" }]

[[function]]
name = "hello"
component = "hello.wasm"
routes = ["/hello"]
"#;

#[test]
fn functions_taking_events_get_one_trigger_on_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "shoal.toml", EVENTS);
    let run = |extra: &[&str]| {
        let mut args = vec![path(&manifest), "--image", "img:1", "--name", "shop"];
        args.extend_from_slice(extra);
        documents(&common::succeeded(&knative(&args)))
    };
    let subscriber =
        json!({"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "shop"}});

    // A broker is named as most objects are: dots allowed.
    let objects = run(&["--namespace", "apps", "--broker", "shop.events-2"]);
    assert_eq!(objects.len(), 2, "{objects:?}");
    let trigger = &objects[1];
    assert_eq!(trigger["apiVersion"], "eventing.knative.dev/v1");
    assert_eq!(trigger["kind"], "Trigger");
    assert_eq!(trigger["metadata"]["name"], "shop");
    assert_eq!(trigger["metadata"]["namespace"], "apps");
    assert_eq!(
        trigger["spec"],
        json!({
            "broker": "shop.events-2",
            "filters": [{"any": [
                {"exact": {"type": "com.example.order.created"}},
                {"all": [
                    {"prefix": {"type": "com.example.refund."}},
                    {"prefix": {"source": "/shop/"}},
                ]},
                {"exact": {"source": "/shop/admin"}},
            ]}],
            "subscriber": subscriber,
        })
    );

    // Behind the mesh the Trigger comes last; the broker reaches the
    // cluster-local Service directly.
    let objects = run(&["--gateway-prefix", "/faas"]);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Service", "VirtualService", "Trigger"]);
    assert_eq!(objects[2]["spec"]["broker"], "default");

    // All of the broker's events, for functions deployed later.
    let all = run(&["--all-events"]);
    assert_eq!(
        all[1]["spec"],
        json!({"broker": "default", "subscriber": subscriber})
    );

    // No function takes events: no Trigger, unless all are asked for.
    let routes_only = write(dir.path(), "routes.toml", THREE);
    let only = |extra: &[&str]| {
        let mut args = vec![path(&routes_only), "--image", "img:1", "--name", "shop"];
        args.extend_from_slice(extra);
        documents(&common::succeeded(&knative(&args)))
    };
    assert_eq!(only(&[]).len(), 1);
    assert_eq!(only(&["--all-events"])[1]["kind"], "Trigger");

    // A condition Kubernetes would read back as a boolean is refused, and
    // its function named; a bad broker name like any other name.
    let stderr = refused_manifest(
        dir.path(),
        "on.toml",
        "[[function]]\nname = \"lights\"\ncomponent = \"l.wasm\"\nevents = [{ type = \"on\" }]\n",
    );
    assert!(
        stderr.contains("`lights`") && stderr.contains("boolean"),
        "{stderr}"
    );
    let stderr = refused(
        &knative(&[
            path(&manifest),
            "--image",
            "img:1",
            "--name",
            "shop",
            "--broker",
            "Events",
        ]),
        2,
    );
    assert!(stderr.contains("invalid name `Events`"), "{stderr}");
}

/// The fenced block of `language` that follows `marker` in `text`.
fn block_after<'a>(text: &'a str, marker: &str, language: &str) -> &'a str {
    let start = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"));
    let fence = format!("```{language}\n");
    let body = &text[start..];
    let body = &body[body.find(&fence).unwrap() + fence.len()..];
    &body[..body.find("```").unwrap()]
}

#[test]
fn the_readme_example_is_the_real_output() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let section = &readme[readme.find("## Running under Knative and Istio").unwrap()..];
    let manifest = block_after(section, "A worked example, `shop/shoal.toml`", "toml");
    let written = block_after(section, "writes (its real output)", "yaml");

    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("shop");
    std::fs::create_dir(&folder).unwrap();
    let manifest = write(&folder, "shoal.toml", manifest);
    let yaml = common::succeeded(&knative(&[
        path(&manifest),
        "--image",
        "registry.example.com/shop:1.0",
        "--namespace",
        "apps",
        "--gateway-prefix",
        "/faas/api",
    ]));
    assert_eq!(yaml, written, "the README's example is out of date");
    for (object, schema) in documents(&yaml)
        .iter()
        .zip([knative_service_schema(), virtual_service_schema()])
    {
        let problems = complaints(&schema, object);
        assert!(problems.is_empty(), "{problems}");
    }
}

#[test]
fn the_readme_trigger_is_the_real_output() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Events: functions as Knative Eventing sinks")
        .unwrap()..];
    let manifest = block_after(section, "One host is the sink", "toml");
    let written = block_after(section, "the Trigger is (its real output)", "yaml");

    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("shop");
    std::fs::create_dir(&folder).unwrap();
    let manifest = write(&folder, "shoal.toml", manifest);
    let yaml = common::succeeded(&knative(&[
        path(&manifest),
        "--image",
        "registry.example.com/shop:1.0",
    ]));
    let trigger = yaml.split("---\n").last().unwrap();
    assert_eq!(trigger, written, "the README's Trigger is out of date");
}
