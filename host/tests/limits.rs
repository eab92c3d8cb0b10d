//! Every limit, as a pair: obeyed, then violated. Each violation is answered
//! with its documented status and a body naming the function and the
//! request id, and the function (and the host) keep serving afterwards.

use crate::common;

use std::time::{Duration, Instant};

use common::{Host, guest, http1, manifest, wait_for};

struct Answer {
    status: u16,
    body: String,
    id: String,
    retry_after: Option<String>,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let id = header("x-request-id").unwrap();
    let retry_after = header("retry-after");
    let body = response.text().await.unwrap_or_default();
    Answer {
        status,
        body,
        id,
        retry_after,
    }
}

async fn get(host: &Host, path: &str) -> Answer {
    send(http1().get(host.url(path))).await
}

/// The answer is `status`, and its body says `says`, names `function` and
/// carries the request id.
fn assert_failure(answer: &Answer, status: u16, function: &str, says: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(
        answer.body.contains(&format!("`{function}`")),
        "{}",
        answer.body
    );
    assert!(answer.body.contains(says), "{}", answer.body);
    assert!(answer.body.contains(&answer.id), "{}", answer.body);
}

fn one_function(name: &str, guest_name: &str, settings: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let route = format!("/{name}");
    let manifest = manifest(
        dir.path(),
        &[(name, &guest(guest_name), &[route.as_str()], settings)],
    );
    (Host::start(&manifest), dir)
}

#[tokio::test]
async fn memory_within_the_limit_is_served_and_past_it_is_a_500() {
    let (host, _dir) = one_function("hog", "memory-hog", &["memory = \"32MiB\""]);
    assert_eq!(get(&host, "/hog?mb=8").await.body, "holding 8 MiB\n");

    let answer = get(&host, "/hog?mb=64").await;
    assert_failure(&answer, 500, "hog", "hit its memory limit (32 MiB)");
    let answer = get(&host, "/hog").await;
    assert_failure(&answer, 500, "hog", "hit its memory limit (32 MiB)");

    assert_eq!(get(&host, "/hog?mb=8").await.body, "holding 8 MiB\n");
}

#[tokio::test]
async fn computing_within_the_timeout_is_served_and_an_endless_loop_is_a_504() {
    let (host, _dir) = one_function("spin", "spin", &["timeout = \"500ms\""]);
    assert_eq!(get(&host, "/spin?ms=100").await.body, "spun 100 ms\n");

    let start = Instant::now();
    let answer = get(&host, "/spin?forever").await;
    let took = start.elapsed();
    assert_failure(
        &answer,
        504,
        "spin",
        "did not finish within its timeout (500ms)",
    );
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");

    assert_eq!(get(&host, "/spin?ms=10").await.body, "spun 10 ms\n");
}

/// How many times `pid`'s thread named `name` has slept and woken.
fn thread_wakeups(pid: u32, name: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let task = tasks
        .map(|task| task.unwrap().path())
        .find(|task| std::fs::read_to_string(task.join("comm")).unwrap().trim() == name)
        .unwrap_or_else(|| panic!("no thread named {name}"));
    let status = std::fs::read_to_string(task.join("status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_epoch_sleeps_while_no_guest_runs_and_a_spinning_guest_is_still_stopped() {
    let (host, _dir) = one_function("spin", "spin", &["timeout = \"500ms\""]);
    assert_eq!(get(&host, "/spin?ms=50").await.body, "spun 50 ms\n");
    // With no guest running, the ticker does not wake (it would 1,000 times
    // a second).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = thread_wakeups(host.pid(), "epoch");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let woken = thread_wakeups(host.pid(), "epoch") - before;
    assert!(
        woken <= 2,
        "the epoch thread woke {woken} times in 1 s of quiet"
    );
    // The next guest gets its deadline all the same.
    let answer = get(&host, "/spin?forever").await;
    assert_failure(
        &answer,
        504,
        "spin",
        "did not finish within its timeout (500ms)",
    );
    assert!(thread_wakeups(host.pid(), "epoch") - before > 100);
}

/// A host with one worker thread (pinned to one CPU), one guest computing
/// on it for seconds: another function's answer, made while the guest
/// yields the thread, is sent at once, not held until the guest is done.
/// The other function reuses its instances, so no work after its answer
/// would send it either.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_is_not_held_behind_a_guest_computing_on_the_same_thread() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("spin", &guest("spin"), &["/spin"], &["timeout = \"30s\""]),
            (
                "hello",
                &common::example("hello"),
                &["/hello"],
                &["max_instance_reuse = 1000"],
            ),
        ],
    );
    let host =
        Host::start_with_shell_limits("taskset -cp 0 $$ > /dev/null", &manifest, dir.path(), &[])
            .unwrap();
    assert_eq!(get(&host, "/hello").await.status, 200);
    let spinning = tokio::spawn(send(http1().get(host.url("/spin?ms=5000"))));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let hello = get(&host, "/hello").await;
    let waited = start.elapsed();
    assert_eq!(hello.status, 200);
    // The guest computes for 4.5 s more.
    assert!(
        waited < Duration::from_secs(2),
        "the answer took {waited:?}, held until the guest was done"
    );
    assert_eq!(spinning.await.unwrap().body, "spun 5000 ms\n");
}

