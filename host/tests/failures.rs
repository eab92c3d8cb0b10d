//! A failing function gets a clear answer, and the host and every other
//! function keep serving.

use crate::common;

use std::time::Duration;

use common::{Host, example, guest, http1, manifest};

fn failing_host() -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("trap", &guest("trap"), &["/trap"], &[]),
            (
                "trap-mid-body",
                &guest("trap-mid-body"),
                &["/trap-mid-body"],
                &[],
            ),
            ("no-response", &guest("no-response"), &["/no-response"], &[]),
            ("error-code", &guest("error-code"), &["/error-code"], &[]),
            ("status", &guest("status"), &["/status"], &[]),
            ("hello", &example("hello"), &["/hello"], &[]),
        ],
    );
    (Host::start(&manifest), dir)
}

async fn assert_hello_works(host: &Host) {
    let response = http1().get(host.url("/hello")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
}

#[tokio::test]
async fn a_trap_is_answered_500_and_everything_keeps_serving() {
    let (host, _dir) = failing_host();
    let client = http1();
    for _ in 0..3 {
        let response = client.get(host.url("/trap")).send().await.unwrap();
        assert_eq!(response.status(), 500);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.text().await.unwrap();
        assert!(body.contains("function `trap` trapped"), "{body}");
        assert!(body.contains(&id), "{body}");
        assert!(
            !body.contains("boom"),
            "the trap's details belong in the log: {body}"
        );
        // The whole trap, with its message, is in the log under the id.
        let line = host
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(&id) && l.contains("the function trapped")
            })
            .unwrap_or_else(|| panic!("no trap logged for {id}:\n{}", host.log()));
        assert!(line.contains("function=trap"), "{line}");
        let log = host.log();
        assert!(
            log.contains("wasm `unreachable` instruction executed"),
            "{log}"
        );
        assert!(log.contains("boom: this function always panics"), "{log}");
        assert_hello_works(&host).await;
    }
}

#[tokio::test]
async fn a_trap_after_the_head_cuts_the_body_instead_of_ending_it() {
    let (host, _dir) = failing_host();
    // The head may or may not reach the client before the connection is
    // cut; either way the response must not read as complete.
    if let Ok(response) = http1().get(host.url("/trap-mid-body")).send().await {
        assert_eq!(response.status(), 200);
        assert!(
            response.bytes().await.is_err(),
            "a body cut by a trap must not read as complete"
        );
    }
    let broke_off = host.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("the response body broke off") && line.contains("function=trap-mid-body")
    });
    assert!(broke_off.is_some(), "{}", host.log());
    assert_hello_works(&host).await;
}

#[tokio::test]
async fn an_error_code_or_no_response_is_answered_502() {
    let (host, _dir) = failing_host();
    let client = http1();

    let response = client.get(host.url("/error-code")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("function `error-code` returned an error"),
        "{body}"
    );
    assert!(body.contains("the backend is unavailable"), "{body}");

    let response = client.get(host.url("/no-response")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("function `no-response` returned without sending a response"),
        "{body}"
    );

    assert_hello_works(&host).await;
}

/// Sends `head` as is on a new connection and reads the whole answer.
fn raw(host: &Host, head: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test]
async fn a_missing_duplicate_or_invalid_host_is_answered_400() {
    let (host, _dir) = failing_host();
    // HTTP/1.1 requires Host (RFC 9112); HTTP/1.0 does not.
    let answer = raw(&host, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("no Host header"), "{answer}");
    let answer = raw(&host, "GET /hello HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("Hello, world!\n"), "{answer}");

    let answer = raw(
        &host,
        "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("more than one Host header"), "{answer}");
    for bad in ["a b", "user@example.com", "example.com:port"] {
        let answer = raw(
            &host,
            &format!("GET /hello HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
        assert!(answer.contains("not a valid host"), "{bad}: {answer}");
    }
    let answer = raw(
        &host,
        "GET /hello HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn only_a_final_status_from_the_function_reaches_the_client() {
    let (host, _dir) = failing_host();
    for code in [200, 204, 404, 599] {
        assert_eq!(host.get(&format!("/status?code={code}")).await.0, code);
    }
    // A 1xx is no final answer (a 101 would switch the connection's
    // protocol), and 600 and above are no status at all.
    for code in [100, 101, 103, 600, 999] {
        let (status, body) = host.get(&format!("/status?code={code}")).await;
        assert_eq!(status, 502, "{code}");
        assert!(
            body.contains(&format!(
                "answered with status {code}, which is not a final response"
            )),
            "{body}"
        );
    }
    assert_hello_works(&host).await;
}
