//! SIGTERM: stop accepting, finish what is in flight, exit 0.

mod common;

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

#[tokio::test]
async fn sigint_with_nothing_in_flight_exits_0_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &[("slow", &guest("slow"), &["/slow"], &[])]);
    let mut host = Host::start(&manifest);
    host.signal("INT");
    let status = host.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", host.log());
}