#[tokio::test]
async fn a_guest_waiting_past_its_timeout_is_stopped_with_a_504() {
    let (host, _dir) = one_function("slow", "slow", &["timeout = \"300ms\""]);
    assert_eq!(get(&host, "/slow?ms=50").await.body, "slept 50 ms\n");
    let answer = get(&host, "/slow?ms=5000").await;
    assert_failure(
        &answer,
        504,
        "slow",
        "did not finish within its timeout (300ms)",
    );
}

#[tokio::test]
async fn a_spinning_guest_does_not_hold_up_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("spin", &guest("spin"), &["/spin"], &["timeout = \"5s\""]),
            ("slow", &guest("slow"), &["/slow"], &[]),
        ],
    );
    let host = Host::start(&manifest);
    // Compiling is not what this measures: wait for it to end.
    host.wait_compiled().await;
    // More spinners than the host has threads: each must yield in turn.
    let spinners: Vec<_> = (0..4)
        .map(|_| tokio::spawn(send(http1().get(host.url("/spin?forever")))))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    assert_eq!(get(&host, "/slow?ms=1").await.body, "slept 1 ms\n");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    for spinner in spinners {
        assert_eq!(spinner.await.unwrap().status, 504);
    }
}

#[tokio::test]
async fn recursion_within_the_stack_is_served_and_overflow_is_a_500() {
    let (host, _dir) = one_function("recurse", "recurse", &[]);
    assert_eq!(
        get(&host, "/recurse?depth=1000").await.body,
        "reached 1000\n"
    );
    let answer = get(&host, "/recurse?depth=100000000").await;
    assert_failure(
        &answer,
        500,
        "recurse",
        "trapped (wasm trap: call stack exhausted)",
    );
    assert_eq!(get(&host, "/recurse?depth=10").await.body, "reached 10\n");
}

#[tokio::test]
async fn past_max_concurrency_requests_queue_and_past_max_queue_get_503_at_once() {
    let (host, _dir) = one_function(
        "slow",
        "slow",
        &[
            "max_concurrency = 1",
            "max_queue = 1",
            "queue_timeout = \"10s\"",
        ],
    );
    let first = tokio::spawn(send(http1().get(host.url("/slow?ms=1000"))));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = tokio::spawn(send(http1().get(host.url("/slow?ms=1"))));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let refused = get(&host, "/slow?ms=1").await;
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "refused only after {:?}",
        start.elapsed()
    );
    assert_failure(
        &refused,
        503,
        "slow",
        "is overloaded: 1 requests are running and 1 waiting",
    );
    assert_eq!(refused.retry_after.as_deref(), Some("1"));

    assert_eq!(first.await.unwrap().body, "slept 1000 ms\n");
    assert_eq!(
        queued.await.unwrap().body,
        "slept 1 ms\n",
        "the queued request is served"
    );
}

