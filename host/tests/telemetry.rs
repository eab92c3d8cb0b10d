//! Telemetry: the Prometheus metrics after a known sequence of requests,
//! JSON log lines with the request span's fields, and spans exported over
//! OTLP to a local collector.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Backend, Host, bff_settings, example, guest, http1, manifest};

async fn metrics(host: &Host) -> HashMap<String, f64> {
    host.metrics().await
}

/// Sends `request` and reads its whole answer, so that the host is done
/// with it; returns the status.
async fn status(request: reqwest::RequestBuilder) -> u16 {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_known_sequence_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("hello", &example("hello"), &["/hello"], &[]),
            ("echo", &example("echo"), &["/echo"], &[]),
            ("trap", &guest("trap"), &["/trap"], &[]),
            ("spin", &guest("spin"), &["/spin"], &["timeout = \"200ms\""]),
            (
                "hog",
                &guest("memory-hog"),
                &["/hog"],
                &["memory = \"16MiB\""],
            ),
            (
                "slow",
                &guest("slow"),
                &["/slow"],
                &["max_concurrency = 1", "max_queue = 0"],
            ),
            ("idle", &example("hello"), &["/idle"], &[]),
        ],
    );
    let host = Host::start(&manifest);
    let client = http1();
    for _ in 0..3 {
        assert_eq!(status(client.get(host.url("/hello"))).await, 200);
    }
    assert_eq!(status(client.get(host.url("/nowhere"))).await, 404);
    assert_eq!(
        status(client.post(host.url("/echo")).body(vec![b'x'; 100])).await,
        200
    );
    assert_eq!(status(client.get(host.url("/trap"))).await, 500);
    assert_eq!(status(client.get(host.url("/spin?forever"))).await, 504);
    assert_eq!(status(client.get(host.url("/hog"))).await, 500);
    // One slow request in flight, one refused at once.
    let slow = tokio::spawn(client.get(host.url("/slow?ms=1500")).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(client.get(host.url("/slow?ms=1"))).await, 503);

    let m = metrics(&host).await;
    let get = |key: &str| {
        m.get(key)
            .copied()
            .unwrap_or_else(|| panic!("no sample {key}"))
    };
    assert_eq!(
        get(r#"shoal_requests_total{class="2xx",function="hello",revision=""}"#),
        3.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="2xx",function="echo",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="5xx",function="trap",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="5xx",function="spin",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="5xx",function="slow",revision=""}"#),
        1.0
    );
    // A series is made when first used: none for what never happened.
    let none = |key: &str| assert!(!m.contains_key(key), "a series for nothing: {key}");
    none(r#"shoal_requests_total{class="4xx",function="hello",revision=""}"#);
    assert_eq!(get("shoal_unrouted_requests_total"), 1.0);
    assert_eq!(
        get(r#"shoal_traps_total{function="trap",revision=""}"#),
        1.0
    );
    // A memory limit is not counted as a trap.
    none(r#"shoal_traps_total{function="hog",revision=""}"#);
    assert_eq!(
        get(r#"shoal_timeouts_total{function="spin",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_memory_limit_hits_total{function="hog",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_rejections_total{function="slow",reason="queue_full",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_cold_starts_total{function="hello",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_cold_starts_total{function="trap",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_cold_start_duration_seconds_count{function="hello",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_request_duration_seconds_count{function="hello",revision=""}"#),
        3.0
    );
    // Every request of every function, in the host-wide histogram.
    let answered: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("shoal_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(get("shoal_host_request_duration_seconds_count"), answered);
    assert!(answered >= 8.0, "{answered}");
    assert_eq!(
        get(r#"shoal_response_bytes_total{function="hello",revision=""}"#),
        3.0 * 14.0
    );
    assert_eq!(
        get(r#"shoal_request_bytes_total{function="echo",revision=""}"#),
        100.0
    );
    assert_eq!(
        get(r#"shoal_response_bytes_total{function="echo",revision=""}"#),
        100.0
    );
    assert_eq!(
        get(r#"shoal_instances_in_flight{function="slow",revision=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_instances_in_flight{function="hello",revision=""}"#),
        0.0
    );
    assert_eq!(
        get(r#"shoal_queue_depth{function="slow",revision=""}"#),
        0.0
    );
    assert_eq!(get(r#"shoal_functions{state="warm"}"#), 6.0);
    let states: Vec<_> = m
        .iter()
        .filter(|(k, _)| k.starts_with("shoal_functions"))
        .collect();
    assert_eq!(
        get(r#"shoal_functions{state="compiled"}"#),
        1.0,
        "{states:?}"
    );
    // A function never called holds no series.
    assert!(
        m.keys().all(|k| !k.contains(r#"function="idle""#)),
        "series for an idle function: {:?}",
        m.keys().filter(|k| k.contains("idle")).collect::<Vec<_>>()
    );
    let build = m
        .keys()
        .find(|k| k.starts_with("shoal_build_info{"))
        .expect("build info");
    assert!(build.contains(r#"wasmtime="48.0.8""#), "{build}");
    assert!(get("process_resident_memory_bytes") > 0.0);
    // Labels stay bounded: no path appears in any series.
    assert!(
        m.keys()
            .all(|k| !k.contains("nowhere") && !k.contains("forever")),
        "a path leaked into a label"
    );

    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let m = metrics(&host).await;
    assert_eq!(
        m[r#"shoal_instances_in_flight{function="slow",revision=""}"#],
        0.0
    );
    assert_eq!(
        m[r#"shoal_requests_total{class="2xx",function="slow",revision=""}"#],
        1.0
    );
}

/// Every line of the host's log, parsed as JSON.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_span_and_knative_fields() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("logger", &guest("logger"), &["/log/..."], &[]),
            ("hello", &example("hello"), &["/hello"], &[]),
        ],
    );
    // Under Knative (K_SERVICE set), JSON is the default: no flag needed.
    let knative = [
        ("K_SERVICE", "shop"),
        ("K_REVISION", "shop-00042"),
        ("K_CONFIGURATION", "shop-cfg"),
    ];
    let host = Host::start_with(&manifest, dir.path(), &[], &knative).unwrap();
    let response = http1()
        .get(host.url("/log/x"))
        .header("x-request-id", "json-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(host.wait_for_log("json-req-1", Duration::from_secs(5)));
    assert_eq!(
        http1()
            .get(host.url("/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let access = |lines: &[serde_json::Value], path: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["span"]["path"] == path)
            .cloned()
    };
    let mut lines = json_lines(&host.log());
    for _ in 0..100 {
        if access(&lines, "/nowhere").is_some() && access(&lines, "/log/x").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        lines = json_lines(&host.log());
    }

    // The access line: its span has the request's fields, filled in.
    let line = access(&lines, "/log/x").expect("an access log line for /log/x");
    let span = &line["span"];
    assert_eq!(span["name"], "request");
    assert_eq!(span["request_id"], "json-req-1");
    assert_eq!(span["function"], "logger");
    assert_eq!(span["route"], "/log/...");
    assert_eq!(span["method"], "GET");
    assert_eq!(span["k_service"], "shop");
    assert_eq!(span["k_revision"], "shop-00042");
    assert_eq!(span["k_configuration"], "shop-cfg");
    assert_eq!(line["status"], 200);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(line["level"], "INFO");
    assert!(line["timestamp"].is_string(), "{line}");

    // The guest's lines are inside the same span.
    let guest = lines
        .iter()
        .find(|l| l["message"] == "first stdout line")
        .expect("the guest's stdout line");
    assert_eq!(guest["span"]["request_id"], "json-req-1");
    assert_eq!(guest["span"]["function"], "logger");
    assert_eq!(guest["stream"], "stdout");

    // An unrouted request has no function, and its status.
    let line = access(&lines, "/nowhere").expect("an access log line for /nowhere");
    assert_eq!(line["status"], 404);
    assert!(line["span"].get("function").is_none(), "{line}");

    // The metrics name the revision too.
    let build = metrics(&host)
        .await
        .into_keys()
        .find(|key| key.starts_with("shoal_build_info{"))
        .expect("shoal_build_info");
    for label in [
        "k_service=\"shop\"",
        "k_revision=\"shop-00042\"",
        "k_configuration=\"shop-cfg\"",
    ] {
        assert!(build.contains(label), "{build}");
    }
}

#[tokio::test]
async fn text_logs_are_the_default_outside_knative_and_json_can_be_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let host = Host::start(&manifest);
    assert!(
        host.log()
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
    );
    drop(host);

    let host = Host::start_with(&manifest, dir.path(), &["--log-format", "json"], &[]).unwrap();
    let lines = json_lines(&host.log());
    assert!(lines.iter().any(|l| l["message"] == "serving"), "{lines:?}");
}

/// The spans a collector received, decoded from OTLP/HTTP protobuf, with
/// their resource's text attributes (`service.name`...).
fn exported_spans(
    collector: &Backend,
) -> Vec<(
    HashMap<String, String>,
    opentelemetry_proto::tonic::trace::v1::Span,
)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;
    let requests = collector.requests.lock().unwrap().clone();
    let bodies = collector.bodies.lock().unwrap().clone();
    let mut spans = Vec::new();
    for ((path, headers), body) in requests.iter().zip(&bodies) {
        assert_eq!(path, "/v1/traces");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP export");
        for resource_spans in export.resource_spans {
            let resource: HashMap<String, String> = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(text) => Some((a.key.clone(), text.clone())),
                    _ => None,
                })
                .collect();
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans.into_iter().map(|s| (resource.clone(), s)));
            }
        }
    }
    spans
}

/// A span attribute, as text.
fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_over_otlp_and_join_the_callers_trace() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    let collector = Backend::start("", Duration::ZERO).await;
    let users = Backend::start(r#"{"id": "7", "name": "Ada"}"#, Duration::ZERO).await;
    let orders = Backend::start(r#"[{"id": 1}]"#, Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let [env, allowed] = bff_settings(&users, &orders);
    let manifest = manifest(
        dir.path(),
        &[
            (
                "bff",
                &example("bff"),
                &["/bff/users/..."],
                &[&env, &allowed],
            ),
            ("trap", &guest("trap"), &["/trap"], &[]),
        ],
    );
    let endpoint = collector.url("");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "shop"),
        ("K_SERVICE", "shop"),
        ("K_REVISION", "shop-00042"),
    ];
    let mut host = Host::start_with(&manifest, dir.path(), &[], &otel).unwrap();

    let response = http1()
        .get(host.url("/bff/users/7"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .header("x-request-id", "otel-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    // No trace context: the host starts a trace of its own.
    assert_eq!(status(http1().get(host.url("/trap"))).await, 500);

    // The last batch leaves when the host stops.
    host.signal("TERM");
    assert!(host.wait_exit(Duration::from_secs(15)).success());
    let spans = exported_spans(&collector);
    assert_eq!(spans.len(), 2, "{spans:#?}");

    let (resource, bff) = spans
        .iter()
        .find(|(_, s)| attribute(s, "function").as_deref() == Some("bff"))
        .expect("the bff request's span");
    assert_eq!(resource["service.name"], "shop");
    // Knative's revision is in the resource; what Knative did not set is not.
    assert_eq!(resource["knative.revision"], "shop-00042");
    assert!(
        !resource.contains_key("knative.configuration"),
        "{resource:?}"
    );
    assert_eq!(bff.name, "request");
    assert_eq!(hex(&bff.trace_id), TRACE);
    assert_eq!(hex(&bff.parent_span_id), CALLER_SPAN);
    assert_eq!(attribute(bff, "request_id").as_deref(), Some("otel-1"));
    assert_eq!(attribute(bff, "route").as_deref(), Some("/bff/users/..."));
    assert_eq!(attribute(bff, "status").as_deref(), Some("200"));
    // The function's calls continue the trace beneath the host's span.
    let traceparent = format!("00-{TRACE}-{}-01", hex(&bff.span_id));
    for backend in [&users, &orders] {
        let requests = backend.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].1["traceparent"], traceparent.as_str());
    }

    let (_, trap) = spans
        .iter()
        .find(|(_, s)| attribute(s, "function").as_deref() == Some("trap"))
        .expect("the trap request's span");
    assert_ne!(hex(&trap.trace_id), TRACE);
    assert!(trap.parent_span_id.is_empty(), "{trap:?}");
    let code = trap.status.as_ref().map(|s| s.code);
    assert_eq!(
        code,
        Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_no_request() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let mut host = Host::start_with(&manifest, dir.path(), &[], &env).unwrap();
    for _ in 0..3 {
        assert_eq!(status(http1().get(host.url("/hello"))).await, 200);
    }
    host.signal("TERM");
    assert!(
        host.wait_exit(Duration::from_secs(15)).success(),
        "{}",
        host.log()
    );
}

#[test]
fn an_unsupported_otlp_protocol_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[("hello", &example("hello"), &["/hello"], &[])],
    );
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ];
    let error = Host::start_with(&manifest, dir.path(), &[], &env)
        .err()
        .expect("the host started with OTLP over gRPC");
    assert!(
        error.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"),
        "{error}"
    );
}
