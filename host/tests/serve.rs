//! Serving: routing, both protocols, request ids, environment isolation,
//! streaming and guest logs, against the real `host` binary.

use crate::common;

use std::time::Duration;

use common::{Host, example, guest, h2c, http1, manifest};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// hello at `/hello` and `/api/users/...`, echo at `/api/...`, env at
/// `/api/users/me`.
fn routing_host() -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            (
                "hello",
                &example("hello"),
                &["/hello", "/api/users/..."],
                &[],
            ),
            (
                "echo",
                &example("echo"),
                &["/api/..."],
                &["max_body = \"200MiB\""],
            ),
            (
                "env",
                &example("wasip2-env"),
                &["/api/users/me"],
                &["env = { WHO = \"env\" }"],
            ),
        ],
    );
    (Host::start(&manifest), dir)
}

async fn get(client: &reqwest::Client, url: String) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn check_routing(host: &Host, client: &reqwest::Client) {
    let (status, _, body) = get(client, host.url("/hello")).await;
    assert_eq!((status, body.as_str()), (200, "Hello, world!\n"));

    // Exact beats wildcard; the longest wildcard wins.
    let (_, _, body) = get(client, host.url("/api/users/me")).await;
    assert_eq!(body, "WHO=env\n");
    let (_, _, body) = get(client, host.url("/api/users/7?name=seven")).await;
    assert_eq!(body, "Hello, seven!\n");
    let (_, _, body) = get(client, host.url("/api/users")).await;
    assert_eq!(body, "Hello, world!\n");
    let (status, headers, _) = get(client, host.url("/api/usersX/1?q=2")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["echo-path"], "/api/usersX/1");
    assert_eq!(headers["echo-query"], "q=2");

    // No route: 404 naming the path and the request id.
    for path in ["/", "/hello/x", "/hell", "/apis"] {
        let (status, headers, body) = get(client, host.url(path)).await;
        assert_eq!(status, 404, "{path}");
        let id = headers["x-request-id"].to_str().unwrap();
        assert!(
            body.contains(&format!("no function is routed at {path}")),
            "{body}"
        );
        assert!(body.contains(id), "{body}");
    }
}

#[tokio::test]
async fn routes_exact_wildcard_and_longest_match_over_http1() {
    let (host, _dir) = routing_host();
    check_routing(&host, &http1()).await;
}

#[tokio::test]
async fn routes_exact_wildcard_and_longest_match_over_h2c() {
    let (host, _dir) = routing_host();
    let client = h2c();
    check_routing(&host, &client).await;
    let response = client.get(host.url("/hello")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let (host, _dir) = routing_host();
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for i in 0..50 {
        let (status, _, body) = get(&client, host.url(&format!("/hello?name={i}"))).await;
        assert_eq!((status, body), (200, format!("Hello, {i}!\n")));
    }
}

/// The SDK sends a body of up to 4 KiB in one host call, a larger one in
/// pieces, and sets the status only when it is not 200: every size and
/// status arrives whole, with its length.
#[tokio::test]
async fn sdk_bodies_of_every_size_arrive_whole_with_their_status() {
    let host = Host::start(&guest("status"));
    for bytes in [0, 1, 4095, 4096, 4097, 100_000] {
        for code in [200, 201, 404] {
            let url = host.url(&format!("/?code={code}&bytes={bytes}"));
            let (status, headers, body) = get(&http1(), url).await;
            assert_eq!(status, code, "{bytes} bytes");
            assert_eq!(
                headers[reqwest::header::CONTENT_LENGTH],
                bytes.to_string(),
                "{code}, {bytes} bytes"
            );
            let expected: String = (0..bytes)
                .map(|i| char::from(b'0' + (i % 10) as u8))
                .collect();
            assert!(
                body == expected,
                "{code}, {bytes} bytes: got {} bytes",
                body.len()
            );
        }
    }
}

#[tokio::test]
async fn a_bare_component_is_served_at_every_path() {
    let host = Host::start(&example("hello"));
    for path in ["/", "/hello", "/a/b/c?name=x"] {
        let (status, _, body) = get(&http1(), host.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.starts_with("Hello, "), "{body}");
    }
}

#[tokio::test]
async fn every_response_carries_the_request_id_and_the_guest_sees_it() {
    let (host, _dir) = routing_host();
    let client = http1();

    let response = client
        .get(host.url("/api/x"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    assert_eq!(
        response.headers()["echo-header-x-request-id"],
        "trace-me-42"
    );

    let first = get(&client, host.url("/api/x")).await.1;
    let second = get(&client, host.url("/hello")).await.1;
    let (a, b) = (&first["x-request-id"], &second["x-request-id"]);
    assert!(!a.is_empty() && a != b, "ids {a:?} and {b:?}");
    assert_eq!(first["echo-header-x-request-id"], a);
}

#[tokio::test]
async fn a_guest_sees_only_the_environment_its_manifest_declares() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            (
                "declared",
                &example("wasip2-env"),
                &["/declared"],
                &["env = { A = \"1\", B = \"two words\" }"],
            ),
            ("bare", &example("wasip2-env"), &["/bare"], &[]),
        ],
    );
    let host = Host::start_with(
        &manifest,
        dir.path(),
        &[],
        &[("HOST_SECRET", "must-not-leak")],
    )
    .unwrap();
    let client = http1();
    assert_eq!(
        get(&client, host.url("/declared")).await.2,
        "A=1\nB=two words\n"
    );
    assert_eq!(get(&client, host.url("/bare")).await.2, "");
}

