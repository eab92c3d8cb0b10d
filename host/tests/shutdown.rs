//! SIGTERM: stop accepting, finish what is in flight, exit 0.

use crate::common;

use std::time::Duration;

use common::{Host, guest, http1, manifest};

// Multi-threaded: the test blocks while the request runs on another thread.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("slow", &guest("slow"), &["/slow"], &[])]);
    let mut host = Host::start(&manifest);

    let in_flight = tokio::spawn(http1().get(host.url("/slow?ms=1500")).send());
    assert!(
        host.wait_for_log("sleeping 1500 ms", Duration::from_secs(10)),
        "the request never reached the guest:\n{}",
        host.log()
    );
    host.signal("TERM");
    assert!(host.wait_for_log("no new connections", Duration::from_secs(5)));

    // The listener is closed: a new connection is refused.
    let refused = http1().get(host.url("/slow?ms=1")).send().await;
    assert!(refused.is_err(), "a new request was accepted after SIGTERM");

    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight was cut");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slept 1500 ms\n");

    let status = host.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", host.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("slow", &guest("slow"), &["/slow"], &[])]);
    for (first, second) in [("TERM", "TERM"), ("INT", "INT"), ("TERM", "INT")] {
        let mut host = Host::start(&manifest);
        let _in_flight = tokio::spawn(http1().get(host.url("/slow?ms=20000")).send());
        assert!(host.wait_for_log("sleeping 20000 ms", Duration::from_secs(10)));
        host.signal(first);
        assert!(host.wait_for_log("no new connections", Duration::from_secs(5)));
        let start = std::time::Instant::now();
        host.signal(second);
        let status = host.wait_exit(Duration::from_secs(5));
        assert_eq!(
            status.code(),
            Some(1),
            "{first} then {second}:\n{}",
            host.log()
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(host.log().contains("received again; exiting at once"));
    }
}

#[tokio::test]
async fn sigint_with_nothing_in_flight_exits_0_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("slow", &guest("slow"), &["/slow"], &[])]);
    let mut host = Host::start(&manifest);
    host.signal("INT");
    let status = host.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", host.log());
}

/// Sends requests with ids `client-n` until one fails; returns the ids that
/// got a complete 200 and the ids that failed.
async fn keep_sending(url: String, client: usize) -> (Vec<String>, Vec<String>) {
    let http = http1();
    let (mut answered, mut failed) = (Vec::new(), Vec::new());
    for n in 0.. {
        let id = format!("c{client}-r{n}");
        let sent = http.get(&url).header("x-request-id", &id).send().await;
        let complete = match sent {
            Ok(response) if response.status() == 200 => {
                matches!(response.text().await.as_deref(), Ok("slept 50 ms\n"))
            }
            _ => false,
        };
        if complete {
            answered.push(id);
        } else {
            failed.push(id);
            return (answered, failed);
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_answers_every_request_it_accepted() {
    const CLIENTS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("slow", &guest("slow"), &["/slow"], &[])]);
    let mut host = Host::start(&manifest);
    let url = host.url("/slow?ms=50");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(keep_sending(url.clone(), client)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    host.signal("TERM");

    let (mut answered, mut failed) = (Vec::new(), Vec::new());
    for client in clients {
        let (ok, err) = client.await.unwrap();
        answered.extend(ok);
        failed.extend(err);
    }
    let status = host.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", host.log());

    // Every request the guest started (it logs `sleeping` with the request
    // id) got its complete answer; the ones that failed never reached it.
    let log = host.log();
    let started = |id: &str| {
        log.lines()
            .any(|l| l.contains("sleeping 50 ms") && l.contains(&format!("request_id={id} ")))
    };
    assert!(
        answered.len() > CLIENTS,
        "too little load: {} answered",
        answered.len()
    );
    for id in &answered {
        assert!(started(id), "{id} was answered but never started?");
    }
    for id in &failed {
        assert!(
            !started(id),
            "{id} reached the guest but its answer was cut"
        );
    }
    println!(
        "{} requests answered, {} refused after SIGTERM",
        answered.len(),
        failed.len()
    );
}

#[tokio::test]
async fn sigterm_stops_the_host_even_when_nobody_reads_its_output() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("slow", &guest("slow"), &["/slow"], &[])]);
    let mut host = Command::new(common::host_binary());
    let mut child = common::run_on_free_ports(&mut host, &manifest, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("listening on") {
            break;
        }
    }
    // Whoever read the host's output is gone: logging now fails.
    drop(lines);
    drop(child.stderr.take());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the host ignored SIGTERM with its output closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
