//! Outbound calls: the bff example against two real local services, the
//! allowlist (deny by default, no widening through `Host` or an absolute
//! URL), timeouts, connection reuse, the trace headers carried along, and
//! calls to the host itself (`http://self`).

use crate::common;

use std::time::Duration;

use shoal_runtime::{MAX_SELF_HOPS, SELF_HOPS_HEADER};

use common::{Backend, Decl, Host, bff_settings, example, guest, http1, manifest};

const TRACE_HEADERS: [(&str, &str); 10] = [
    (
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ),
    ("tracestate", "congo=t61rcWkgMzE"),
    ("x-request-id", "bff-trace-1"),
    ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
    ("x-b3-sampled", "1"),
    ("x-b3-flags", "1"),
    (
        "x-ot-span-context",
        "80f198ee56343ba864fe8b2a57d3eff7;e457b5a2e4d86bd1;1",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn bff_merges_two_services_and_carries_the_trace_headers_to_both() {
    let users = Backend::start(r#"{"id": "7", "name": "Ada"}"#, Duration::ZERO).await;
    let orders = Backend::start(r#"[{"id": 1}, {"id": 2}]"#, Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let [env, allowed] = bff_settings(&users, &orders);
    let manifest = manifest(
        dir.path(),
        &[(
            "bff",
            &example("bff"),
            &["/bff/users/..."],
            &[env.as_str(), allowed.as_str()],
        )],
    );
    let host = Host::start(&manifest);

    let mut request = http1().get(host.url("/bff/users/7"));
    for (name, value) in TRACE_HEADERS {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let merged: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        merged,
        serde_json::json!({"user": {"id": "7", "name": "Ada"}, "orders": [{"id": 1}, {"id": 2}]})
    );

    for (backend, target) in [(&users, "/users/7"), (&orders, "/orders?user=7")] {
        let requests = backend.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        let (path, headers) = &requests[0];
        assert_eq!(path, target);
        for (name, value) in TRACE_HEADERS {
            assert_eq!(
                headers.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{name} at {target}"
            );
        }
        assert_eq!(headers["host"], backend.addr.to_string());
    }

    // Later calls reuse the pooled connections.
    for _ in 0..10 {
        let response = http1().get(host.url("/bff/users/7")).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", host.log());
    }
    assert_eq!(users.received(), 11);
    let connections = users.connections.load(std::sync::atomic::Ordering::Relaxed);
    assert!(connections <= 2, "{connections} connections for 11 calls");
}

/// A host serving the `caller` guest, allowed to call `allowed` only.
fn caller_host(allowed: &Backend) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let allowed = format!("allowed_outbound_hosts = [\"http://{}\"]", allowed.addr);
    let manifest = manifest(
        dir.path(),
        &[("caller", &guest("caller"), &["/call"], &[allowed.as_str()])],
    );
    (Host::start(&manifest), dir)
}

async fn call(host: &Host, query: &str) -> String {
    let url = host.url(&format!("/call?{query}"));
    http1().get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_denied_by_default_and_only_listed_origins_are_reached() {
    let allowed = Backend::start("{}", Duration::ZERO).await;
    let other = Backend::start("{}", Duration::ZERO).await;
    let (host, _dir) = caller_host(&allowed);

    assert_eq!(
        call(&host, &format!("authority={}&path=/ok", allowed.addr)).await,
        "called 200 {}\n"
    );
    assert_eq!(allowed.received(), 1);

    let refused = call(&host, &format!("authority={}&path=/no", other.addr)).await;
    assert_eq!(refused, "refused at response: HttpRequestDenied\n");
    assert_eq!(other.received(), 0);
    let line = host.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("outbound call refused") && l.contains("function=caller")
    });
    let line = line.unwrap_or_else(|| panic!("no refusal logged:\n{}", host.log()));
    assert!(line.contains(&other.addr.to_string()), "{line}");

    // Same host, other port; same port, other scheme: refused too.
    let ip = allowed.addr.ip();
    let refused = call(&host, &format!("authority={ip}:1&path=/")).await;
    assert_eq!(refused, "refused at response: HttpRequestDenied\n");
    let refused = call(
        &host,
        &format!("scheme=https&authority={}&path=/", allowed.addr),
    )
    .await;
    assert_eq!(refused, "refused at response: HttpRequestDenied\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn neither_a_forged_host_header_nor_an_absolute_url_widens_the_allowlist() {
    let allowed = Backend::start("{}", Duration::ZERO).await;
    let other = Backend::start("{}", Duration::ZERO).await;
    let (host, _dir) = caller_host(&allowed);

    // A Host header naming the allowed origin, sent to another one.
    let forged = call(
        &host,
        &format!("authority={}&host={}", other.addr, allowed.addr),
    )
    .await;
    assert!(forged.starts_with("refused at"), "{forged}");
    // A Host header naming another origin, sent to the allowed one.
    let forged = call(
        &host,
        &format!("authority={}&host={}", allowed.addr, other.addr),
    )
    .await;
    assert!(forged.starts_with("refused at"), "{forged}");
    // An absolute URL in the path.
    let absolute = call(
        &host,
        &format!("authority={}&path=http://{}/x", allowed.addr, other.addr),
    )
    .await;
    assert!(absolute.starts_with("refused at"), "{absolute}");

    assert_eq!(other.received(), 0, "the other origin was reached");
    assert_eq!(allowed.received(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_waits_for_its_first_byte_only_as_long_as_it_allows() {
    let slow = Backend::start("{}", Duration::from_millis(1500)).await;
    let (host, _dir) = caller_host(&slow);
    let answered = call(&host, &format!("authority={}&timeout_ms=5000", slow.addr)).await;
    assert_eq!(answered, "called 200 {}\n");
    let timed_out = call(&host, &format!("authority={}&timeout_ms=200", slow.addr)).await;
    assert_eq!(
        timed_out,
        "refused at response: ErrorCode::HttpResponseTimeout\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_header_the_function_sets_itself_is_kept_and_the_hop_count_stays_home() {
    let backend = Backend::start("{}", Duration::ZERO).await;
    let (host, _dir) = caller_host(&backend);
    let response = http1()
        .get(host.url(&format!("/call?authority={}&traceparent=own", backend.addr)))
        .header("traceparent", "incoming")
        .header("x-request-id", "incoming-id")
        .header(SELF_HOPS_HEADER, "3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "called 200 {}\n");
    let headers = backend.requests.lock().unwrap()[0].1.clone();
    assert_eq!(headers["traceparent"], "own");
    assert_eq!(headers["x-request-id"], "incoming-id");
    // Only calls to this host are counted, and told the count.
    assert!(!headers.contains_key(SELF_HOPS_HEADER), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ipv6_origin_is_allowed_by_its_literal_and_user_information_never_leaves() {
    let v6 = Backend::start_on("[::1]:0", "{}", Duration::ZERO).await;
    let v4 = Backend::start("{}", Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let allowed = format!(
        "allowed_outbound_hosts = [\"http://[::1]:{}\", \"http://{}\"]",
        v6.addr.port(),
        v4.addr
    );
    let manifest = manifest(
        dir.path(),
        &[("caller", &guest("caller"), &["/call"], &[allowed.as_str()])],
    );
    let host = Host::start(&manifest);

    let port = v6.addr.port();
    assert_eq!(
        call(&host, &format!("authority=[::1]:{port}")).await,
        "called 200 {}\n"
    );
    // The same address, spelled out.
    let long = format!("authority=[0:0:0:0:0:0:0:1]:{port}");
    assert_eq!(call(&host, &long).await, "called 200 {}\n");
    assert_eq!(v6.received(), 2);
    let refused = call(&host, "authority=[::2]:1").await;
    assert_eq!(refused, "refused at response: HttpRequestDenied\n");

    // Credentials in the URL are not sent on, in Host or anywhere else.
    let with_user = format!("authority=user:secret@{}&path=/x", v4.addr);
    assert_eq!(call(&host, &with_user).await, "called 200 {}\n");
    let (target, headers) = v4.requests.lock().unwrap()[0].clone();
    assert_eq!(target, "/x");
    assert_eq!(headers["host"], v4.addr.to_string().as_str());
    for (name, value) in &headers {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains("secret") && !value.contains("user"),
            "{name}: {value}"
        );
    }
}

/// The bff and demo backend of `examples/shoal.toml`, with the bff's
/// settings as the example has them, on a host at a free port run with
/// `args`.
fn example_bff_host(args: &[&str]) -> (Host, tempfile::TempDir) {
    let example_manifest =
        std::fs::read_to_string(common::repo().join("examples/shoal.toml")).unwrap();
    let example_manifest: toml::Table = toml::from_str(&example_manifest).unwrap();
    let bff = example_manifest["function"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str() == Some("bff"))
        .expect("examples/shoal.toml has a bff");
    let env = format!("env = {}", bff["env"]);
    let allowed = format!("allowed_outbound_hosts = {}", bff["allowed_outbound_hosts"]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            (
                "bff",
                &example("bff"),
                &["/bff/users/..."],
                &[env.as_str(), allowed.as_str()],
            ),
            (
                "demo-backend",
                &example("demo-backend"),
                &["/demo/..."],
                &[],
            ),
        ],
    );
    let host = Host::start_with(&manifest, &dir.path().join("data"), args, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    (host, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_bff_calls_the_demo_backend_on_its_own_host_at_any_port() {
    let (host, _dir) = example_bff_host(&[]);
    let response = http1()
        .get(host.url("/bff/users/7"))
        .header("x-request-id", "self-call-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let merged: serde_json::Value = response.json().await.unwrap();
    assert_eq!(merged["user"]["id"], "7", "{merged}");
    assert_eq!(merged["user"]["name"], "User 7", "{merged}");
    assert!(
        merged["orders"].as_array().is_some_and(|o| !o.is_empty()),
        "{merged}"
    );
    // The backend's requests were served by the host, carrying the
    // caller's request id.
    let served = host.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("function=demo-backend") && line.contains("self-call-1")
    });
    assert!(served.is_some(), "{}", host.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_to_this_host_need_no_connection_of_their_own() {
    // One connection at most, the client's: calls to `http://self` that
    // needed connections of their own would wait for it to close, and the
    // bff for its calls' first bytes (30 s).
    let (host, _dir) = example_bff_host(&["--max-connections", "1"]);
    for user in ["3", "4"] {
        // A client of its own each time, which closes its connection when
        // done: one kept in a pool would hold the only slot, and its next
        // request might take a new connection before the kept one is back.
        let client = http1();
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            client.get(host.url(&format!("/bff/users/{user}"))).send(),
        )
        .await
        .expect("the bff's calls waited for a connection")
        .unwrap();
        assert_eq!(response.status(), 200);
        let merged: serde_json::Value = response.json().await.unwrap();
        assert_eq!(merged["user"]["id"], user, "{merged}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_to_this_host_sends_its_body_within_the_called_functions_limit() {
    let echo = (
        "echo",
        &*example("echo"),
        &["/echo"][..],
        &[r#"max_body = "16B""#][..],
    );
    let (host, _dir) = caller_beside(r#"["http://self"]"#, echo);
    let sixteen = "sixteen-bytes-ok";
    let echoed = call(&host, &format!("authority=self&path=/echo&body={sixteen}")).await;
    assert_eq!(echoed, format!("called 200 {sixteen}\n"));
    let refused = call(&host, &format!("authority=self&path=/echo&body={sixteen}!")).await;
    assert!(refused.starts_with("called 413 "), "{refused}");
    // The host is not hurt: the next call passes.
    let echoed = call(&host, "authority=self&path=/echo&body=again").await;
    assert_eq!(echoed, "called 200 again\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_breaks_off_in_a_call_to_this_host_breaks_off_for_the_caller() {
    let cut = ("cut", &*guest("trap-mid-body"), &["/cut"][..], &[][..]);
    let (host, _dir) = caller_beside(r#"["http://self"]"#, cut);
    let called = call(&host, "authority=self&path=/cut").await;
    assert!(
        called.starts_with("called 200 first part of the body\n<broke off: "),
        "{called}"
    );
    let logged = host.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("function=cut") && line.contains("the response body broke off")
    });
    assert!(logged.is_some(), "{}", host.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_to_this_host_ends_with_the_request_that_made_it() {
    // The called function takes one request at a time and queues none.
    let limits = ["max_concurrency = 1", "max_queue = 0", r#"timeout = "60s""#];
    let slow = ("slow", &*guest("slow"), &["/slow"][..], &limits[..]);
    let (host, _dir) = caller_beside(r#"["http://self"]"#, slow);
    let url = host.url("/call?authority=self&path=/slow?ms=50000");
    let waiting = tokio::spawn(http1().get(url).send());
    let sleeping = host.wait_for_line(Duration::from_secs(10), |line| {
        line.contains("function=slow") && line.contains("sleeping 50000 ms")
    });
    assert!(sleeping.is_some(), "{}", host.log());
    // The client goes away: the caller stops, and so does its call.
    waiting.abort();
    let _ = waiting.await;
    let freed = async {
        loop {
            let response = http1().get(host.url("/slow?ms=1")).send().await.unwrap();
            if response.status() == 200 {
                return response.text().await.unwrap();
            }
            assert_eq!(response.status(), 503);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), freed)
        .await
        .expect("the call went on after its caller had stopped");
    assert_eq!(answer, "slept 1 ms\n");
}

/// A host serving `caller` with `allowed`, and the hello beside it.
fn caller_beside_hello(allowed: &str) -> (Host, tempfile::TempDir) {
    caller_beside(allowed, ("hello", &example("hello"), &["/hello"], &[]))
}

/// A host serving `caller` with `allowed`, and `other` beside it.
fn caller_beside(allowed: &str, other: Decl<'_>) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let allowed = format!("allowed_outbound_hosts = {allowed}");
    let manifest = manifest(
        dir.path(),
        &[
            ("caller", &guest("caller"), &["/call"], &[allowed.as_str()]),
            other,
        ],
    );
    (Host::start(&manifest), dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_http_self_itself_lets_a_function_call_its_own_host() {
    let other = Backend::start("{}", Duration::ZERO).await;

    let (host, _dir) = caller_beside_hello(r#"["http://self"]"#);
    let called = call(&host, "authority=self&path=/hello").await;
    assert_eq!(called, "called 200 Hello, world!\n\n");
    // `self` is no way out to other origins.
    let refused = call(&host, &format!("authority={}&path=/", other.addr)).await;
    assert_eq!(refused, "refused at response: HttpRequestDenied\n");
    let refused = call(&host, "authority=self:8080&path=/hello").await;
    assert_eq!(refused, "refused at response: HttpRequestDenied\n");
    drop(host);

    // A wildcard allows other hosts, never this one.
    let (host, _dir) = caller_beside_hello(r#"["http://*", "*://*:*"]"#);
    let refused = call(&host, "authority=self&path=/hello").await;
    assert_eq!(refused, "refused at response: HttpRequestDenied\n");
    assert_eq!(other.received(), 0);
}

/// What the caller answers after `calls` calls to itself, when the next
/// one is refused.
fn chain_answer(calls: u32) -> String {
    let calls = calls as usize;
    format!(
        "{}refused at response: HttpRequestDenied\n{}",
        "called 200 ".repeat(calls),
        "\n".repeat(calls)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_calls_to_this_host_ends_at_its_depth_limit() {
    let (host, _dir) = caller_beside_hello(r#"["http://self"]"#);

    // A function that calls itself: each call one deeper, until the one
    // past the limit is refused and every caller answers.
    let answered = call(&host, "authority=self&loop=1").await;
    assert_eq!(answered, chain_answer(MAX_SELF_HOPS), "{}", host.log());
    let refusals = host
        .log()
        .matches("too deep a chain of calls to this host")
        .count();
    assert_eq!(refusals, 1, "{}", host.log());
    // The count is the host's: a guest's own header does not restart it.
    let answered = call(&host, "authority=self&loop=1&hops=0").await;
    assert_eq!(answered, chain_answer(MAX_SELF_HOPS));

    // A request that says how deep it already is: the last call allowed,
    // and the one past it.
    let counted = |hops: &str| {
        http1()
            .get(host.url("/call?authority=self&path=/hello"))
            .header(SELF_HOPS_HEADER, hops)
    };
    let deepest = (MAX_SELF_HOPS - 1).to_string();
    let answer = counted(&deepest)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(answer, "called 200 Hello, world!\n\n");
    for past in [MAX_SELF_HOPS.to_string().as_str(), "many"] {
        let answer = counted(past).send().await.unwrap().text().await.unwrap();
        assert_eq!(answer, "refused at response: HttpRequestDenied\n", "{past}");
    }
}
