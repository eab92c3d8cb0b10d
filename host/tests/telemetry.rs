//! Telemetry: the Prometheus metrics after a known sequence of requests,
//! and JSON log lines with the request span's fields.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Host, example, guest, http1, manifest};

/// The samples of a Prometheus text exposition, keyed by `name{labels}`
/// with the labels sorted as the encoder writes them.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn metrics(host: &Host) -> HashMap<String, f64> {
    let url = format!("http://{}/metrics", host.admin);
    let response = http1().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    samples(&response.text().await.unwrap())
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
    assert_eq!(
        status(client.get(host.url("/spin?forever"))).await,
        504
    );
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
        get(r#"shoal_requests_total{class="2xx",function="hello"}"#),
        3.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="2xx",function="echo"}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="5xx",function="trap"}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="5xx",function="spin"}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="5xx",function="slow"}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_requests_total{class="4xx",function="hello"}"#),
        0.0
    );
    assert_eq!(get("shoal_unrouted_requests_total"), 1.0);
    assert_eq!(get(r#"shoal_traps_total{function="trap"}"#), 1.0);
    assert_eq!(
        get(r#"shoal_traps_total{function="hog"}"#),
        0.0,
        "a memory limit is not counted as a trap"
    );
    assert_eq!(get(r#"shoal_timeouts_total{function="spin"}"#), 1.0);
    assert_eq!(get(r#"shoal_memory_limit_hits_total{function="hog"}"#), 1.0);
    assert_eq!(
        get(r#"shoal_rejections_total{function="slow",reason="queue_full"}"#),
        1.0
    );
    assert_eq!(get(r#"shoal_cold_starts_total{function="hello"}"#), 1.0);
    assert_eq!(get(r#"shoal_cold_starts_total{function="trap"}"#), 1.0);
    assert_eq!(
        get(r#"shoal_cold_start_duration_seconds_count{function="hello"}"#),
        1.0
    );
    assert_eq!(
        get(r#"shoal_request_duration_seconds_count{function="hello"}"#),
        3.0
    );
    assert_eq!(
        get(r#"shoal_response_bytes_total{function="hello"}"#),
        3.0 * 14.0
    );
    assert_eq!(get(r#"shoal_request_bytes_total{function="echo"}"#), 100.0);
    assert_eq!(get(r#"shoal_response_bytes_total{function="echo"}"#), 100.0);
    assert_eq!(get(r#"shoal_instances_in_flight{function="slow"}"#), 1.0);
    assert_eq!(get(r#"shoal_instances_in_flight{function="hello"}"#), 0.0);
    assert_eq!(get(r#"shoal_queue_depth{function="slow"}"#), 0.0);
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
    assert_eq!(m[r#"shoal_instances_in_flight{function="slow"}"#], 0.0);
    assert_eq!(
        m[r#"shoal_requests_total{class="2xx",function="slow"}"#],
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