#[tokio::test]
async fn a_request_waiting_past_queue_timeout_gets_503() {
    let (host, _dir) = one_function(
        "slow",
        "slow",
        &["max_concurrency = 1", "queue_timeout = \"200ms\""],
    );
    let busy = tokio::spawn(send(http1().get(host.url("/slow?ms=2000"))));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let refused = get(&host, "/slow?ms=1").await;
    let waited = start.elapsed();
    assert_failure(&refused, 503, "slow", "no place freed up within 200ms");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert!(
        waited >= Duration::from_millis(150),
        "refused after {waited:?}"
    );
    assert_eq!(busy.await.unwrap().status, 200);
}

fn chunked(len: usize) -> reqwest::Body {
    let chunks = (0..len)
        .step_by(256)
        .map(move |start| Ok::<_, std::io::Error>(vec![b'{'; (len - start).min(256)]));
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn bodies_within_max_body_are_served_and_larger_ones_get_413_even_chunked() {
    let (host, _dir) = one_function("sum", "json-sum", &["max_body = \"1KiB\""]);
    let url = host.url("/sum");
    let small = r#"{"numbers": [1, 2, 3]}"#;
    let answer = send(http1().post(&url).body(small)).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, r#"{"sum":6,"count":3}"#)
    );

    // Declared too large: refused before the function runs.
    let answer = send(http1().post(&url).body(vec![b' '; 2048])).await;
    assert_failure(
        &answer,
        413,
        "sum",
        "larger than function `sum` accepts (1 KiB)",
    );

    // Chunked, no length: refused when the limit is crossed.
    let answer = send(http1().post(&url).body(chunked(4096))).await;
    assert_failure(
        &answer,
        413,
        "sum",
        "larger than function `sum` accepts (1 KiB)",
    );
    let answer = send(http1().post(&url).body(chunked(512))).await;
    assert_eq!(
        answer.status, 400,
        "a chunked body under the limit reaches the function"
    );

    let answer = send(http1().post(&url).body(small)).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_slow_body_reader_is_served_within_its_timeout_and_stopped_past_it() {
    let (host, _dir) = one_function("reader", "slow-reader", &["timeout = \"1s\""]);
    let url = host.url("/reader?pause_ms=10");
    let answer = send(http1().post(&url).body(vec![b'x'; 10 * 1024])).await;
    assert_eq!(answer.body, "read 10240 bytes\n");
    let answer = send(http1().post(&url).body(vec![b'x'; 400 * 1024])).await;
    assert_failure(
        &answer,
        504,
        "reader",
        "did not finish within its timeout (1s)",
    );
}

#[tokio::test]
async fn a_slow_body_writer_is_served_within_its_timeout_and_cut_past_it() {
    let (host, _dir) = one_function("writer", "slow-writer", &["timeout = \"1s\""]);
    let answer = get(&host, "/writer?chunks=3&pause_ms=50").await;
    assert_eq!(answer.body.lines().count(), 3, "{}", answer.body);

    // The head is sent before the timeout; the body cannot end cleanly.
    let response = http1()
        .get(host.url("/writer?chunks=100&pause_ms=50"))
        .send()
        .await;
    if let Ok(response) = response {
        assert!(
            response.bytes().await.is_err(),
            "a body cut at the timeout read as complete"
        );
    }
    let line = host.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("the response body broke off") && l.contains("ran past its timeout of 1s")
    });
    assert!(line.is_some(), "{}", host.log());
}

#[tokio::test]
async fn a_huge_response_streams_with_bounded_memory_and_an_abandoned_one_is_stopped() {
    let (host, _dir) = one_function("huge", "huge-response", &["timeout = \"60s\""]);
    get(&host, "/huge?mb=1").await;
    let rss_before = host.memory_kib("VmRSS");

    use futures::StreamExt;
    let response = http1().get(host.url("/huge?mb=256")).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, 256 << 20);
    let growth_mib = host.memory_kib("VmHWM").saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 40,
        "peak RSS grew by {growth_mib} MiB for a 256 MiB response"
    );

    // A client that stops reading: the host must not buffer the rest.
    let response = http1().get(host.url("/huge?mb=1024")).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let _ = stream.next().await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let growth_mib = host.memory_kib("VmHWM").saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 40,
        "peak RSS grew by {growth_mib} MiB for an abandoned response"
    );
    assert_eq!(get(&host, "/huge?mb=1").await.status, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_no_instance_past_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            (
                "huge",
                &guest("huge-response"),
                &["/huge"],
                &["timeout = \"1s\""],
            ),
            ("slow", &guest("slow"), &["/slow"], &[]),
        ],
    );
    // One instance in the whole host: while a guest holds it, no other
    // request runs.
    let host = Host::start_with(&manifest, dir.path(), &["--max-instances", "1"], &[]).unwrap();
    assert_eq!(get(&host, "/slow?ms=1").await.status, 200);

    // A client asks for 1 GiB, reads the head, then neither reads nor
    // closes: the guest blocks on a full socket.
    let silent = host.stop_reading_after_the_head("/huge?mb=1024");

    // Its timeout stops the guest all the same, and the instance is free
    // for another function while the socket stays open.
    let start = Instant::now();
    let answer = get(&host, "/slow?ms=1").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    drop(silent);
}