/// A deterministic body of `len` bytes, produced in chunks as it is sent.
fn pattern_stream(len: usize) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    const CHUNK: usize = 256 * 1024;
    futures::stream::iter((0..len).step_by(CHUNK).map(move |start| {
        let end = (start + CHUNK).min(len);
        Ok((start..end).map(|i| (i % 251) as u8).collect())
    }))
}

#[tokio::test]
async fn a_100_mb_body_streams_through_echo_without_being_held_in_memory() {
    const LEN: usize = 100 * 1024 * 1024;
    let (host, _dir) = routing_host();
    // Warm up, so the first instance's allocations are not counted.
    get(&http1(), host.url("/api/warm")).await;
    let rss_before = host.memory_kib("VmRSS");

    let mut expected = Sha256::new();
    for chunk in futures::executor::block_on_stream(Box::pin(pattern_stream(LEN))) {
        expected.update(chunk.unwrap());
    }

    let response = http1()
        .post(host.url("/api/big"))
        .body(reqwest::Body::wrap_stream(pattern_stream(LEN)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0;
    let mut digest = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        digest.update(&chunk);
    }
    assert_eq!(received, LEN);
    assert_eq!(digest.finalize(), expected.finalize());

    let growth_mib = host.memory_kib("VmHWM").saturating_sub(rss_before) / 1024;
    println!("peak RSS grew by {growth_mib} MiB while echoing 100 MiB");
    assert!(
        growth_mib < 40,
        "peak RSS grew by {growth_mib} MiB: the body was buffered"
    );
}

#[tokio::test]
async fn guest_stdout_and_stderr_reach_the_log_with_function_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("logger", &guest("logger"), &["/log"], &[])]);
    let host = Host::start(&manifest);
    let response = http1()
        .get(host.url("/log"))
        .header("x-request-id", "log-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "logged\n");

    for line in [
        "first stdout line",
        "second stdout line",
        "a stderr line without a newline",
    ] {
        assert!(
            host.wait_for_log(line, Duration::from_secs(5)),
            "no {line:?} in:\n{}",
            host.log()
        );
    }
    let log = host.log();
    let first = log
        .lines()
        .find(|l| l.contains("first stdout line"))
        .unwrap();
    assert!(
        first.contains("function=logger") && first.contains("request_id=log-req-1"),
        "{first}"
    );
    assert!(first.contains("stream=\"stdout\""), "{first}");
    let err = log.lines().find(|l| l.contains("a stderr line")).unwrap();
    assert!(err.contains("stream=\"stderr\""), "{err}");
}

#[tokio::test]
async fn the_sdk_parses_and_answers_json_and_turns_errors_into_500() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[("sum", &guest("json-sum"), &["/sum/..."], &[])],
    );
    let host = Host::start(&manifest);
    let client = http1();

    let response = client
        .post(host.url("/sum"))
        .body(r#"{"numbers": [1, 2, 39]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json, serde_json::json!({"sum": 42, "count": 3}));

    let response = client
        .post(host.url("/sum"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("expected {\"numbers\": [..]}")
    );

    let response = client.get(host.url("/sum/fail")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().await.unwrap(), "deliberate failure\n");
}
