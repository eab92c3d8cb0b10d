//! Functions as CloudEvents sinks: events in both HTTP modes routed by
//! their attributes to the function of the most specific trigger, the reply
//! rule, every bad event with the status a broker expects, retries of a
//! failing function, overload, duplicates, and the Python `cloudevents` SDK
//! as a sender nobody here wrote.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Host, example, guest, http1, manifest, repo, write};
use serde_json::Value;

/// A binary-mode event request to `host`'s events path `path`: the required
/// attributes, more `ce-*` headers (or other values) in `extra`, and
/// `data`.
fn binary(
    host: &Host,
    path: &str,
    ty: &str,
    id: &str,
    extra: &[(&str, &str)],
    data: &str,
) -> reqwest::RequestBuilder {
    let mut headers = vec![
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-source", "/tests/events"),
        ("ce-type", ty),
        ("content-type", "application/json"),
    ];
    headers.retain(|(name, _)| !extra.iter().any(|(given, _)| given == name));
    headers.extend(extra);
    let mut request = http1().post(host.url(path)).body(data.to_owned());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

/// `shoal_events_total` of `function` for trigger type `ty` and `outcome`.
fn events(metrics: &HashMap<String, f64>, function: &str, ty: &str, outcome: &str) -> f64 {
    let key = format!(
        "shoal_events_total{{function=\"{function}\",outcome=\"{outcome}\",revision=\"\",type=\"{ty}\"}}"
    );
    metrics.get(&key).copied().unwrap_or(0.0)
}

const ORDER: &str = r#"{"order": "A-17", "items": [
    {"sku": "mug", "quantity": 2, "unit_price_cents": 1250},
    {"sku": "tea", "quantity": 1, "unit_price_cents": 1650}]}"#;