/// A host serving `slow` (and `hello` beside it) with extra `host run` flags.
fn host_with(args: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("slow", &guest("slow"), &["/slow"], &[]),
            ("other", &guest("slow"), &["/other"], &[]),
        ],
    );
    let host = Host::start_with(&manifest, dir.path(), args, &[]).unwrap();
    (host, dir)
}

fn raw_request(stream: &mut std::net::TcpStream, path: &str) -> String {
    use std::io::{Read, Write};
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test]
async fn past_max_connections_a_new_connection_waits_for_one_to_close() {
    use std::net::TcpStream;
    let (host, _dir) = host_with(&["--max-connections", "2"]);
    let first = TcpStream::connect(host.addr).unwrap();
    let second = TcpStream::connect(host.addr).unwrap();
    // Both open: a third is accepted by the kernel, not served.
    let addr = host.addr;
    let third = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        let answer = raw_request(&mut stream, "/slow?ms=1");
        (answer, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !third.is_finished(),
        "a third connection was served past the limit"
    );
    drop(first);
    let (answer, waited) = third.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= Duration::from_millis(400),
        "served after {waited:?}"
    );
    drop(second);

    // Within the limit, connections are served at once.
    let mut stream = TcpStream::connect(host.addr).unwrap();
    assert!(raw_request(&mut stream, "/slow?ms=1").starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let (host, _dir) = host_with(&["--header-read-timeout", "500ms"]);
    // In time: served.
    let mut stream = std::net::TcpStream::connect(host.addr).unwrap();
    assert!(raw_request(&mut stream, "/slow?ms=1").starts_with("HTTP/1.1 200"));

    // Half a request head, then nothing: cut off after the timeout.
    let mut stream = std::net::TcpStream::connect(host.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn headers_within_max_header_size_are_served_and_larger_ones_get_431() {
    let (host, _dir) = host_with(&["--max-header-size", "16KiB"]);
    let answer = send(
        http1()
            .get(host.url("/slow?ms=1"))
            .header("x-big", "a".repeat(4000)),
    )
    .await;
    assert_eq!(answer.status, 200);
    let response = http1()
        .get(host.url("/slow?ms=1"))
        .header("x-big", "a".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 431);
}

#[tokio::test]
async fn past_max_instances_requests_wait_for_an_instance() {
    // Three requests of 1.5 s each, to two functions, all at once.
    let all_three = |host: &Host| {
        let requests = [
            http1().get(host.url("/slow?ms=1500")),
            http1().get(host.url("/other?ms=1500")),
            http1().get(host.url("/other?ms=1500")),
        ];
        let warm_up = [
            http1().get(host.url("/slow?ms=1")),
            http1().get(host.url("/other?ms=1")),
        ];
        async move {
            // Compiled and warm first, so that only the 1.5 s requests are
            // timed (and none waits out the queue timeout behind a compile).
            for request in warm_up {
                assert_eq!(send(request).await.status, 200);
            }
            let start = Instant::now();
            let answers = futures::future::join_all(requests.map(send)).await;
            let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
            for answer in answers.iter().filter(|a| a.status != 200) {
                println!("{}: {}", answer.status, answer.body);
            }
            (statuses, start.elapsed())
        }
    };
    // Two instances at once: one request waits for another to finish.
    let (host, _dir) = host_with(&["--max-instances", "2"]);
    let (statuses, took) = all_three(&host).await;
    assert_eq!(statuses, [200, 200, 200]);
    assert!(
        took >= Duration::from_millis(2900),
        "all three ran at once: {took:?}"
    );

    // Three instances: all three run at once.
    let (host, _dir) = host_with(&["--max-instances", "3"]);
    let (statuses, took) = all_three(&host).await;
    assert_eq!(statuses, [200, 200, 200]);
    assert!(took < Duration::from_millis(2500), "one waited: {took:?}");
}

/// Idle instances of a function that reuses them hold slots of the instance
/// pool without a request. They are counted apart from the instances of
/// admitted requests, so that another function's requests still find the
/// slots they were admitted for, rather than a 503.
#[tokio::test]
async fn idle_reused_instances_leave_the_slots_of_admitted_requests_free() {
    let dir = tempfile::tempdir().unwrap();
    let slow = guest("slow");
    let reuse: &[&str] = &["max_instance_reuse = 100"];
    let manifest = manifest(
        dir.path(),
        &[("a", &slow, &["/a"], reuse), ("b", &slow, &["/b"], reuse)],
    );
    let host = Host::start_with(&manifest, dir.path(), &["--max-instances", "4"], &[]).unwrap();
    let at_once = |path: &'static str| {
        let requests: Vec<_> = (0..4)
            .map(|_| send(http1().get(host.url(path)).timeout(Duration::from_secs(20))))
            .collect();
        async move {
            let answers = futures::future::join_all(requests).await;
            for answer in answers.iter().filter(|a| a.status != 200) {
                println!("{}: {}", answer.status, answer.body);
            }
            answers.iter().map(|a| a.status).collect::<Vec<u16>>()
        }
    };
    // Four at once to `a`: four instances; the ones the host keeps idle
    // are back in the pool soon after the answers.
    assert_eq!(at_once("/a?ms=300").await, [200; 4]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(host.function("a").await["idle_instances"].as_u64().unwrap() > 0);
    // Four at once to `b`, which has no instance yet: each is admitted, and
    // each needs a slot.
    assert_eq!(at_once("/b?ms=300").await, [200; 4]);
    // And `a` is served again.
    assert_eq!(at_once("/a?ms=1").await, [200; 4]);
}

/// With a single instance in all, a function that reuses instances still
/// keeps its instance between requests.
#[tokio::test]
async fn instance_reuse_works_with_one_instance_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[(
            "counter",
            &guest("counter"),
            &["/counter"],
            &["max_instance_reuse = 3"],
        )],
    );
    let host = Host::start_with(&manifest, dir.path(), &["--max-instances", "1"], &[]).unwrap();
    let mut counts = Vec::new();
    for _ in 0..4 {
        let answer = get(&host, "/counter").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let count: u32 = answer.body.trim().parse().unwrap();
        counts.push(count);
        // The client can read the answer just before the instance is back.
        let idle = u64::from(count < 3);
        wait_for(
            &host,
            "counter",
            "idle_instances",
            idle,
            Duration::from_secs(5),
        )
        .await;
        // The host counts it too.
        assert_eq!(host.metrics().await["shoal_idle_instances"], idle as f64);
    }
    assert_eq!(counts, [1, 2, 3, 1]);
}

/// A guest that works on after its answer is still running: it keeps its
/// place through the function's gate until it ends, so `max_concurrency`
/// bounds the guests that run, not only the requests not yet answered.
#[tokio::test]
async fn a_guest_working_after_its_answer_keeps_its_place_until_it_ends() {
    let (host, _dir) = one_function(
        "after",
        "after-answer",
        &["max_concurrency = 1", "max_queue = 0"],
    );
    let first = get(&host, "/after?ms=2000").await;
    assert_eq!((first.status, first.body.as_str()), (200, "answered\n"));
    // Answered, but its guest works on for 2 s: no place for another.
    let refused = get(&host, "/after?ms=1").await;
    assert_failure(
        &refused,
        503,
        "after",
        "is overloaded: 1 requests are running",
    );
    assert!(
        host.wait_for_log("finished 2000 ms after the answer", Duration::from_secs(10)),
        "{}",
        host.log()
    );
    // Once it has ended, the place is free.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let next = get(&host, "/after?ms=1").await;
        if next.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", next.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