/// The orders example for `com.example.order.created`, the mirror for
/// every other `com.example.*` event, a site at `/...`, with `args`.
fn sink(args: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            (
                "orders",
                &example("orders"),
                &[],
                &[r#"events = [{ type = "com.example.order.created" }]"#],
            ),
            (
                "mirror",
                &guest("event-mirror"),
                &["/mirror"],
                &[r#"events = [{ type = "com.example.*" }]"#],
            ),
            ("site", &example("hello"), &["/..."], &[]),
        ],
    );
    let host = Host::start_with(&manifest, dir.path(), args, &[]).unwrap();
    (host, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_the_function_of_their_trigger_and_a_reply_is_returned_only_when_asked() {
    let (host, _dir) = sink(&["--events-path", "/events"]);
    let order = |prefer: Option<&str>| {
        let mut request = binary(
            &host,
            "/events",
            "com.example.order.created",
            "o-1",
            &[],
            ORDER,
        );
        if let Some(prefer) = prefer {
            request = request.header("prefer", prefer);
        }
        request.send()
    };

    // Asked for: the reply event, in binary mode.
    let reply = order(Some("reply")).await.unwrap();
    assert_eq!(reply.status(), 200);
    let headers = reply.headers().clone();
    assert_eq!(headers["ce-type"], "com.example.order.priced");
    assert_eq!(headers["ce-id"], "o-1/priced");
    assert_eq!(headers["ce-subject"], "A-17");
    assert_eq!(headers["preference-applied"], "reply");
    let body: Value = reply.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"order": "A-17", "items": 3, "total_cents": 4150})
    );

    // Not asked for: 202, no body, and the dropped reply is logged.
    let accepted = order(None).await.unwrap();
    assert_eq!(accepted.status(), 202);
    assert!(accepted.headers().get("ce-type").is_none());
    assert_eq!(accepted.text().await.unwrap(), "");
    assert!(host.wait_for_log("reply was dropped", Duration::from_secs(5)));
    // Another type of the same family goes to the less specific trigger.
    let mirrored = binary(
        &host,
        "/events",
        "com.example.user.created",
        "u-1",
        &[],
        "{}",
    )
    .header("prefer", "reply")
    .send()
    .await
    .unwrap();
    assert_eq!(mirrored.headers()["ce-type"], "com.example.mirrored");
    // The function's own 4xx passes: the orders function refuses bad data.
    let bad_order = binary(
        &host,
        "/events",
        "com.example.order.created",
        "o-2",
        &[],
        "[]",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(bad_order.status(), 422);

    // The events path takes only its exact path: the site still serves
    // everything else, the mirror its own route.
    assert_eq!(host.get("/").await.0, 200);
    assert_eq!(host.get("/events/x").await.0, 200);
    let direct = http1().get(host.url("/mirror")).send().await.unwrap();
    assert_eq!(
        direct.status(),
        400,
        "a request that is no event, at the mirror's route"
    );

    let metrics = host.metrics().await;
    let ty = "com.example.order.created";
    assert_eq!(events(&metrics, "orders", ty, "replied"), 1.0);
    assert_eq!(events(&metrics, "orders", ty, "accepted"), 1.0);
    assert_eq!(events(&metrics, "orders", ty, "refused"), 1.0);
    assert_eq!(events(&metrics, "mirror", "com.example.*", "replied"), 1.0);
    // The same event (source and id) twice: delivered both times, counted
    // as a duplicate once.
    assert_eq!(
        metrics[&format!(
            "shoal_event_duplicates_total{{function=\"orders\",revision=\"\",type=\"{ty}\"}}"
        )],
        1.0
    );
    assert!(
        host.wait_for_line(Duration::from_secs(5), |l| l.contains("duplicate delivery"))
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn both_modes_arrive_as_binary_mode_with_attributes_decoded_once() {
    let (host, _dir) = sink(&[]);
    let mirror = |request: reqwest::RequestBuilder| async move {
        let response = request.header("prefer", "reply").send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };

    // Binary: quoted and percent-encoded values, decoded once (`%2541` is
    // `%41`), extensions, and the content type as datacontenttype.
    let seen = mirror(binary(
        &host,
        "/",
        "com.example.file.uploaded",
        "\"b-1\"",
        &[
            ("ce-subject", "Euro%20%E2%82%AC%20100%2541"),
            ("ce-region", "eu-west"),
        ],
        "{\"size\": 3}",
    ))
    .await;
    assert_eq!(seen["id"], "b-1");
    assert_eq!(seen["subject"], "Euro € 100%41");
    assert_eq!(seen["extensions"]["region"], "eu-west");
    assert_eq!(seen["datacontenttype"], "application/json");
    assert_eq!(seen["data"], "{\"size\": 3}");

    // Structured: the JSON document becomes ce-* headers (percent-encoded
    // where needed) and its data the body, byte for byte.
    let structured = serde_json::json!({
        "specversion": "1.0", "id": "s-1", "source": "/tests/events",
        "type": "com.example.file.uploaded", "subject": "a b\"c%", "sequence": 7,
        "datacontenttype": "application/json", "data": {"name": "x.png", "size": 3},
    });
    let seen = mirror(
        http1()
            .post(host.url("/"))
            .header(
                "content-type",
                "Application/CloudEvents+JSON; charset=utf-8",
            )
            .body(structured.to_string()),
    )
    .await;
    assert_eq!(seen["subject"], "a b\"c%");
    assert_eq!(seen["extensions"]["sequence"], "7");
    let raw: HashMap<String, String> = serde_json::from_value(seen["headers"].clone())
        .map(|pairs: Vec<(String, String)>| pairs.into_iter().collect())
        .unwrap();
    assert_eq!(raw["ce-subject"], "a%20b%22c%25");
    assert_eq!(raw["content-type"], "application/json");
    let data: Value = serde_json::from_str(seen["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, serde_json::json!({"name": "x.png", "size": 3}));

    // data_base64 arrives as the bytes it encodes.
    let seen = mirror(
        http1()
            .post(host.url("/"))
            .header("content-type", "application/cloudevents+json")
            .body(
                r#"{"specversion":"1.0","id":"s-2","source":"/t","type":"com.example.raw",
                    "datacontenttype":"text/plain","data_base64":"aGVsbG8="}"#,
            ),
    )
    .await;
    assert_eq!(seen["data"], "hello");
    assert_eq!(seen["datacontenttype"], "text/plain");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_events_are_answered_with_the_status_a_broker_expects_and_nothing_else_is_affected() {
    let (host, _dir) = sink(&[]);
    let client = http1();
    let structured = |body: &'static str| {
        client
            .post(host.url("/"))
            .header("content-type", "application/cloudevents+json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "GET",
            client.get(host.url("/")),
            405,
            "events are delivered by POST",
        ),
        (
            "PUT",
            client.put(host.url("/")),
            405,
            "events are delivered by POST",
        ),
        (
            "no id",
            client
                .post(host.url("/"))
                .header("ce-specversion", "1.0")
                .header("ce-source", "/s")
                .header("ce-type", "com.example.x"),
            400,
            "no `id` attribute",
        ),
        (
            "no specversion",
            client
                .post(host.url("/"))
                .header("ce-id", "1")
                .header("ce-source", "/s")
                .header("ce-type", "com.example.x"),
            400,
            "no `specversion` attribute",
        ),
        (
            "invalid UTF-8",
            binary(
                &host,
                "/",
                "com.example.x",
                "1",
                &[("ce-subject", "%FF%FE")],
                "",
            ),
            400,
            "`subject` attribute is not valid UTF-8",
        ),
        (
            "version 0.3",
            binary(
                &host,
                "/",
                "com.example.x",
                "1",
                &[("ce-specversion", "0.3")],
                "",
            ),
            400,
            "CloudEvents 1.0 only",
        ),
        (
            "id twice",
            binary(&host, "/", "com.example.x", "1", &[], "").header("ce-id", "2"),
            400,
            "`id` attribute is given twice",
        ),
        (
            "empty source",
            structured(r#"{"specversion":"1.0","id":"1","source":"","type":"com.example.x"}"#),
            400,
            "`source` attribute is empty",
        ),
        (
            "old version",
            structured(r#"{"specversion":"0.3","id":"1","source":"/s","type":"com.example.x"}"#),
            400,
            "CloudEvents 1.0 only",
        ),
        (
            "not JSON",
            structured("{\"id\": "),
            400,
            "not a JSON object",
        ),
        (
            "batch",
            client
                .post(host.url("/"))
                .header("content-type", "application/cloudevents-batch+json")
                .body("[]"),
            415,
            "batched events",
        ),
        (
            "unmatched",
            binary(&host, "/", "org.other.thing", "1", &[], ""),
            422,
            "no function takes this event (type `org.other.thing`)",
        ),
    ];
    let count = cases.len();
    for (what, request, status, message) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        if status == 405 {
            assert_eq!(response.headers()["allow"], "POST", "{what}");
        }
        let body = response.text().await.unwrap();
        assert!(body.contains(message), "{what}: {body}");
        assert!(body.contains("request id"), "{what}: {body}");
    }
    let options = client
        .request(reqwest::Method::OPTIONS, host.url("/"))
        .header("webhook-request-origin", "broker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["allow"], "POST");
    assert_eq!(
        options.headers()["webhook-allowed-origin"],
        "broker.example"
    );

    // Each refusal counted by reason; no function ran; a good event and a
    // route still work.
    let metrics = host.metrics().await;
    let refused =
        |reason: &str| metrics[&format!("shoal_events_refused_total{{reason=\"{reason}\"}}")];
    assert_eq!(
        (refused("method"), refused("invalid"), refused("unmatched")),
        (2.0, (count - 3) as f64, 1.0)
    );
    assert!(!metrics.keys().any(|k| k.starts_with("shoal_events_total")));
    let good = binary(&host, "/", "com.example.order.created", "g-1", &[], ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 202);
    assert_eq!(host.get("/hello").await.0, 200);
}

/// Waits until the host has logged `n` reloads that changed `function`.
fn wait_for_reloads(host: &Host, function: &str, n: usize) -> bool {
    logged(
        host,
        &format!("changed {function}"),
        n,
        Duration::from_secs(60),
    )
}

/// Waits up to `timeout` until the host's log holds `needle` `n` times (its
/// lines are written by a thread of their own, after the answer).
fn logged(host: &Host, needle: &str, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if host.log().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_function_is_retried_by_its_status_and_the_retry_is_seen_as_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let trigger = r#"events = [{ type = "com.example.job.*", source = "/tests/*" }]"#;
    let serve = |component: &Path, settings: &[&str]| {
        let mut lines = vec![trigger];
        lines.extend(settings);
        manifest(dir.path(), &[("jobs", component, &[], &lines)])
    };
    let manifest = serve(&guest("trap"), &[]);
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    let job = || binary(&host, "/", "com.example.job.run", "j-1", &[], "{}").send();

    let ty = "com.example.job.*";
    let duplicates =
        format!("shoal_event_duplicates_total{{function=\"jobs\",revision=\"\",type=\"{ty}\"}}");
    // Trapped: 500, which a broker retries.
    assert_eq!(job().await.unwrap().status(), 500);
    let metrics = host.metrics().await;
    assert_eq!(events(&metrics, "jobs", ty, "failed"), 1.0);
    assert!(!metrics.contains_key(&duplicates), "a first delivery");
    // Fails mid-body after a 200 head: not accepted, since it did not finish.
    serve(&guest("trap-mid-body"), &[]);
    host.signal("HUP");
    assert!(wait_for_reloads(&host, "jobs", 1));
    let cut = job().await.unwrap();
    assert_eq!(cut.status(), 500, "a function that failed after its head");
    // A changed function's series count on (as its request series do);
    // the duplicate is seen across the change.
    let metrics = host.metrics().await;
    assert_eq!(events(&metrics, "jobs", ty, "failed"), 2.0);
    assert_eq!(metrics[&duplicates], 1.0);
    // Fixed: the same event, retried, is accepted.
    serve(&guest("status"), &[]);
    host.signal("HUP");
    assert!(wait_for_reloads(&host, "jobs", 2));
    assert_eq!(job().await.unwrap().status(), 202);

    let metrics = host.metrics().await;
    assert_eq!(events(&metrics, "jobs", ty, "failed"), 2.0);
    assert_eq!(events(&metrics, "jobs", ty, "accepted"), 1.0);
    assert_eq!(metrics[&duplicates], 2.0);
    assert!(logged(
        &host,
        "duplicate delivery",
        2,
        Duration::from_secs(5)
    ));
    // A source outside the trigger's prefix is no match.
    let elsewhere = binary(
        &host,
        "/",
        "com.example.job.run",
        "j-2",
        &[("ce-source", "/prod/x")],
        "{}",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(elsewhere.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overloaded_function_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[(
            "slow",
            &guest("slow"),
            &[],
            &[
                r#"events = [{ type = "com.example.slow" }]"#,
                "max_concurrency = 1",
                "max_queue = 0",
            ],
        )],
    );
    let host = Host::start_with(&manifest, dir.path(), &[], &[]).unwrap();
    let first = tokio::spawn(binary(&host, "/?ms=1500", "com.example.slow", "s-1", &[], "").send());
    assert!(host.wait_for_log("sleeping 1500 ms", Duration::from_secs(30)));
    let second = binary(&host, "/", "com.example.slow", "s-2", &[], "")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 202, "accepted once it has finished");
    let metrics = host.metrics().await;
    assert_eq!(events(&metrics, "slow", "com.example.slow", "failed"), 1.0);
    assert_eq!(
        events(&metrics, "slow", "com.example.slow", "accepted"),
        1.0
    );
}

#[test]
fn an_exact_route_at_the_events_path_is_refused_while_a_function_takes_events() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("home", &example("hello"), &["/"], &[]),
            (
                "orders",
                &example("orders"),
                &[],
                &[r#"events = [{ type = "com.example.order.created" }]"#],
            ),
        ],
    );
    let error = Host::start_with(&manifest, dir.path(), &[], &[])
        .err()
        .unwrap();
    assert!(
        error.contains("route `/` of function `home` is the events path"),
        "{error}"
    );
    // With the events elsewhere, both serve.
    let host = Host::start_with(&manifest, dir.path(), &["--events-path", "/events"], &[]);
    assert!(host.is_ok(), "{:?}", host.err());
    // A function that nothing reaches is a manifest error.
    let lonely = write(
        dir.path(),
        "lonely.toml",
        "[[function]]\nname = \"x\"\ncomponent = \"x.wasm\"\n",
    );
    let (status, output) = common::run_to_exit(&lonely, dir.path());
    assert!(!status.success());
    assert!(output.contains("has no routes and no events"), "{output}");
}

/// The Python `cloudevents` SDK from PyPI, in the venv the polyglot
/// builds use, installed on first use.
fn python_with_cloudevents() -> std::path::PathBuf {
    let status = Command::new(repo().join("scripts/setup-cloudevents"))
        .status()
        .expect("cannot run scripts/setup-cloudevents");
    assert!(status.success(), "scripts/setup-cloudevents failed");
    repo().join("target/toolchains/venv/bin/python")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_cloudevents_sdk_sends_both_modes_and_reads_the_reply() {
    let python = python_with_cloudevents();
    let (host, dir) = sink(&[]);
    let script = write(
        dir.path(),
        "send.py",
        r#"
import json, sys, urllib.request, urllib.error
from cloudevents.http import CloudEvent, from_http
from cloudevents.conversion import to_binary, to_structured

url = sys.argv[1]
order = {"order": "P-3", "items": [{"sku": "pen", "quantity": 3, "unit_price_cents": 150}]}
results = {}
for mode, convert in (("binary", to_binary), ("structured", to_structured)):
    event = CloudEvent({"type": "com.example.order.created", "source": "/python/sdk",
                        "id": "py-" + mode, "subject": "100% done"}, order)
    headers, body = convert(event)
    for prefer in (True, False):
        h = dict(headers)
        if prefer:
            h["Prefer"] = "reply"
        request = urllib.request.Request(url, data=body, headers=h, method="POST")
        with urllib.request.urlopen(request) as response:
            status, reply_headers, reply_body = response.status, dict(response.headers), response.read()
        key = mode + ("+reply" if prefer else "")
        if status == 200:
            reply = from_http(reply_headers, reply_body)
            results[key] = {"status": status, "type": reply["type"], "id": reply["id"],
                            "subject": reply["subject"], "data": reply.data}
        else:
            results[key] = {"status": status, "body": reply_body.decode()}
# What the mirror receives. The SDK sends binary-mode attributes as they
# are, not percent-encoded, and http.client sends them as Latin-1: a
# non-ASCII subject is then no UTF-8, and refused. Structured mode is JSON.
for mode, convert in (("binary", to_binary), ("structured", to_structured)):
    event = CloudEvent({"type": "com.example.text", "source": "/python/sdk", "id": "py-m-" + mode,
                        "subject": "caf\u00e9 100% sure", "datacontenttype": "text/plain"}, "h\u00e9")
    headers, body = convert(event)
    headers["Prefer"] = "reply"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            results["mirror-" + mode] = from_http(dict(response.headers), response.read()).data
    except urllib.error.HTTPError as error:
        results["mirror-" + mode] = {"status": error.code, "body": error.read().decode()}
print(json.dumps(results))
"#,
    );
    let url = host.url("/");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(url).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = common::succeeded(&output);
    let results: Value = serde_json::from_str(&stdout).unwrap();
    for mode in ["binary", "structured"] {
        let reply = &results[format!("{mode}+reply")];
        assert_eq!(reply["status"], 200, "{mode}: {results}");
        assert_eq!(reply["type"], "com.example.order.priced", "{mode}");
        assert_eq!(reply["id"], format!("py-{mode}/priced"), "{mode}");
        assert_eq!(reply["subject"], "P-3", "{mode}");
        assert_eq!(
            reply["data"],
            serde_json::json!({"order": "P-3", "items": 3, "total_cents": 450}),
            "{mode}"
        );
        assert_eq!(results[mode]["status"], 202, "{mode}: {results}");
        assert_eq!(results[mode]["body"], "", "{mode}");
    }
    // What the mirror received, decoded by the SDK: in structured mode,
    // everything; in binary mode, the SDK's unencoded Latin-1 header is
    // refused as the HTTP binding says, naming the attribute.
    let mirror = &results["mirror-structured"];
    assert_eq!(mirror["subject"], "café 100% sure", "{results}");
    assert_eq!(mirror["data"], "hé");
    assert_eq!(mirror["datacontenttype"], "text/plain");
    let refused = &results["mirror-binary"];
    assert_eq!(refused["status"], 400, "{results}");
    assert!(
        refused["body"]
            .as_str()
            .unwrap()
            .contains("`subject` attribute is not valid UTF-8"),
        "{results}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deployed_revisions_take_events_and_a_trigger_already_taken_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[(
            "orders",
            &example("orders"),
            &[],
            &[r#"events = [{ type = "com.example.order.created" }]"#],
        )],
    );
    let token = common::token_file(dir.path());
    let args = ["--admin-token-file", token.to_str().unwrap()];
    let host = Host::start_with(&manifest, &dir.path().join("data"), &args, &[]).unwrap();
    let api = common::AdminApi {
        host: &host,
        token: Some(common::TOKEN),
    };
    let (status, uploaded) = api
        .upload(std::fs::read(guest("event-mirror")).unwrap())
        .await;
    assert_eq!(status, 201, "{uploaded}");
    let digest = uploaded["component"].as_str().unwrap();
    let definition = |ty: &str| format!("component = {digest:?}\nevents = [{{ type = {ty:?} }}]\n");

    let (status, deployed) = api.deploy("users", &definition("com.example.user.*")).await;
    assert_eq!(status, 201, "{deployed}");
    let reply = binary(&host, "/", "com.example.user.created", "u-9", &[], "{}")
        .header("prefer", "reply")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["ce-type"], "com.example.mirrored");
    assert_eq!(reply.headers()["x-shoal-revision"], "users-00001");
    assert_eq!(
        host.function("users").await["events"],
        serde_json::json!([{"type": "com.example.user.*"}])
    );
    assert!(host.function("orders").await["routes"] == serde_json::json!([]));
    let metrics = host.metrics().await;
    let key = "shoal_events_total{function=\"users\",outcome=\"replied\",\
               revision=\"users-00001\",type=\"com.example.user.*\"}";
    assert_eq!(metrics.get(key), Some(&1.0), "{metrics:?}");

    // The manifest's trigger is taken: refused, naming both; nothing changes.
    let (status, refused) = api
        .deploy("copy", &definition("com.example.order.created"))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused.to_string().contains(
            "event trigger { type = \\\"com.example.order.created\\\" } of function `copy` \
             is already taken by function `orders`"
        ),
        "{refused}"
    );
    let order = binary(&host, "/", "com.example.order.created", "o-9", &[], ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 202);
    assert!(order.headers().get("x-shoal-revision").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_events_batch_each_event_of_a_batch_goes_to_its_function_until_one_is_refused() {
    let (host, _dir) = sink(&["--events-batch"]);
    let batch = |events: Vec<Value>| {
        http1()
            .post(host.url("/"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(events).to_string())
            .send()
    };
    let event = |id: &str, ty: &str| {
        serde_json::json!({
            "specversion": "1.0", "id": id, "source": "/tests/batch", "type": ty,
            "data": serde_json::from_str::<Value>(ORDER).unwrap(),
        })
    };
    let order = "com.example.order.created";
    let accepted = |metrics: &HashMap<String, f64>| {
        (
            events(metrics, "orders", order, "accepted"),
            events(metrics, "mirror", "com.example.*", "accepted"),
        )
    };

    // Two events, two functions: both accepted (the mirror's reply, not
    // asked for, dropped).
    let response = batch(vec![
        event("b-1", order),
        event("b-2", "com.example.user.created"),
    ])
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(accepted(&host.metrics().await), (1.0, 1.0));

    // The second matches no trigger: its 422 is the batch's, and the third
    // is not delivered.
    let response = batch(vec![
        event("b-3", order),
        event("b-4", "org.other"),
        event("b-5", order),
    ])
    .await
    .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(accepted(&host.metrics().await), (2.0, 1.0));
    assert!(
        host.wait_for_line(Duration::from_secs(5), |l| l
            .contains("batch stopped at event 2 of 3"))
            .is_some()
    );

    // An invalid event refuses the whole batch before any is delivered.
    let mut broken = event("b-6", order);
    broken.as_object_mut().unwrap().remove("source");
    let response = batch(vec![event("b-7", order), broken]).await.unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("event 2 of the batch: the event has no `source` attribute"),
        "{text}"
    );
    assert_eq!(accepted(&host.metrics().await), (2.0, 1.0));

    // The broker sends the refused batch again: the event delivered before
    // is a duplicate.
    let response = batch(vec![event("b-3", order)]).await.unwrap();
    assert_eq!(response.status(), 202);
    let metrics = host.metrics().await;
    assert_eq!(
        metrics[&format!(
            "shoal_event_duplicates_total{{function=\"orders\",revision=\"\",type=\"{order}\"}}"
        )],
        1.0
    );
}

/// The events of a batch are delivered one after the other in the
/// request's own task, each awaited to its end: with an instance that is
/// reused, each answers at once, so the whole batch runs in one poll until
/// tokio's budget of work per poll runs out. An event whose function has
/// answered must not then be taken for one that ended without an answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_batch_to_reused_instances_is_delivered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[(
            "orders",
            &example("orders"),
            &[],
            &[
                r#"events = [{ type = "com.example.order.created" }]"#,
                "max_instance_reuse = 1000000",
            ],
        )],
    );
    let host = Host::start_with(&manifest, dir.path(), &["--events-batch"], &[]).unwrap();
    const EVENTS: usize = 500;
    let batch: Vec<Value> = (0..EVENTS)
        .map(|i| {
            serde_json::json!({
                "specversion": "1.0", "id": format!("long-{i}"), "source": "/tests/batch",
                "type": "com.example.order.created",
                "data": serde_json::from_str::<Value>(ORDER).unwrap(),
            })
        })
        .collect();
    let response = http1()
        .post(host.url("/"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(Value::Array(batch).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 202, "{}", response.text().await.unwrap());
    let metrics = host.metrics().await;
    assert_eq!(
        events(&metrics, "orders", "com.example.order.created", "accepted"),
        EVENTS as f64
    );
}
